"""Tests of the crossbar cost model (DESIGN.md 2): hand-computed small nets, properties, validation, shapes, CLI.

The hand computations below write out DESIGN.md 2.2-2.3 with the numbers of each net; the property tests compare
the model against a naive loop implementation of the same formulas and check the orderings the issue requires.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from basisn import to_basisn
from basisn.hardware import (
    PRESETS,
    BasisSpec,
    HardwareConfig,
    LayerShape,
    NetworkShapes,
    evaluate,
    floor_cycles,
    layer_shapes,
    load_shapes,
    preset,
    ratios,
    save_shapes,
    sweep,
    total_tiles,
)
from basisn.hardware.report import hw_eval_main

# A small crossbar so that every number below is checkable by hand: R = C = 16, 4-bit weights on 2-bit cells
# (slices 2, cpw 4), 4-bit inputs through 2-bit DACs (T_in 2), 3 cycles per write+verify iteration (25 ns / 10 ns
# rounded up), N_wv 2 (6 cycles per programmed row), 4 digital lanes. Energies are distinct round numbers.
SMALL = HardwareConfig(
    rows=16,
    cols=16,
    cell_bits=2,
    weight_bits=4,
    input_bits=4,
    dac_bits=2,
    t_cycle=10e-9,
    verify_iters=2,
    t_write_iter=25e-9,
    digital_lanes=4,
    e_xbar_step=3.0,
    e_adc=0.5,
    e_shift_add=0.25,
    e_coef_mac=0.125,
    e_write_iter=2.0,
)
E_STEP = 3.0 + 16 * 0.5 + 16 * 0.25  # e_xbar_step + C·e_adc + C·e_shift_add = 15
ROW_PROG = 2 * 3  # N_wv · ceil(t_write_iter / t_cycle)
T_IN = 2
BASIS = BasisSpec(n_basis=8, segment_len=16, groups=1)  # X = ceil(8·4/16) = 2 crossbars per copy


class Head(nn.Module):
    """conv -> flatten -> linear: the two-layer net of the round-straddling test."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


def with_mapped(s: LayerShape, mapped: bool | None) -> LayerShape:
    return LayerShape(s.name, s.kind, s.P, s.g, s.L, s.O, mapped)


def one_conv() -> NetworkShapes:
    return layer_shapes(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), (3, 6, 6), name="one_conv")


def one_linear() -> NetworkShapes:
    return layer_shapes(nn.Sequential(nn.Linear(40, 10)), (40,), name="one_linear")


def two_layer() -> NetworkShapes:
    return layer_shapes(Head(), (3, 4, 4), name="two_layer")


# ----------------------------------------------------------------------------------------------------------------
# Hand computations.
# ----------------------------------------------------------------------------------------------------------------
def test_shapes_of_the_small_nets():
    (conv,) = one_conv().layers
    assert (conv.kind, conv.P, conv.g, conv.L, conv.O) == ("conv", 36, 1, 27, 8)
    (lin,) = one_linear().layers
    assert (lin.kind, lin.P, lin.g, lin.L, lin.O) == ("linear", 1, 1, 40, 10)
    conv, lin = two_layer().layers
    assert (conv.P, conv.L, conv.O, lin.P, lin.L, lin.O) == (16, 27, 8, 1, 128, 4)


def test_one_conv_by_hand():
    net = one_conv()
    # tiles: ceil(27/16) = 2 row blocks (16 and 11 rows) x ceil(8·4/16) = 2 column blocks = 4 tiles
    assert total_tiles(net, SMALL) == 4
    ideal = evaluate(net, SMALL, "ideal", 2)
    assert ideal["cycles"] == 36 * T_IN  # B·P·T_in
    steps = 36 * 4 * T_IN  # P·t·T_in
    assert ideal["energy_j"] == pytest.approx(steps * E_STEP)
    assert ideal["program_once_cycles"] == 16 * ROW_PROG
    assert ideal["program_once_energy_j"] == pytest.approx(27 * 8 * 4 * 2 * 2.0)  # cells·N_wv·e_write_iter

    # N = 2: rounds [16, 16] [11, 11] -> (16 + 11)·6 programming + 2 rounds · 36 · 2 compute
    rep = evaluate(net, SMALL, "reprogram", 2)
    assert rep["cycles"] == (16 + 11) * ROW_PROG + 2 * 36 * T_IN == 306
    assert rep["energy_write_j"] == pytest.approx(27 * 8 * 4 * 2 * 2.0)  # every cell rewritten every batch
    assert rep["energy_j"] == pytest.approx(steps * E_STEP + 27 * 8 * 4 * 2 * 2.0)
    assert rep["latency_s"] == pytest.approx(306 * 10e-9)
    assert rep["edp_js"] == pytest.approx(rep["energy_j"] * rep["latency_s"])
    assert rep["floor_cycles"] == math.ceil(36 * 27 * 8 * 4 / (2 * 16 * 16)) * T_IN == 122
    # N = 1: four rounds, (16+16+11+11)·6 + 4·72 = 612
    assert evaluate(net, SMALL, "reprogram", 1)["cycles"] == 612
    # N = 4: everything fits, written once: the ideal mapping
    assert evaluate(net, SMALL, "reprogram", 4)["cycles"] == ideal["cycles"]

    # basisn, N = 4: K = 2 copies of X = 2 crossbars; s = P·g·ceil(27/16) = 72 segments
    bas = evaluate(net, SMALL, "basisn", 4, basis=BASIS)
    reads = math.ceil(72 / 2) * T_IN  # 72
    digital = math.ceil(72 * 8 * 8 / (4 * 4))  # s·O·n / (crossbars in use · lanes) = 288
    assert bas["cycles"] == max(reads, digital) == 288
    assert bas.layers.loc[0, "bound"] == "digital"
    assert bas["energy_j"] == pytest.approx(72 * 2 * T_IN * E_STEP + 72 * 8 * 8 * 0.125)
    assert bas["energy_write_j"] == 0
    assert bas["program_once_cycles"] == 16 * ROW_PROG
    assert bas["program_once_energy_j"] == pytest.approx(2 * 16 * 8 * 4 * 2 * 2.0)  # K·m·n·cpw cells


def test_one_linear_by_hand_with_a_batch():
    net = one_linear()
    # 3 row blocks (16, 16, 8 rows) x 3 column blocks (40 columns) = 9 tiles, rows 16x6 then 8x3
    assert total_tiles(net, SMALL) == 9
    assert evaluate(net, SMALL, "ideal", 4, batch=3)["cycles"] == 1 * T_IN  # per inference: B·P·T_in / B
    # N = 4, B = 3: rounds [16 16 16 16] [16 16 8 8] [8] -> (16+16+8)·6 + 3 rounds · 3·1·2, per inference / 3
    rep = evaluate(net, SMALL, "reprogram", 4, batch=3)
    assert rep["cycles_per_batch"] == 40 * ROW_PROG + 3 * 3 * T_IN == 258
    assert rep["cycles"] == pytest.approx(258 / 3)
    assert rep["energy_write_j"] == pytest.approx(40 * 10 * 4 * 2 * 2.0 / 3)  # writes shared by the batch
    # basisn N = 4, B = 3: s = 3·ceil(40/16) = 9; reads ceil(9/2)·2 = 10; digital ceil(9·10·8/16) = 45
    bas = evaluate(net, SMALL, "basisn", 4, batch=3, basis=BASIS)
    assert bas["cycles_per_batch"] == 45
    assert bas["cycles"] == pytest.approx(15)
    assert bas["energy_j"] == pytest.approx((9 * 2 * T_IN * E_STEP + 9 * 10 * 8 * 0.125) / 3)


def test_two_layers_straddling_a_round():
    net = two_layer()
    # conv: 4 tiles (rows 16 16 11 11); linear: 8 row blocks x 1 column block = 8 tiles of 16 rows
    assert total_tiles(net, SMALL) == 12
    # N = 6: round 1 holds the conv's 4 tiles and the linear's first 2, round 2 the other 6
    rep = evaluate(net, SMALL, "reprogram", 6)
    program = (16 + 16) * ROW_PROG
    compute = 1 * 16 * T_IN + 2 * 1 * T_IN  # rounds_conv·P_conv·T_in + rounds_lin·P_lin·T_in
    assert rep["cycles"] == program + compute == 228
    assert rep["crossbars_used"] == 6
    assert list(rep.layers["rounds"]) == [1, 2]
    assert rep.layers["cycles"].sum() == pytest.approx(228)
    # N = 5: the greedy rounds [conv 4 + lin 1] [lin 5] [lin 2] cost 3·16·6 + 32 + 3·2 = 326, but a chip with 5
    # crossbars can use 4: [conv 4] [lin 4] [lin 4] costs 3·16·6 + 32 + 2·2 = 324 (docs/hardware.md)
    rep5 = evaluate(net, SMALL, "reprogram", 5)
    assert rep5["cycles"] == 324
    assert rep5["crossbars_used"] == 4
    # basisn N = 6: K = 3, 6 crossbars in use; conv s = 32, linear s = 8
    bas = evaluate(net, SMALL, "basisn", 6, basis=BASIS)
    conv = max(math.ceil(32 / 3) * T_IN, math.ceil(32 * 8 * 8 / (6 * 4)))  # max(22, 86)
    lin = max(math.ceil(8 / 3) * T_IN, math.ceil(8 * 4 * 8 / (6 * 4)))  # max(6, 11)
    assert bas["cycles"] == conv + lin == 97
    assert list(bas.layers["reads"]) == [22, 6]


def test_group_sparse_by_hand():
    net = one_conv()
    grouped = BasisSpec(n_basis=8, segment_len=16, groups=2)  # a group: 4 vectors x 4 columns = 1 crossbar
    bas = evaluate(net, SMALL, "basisn", 4, basis=grouped)
    # X_g = 1, K_g = floor(4 / (2·1)) = 2: 4 segments in parallel on 4 crossbars; a = n/G = 4 MACs per output
    assert bas["layout"] == "grouped"
    assert bas["copies"] == 4
    reads = math.ceil(72 / 4) * T_IN  # 36
    digital = math.ceil(72 * 8 * 4 / (4 * 4))  # 144
    assert bas["cycles"] == max(reads, digital) == 144
    assert bas["energy_j"] == pytest.approx(72 * 1 * T_IN * E_STEP + 72 * 8 * 4 * 0.125)


def test_group_smaller_than_a_crossbar_falls_back_to_the_dense_layout():
    # n = 4, G = 4: a group (1 vector, 4 columns) wastes a crossbar; one copy of the whole basis fits in 1
    net = one_conv()
    dense = evaluate(net, SMALL, "basisn", 3, basis=BasisSpec(4, 16, 1))
    grouped = evaluate(net, SMALL, "basisn", 3, basis=BasisSpec(4, 16, 4))  # grouped layout would need 4
    assert grouped["layout"] == "dense"
    assert grouped["reads_cycles"] == dense["reads_cycles"]
    assert grouped["digital_cycles"] <= dense["digital_cycles"]  # still n/G MACs per output


def test_layers_kept_dense_take_crossbars_from_n():
    net = two_layer()
    conv, lin = net.layers
    mixed = NetworkShapes("mixed", net.input_size, (with_mapped(conv, True), with_mapped(lin, False)), BASIS)
    with pytest.raises(ValueError, match="n_crossbars=9 .* use n_crossbars >= 10"):
        evaluate(mixed, SMALL, "basisn", 9)
    bas = evaluate(mixed, SMALL, "basisn", 12)  # 8 dense tiles + 2 copies of the basis
    assert bas["dense_crossbars"] == 8 and bas["copies"] == 2
    conv_cycles = max(math.ceil(32 / 2) * T_IN, math.ceil(32 * 8 * 8 / (4 * 4)))
    assert bas["cycles"] == conv_cycles + 1 * T_IN  # the dense linear runs like the ideal mapping


# ----------------------------------------------------------------------------------------------------------------
# Properties, against a naive implementation of DESIGN.md 2.2.
# ----------------------------------------------------------------------------------------------------------------
def naive_reprogram(net: NetworkShapes, cfg: HardwareConfig, n: int, batch: int) -> int:
    """Per-batch cycles: greedy layer-order rounds of exactly n tiles, written out with loops."""
    rows, owner = [], []
    for i, s in enumerate(net.layers):
        for _ in range(s.g):
            for rb in range(math.ceil(s.L / cfg.rows)):
                for _ in range(math.ceil(s.O * cfg.cols_per_weight / cfg.cols)):
                    rows.append(min(cfg.rows, s.L - rb * cfg.rows))
                    owner.append(i)
    program, compute = 0, 0
    for start in range(0, len(rows), n):
        program += max(rows[start : start + n]) * cfg.row_program_cycles
    for i, s in enumerate(net.layers):
        rounds = {k // n for k, o in enumerate(owner) if o == i}
        compute += len(rounds) * batch * s.P * cfg.input_steps
    return program + compute


layer_strategy = st.builds(
    lambda kind, P, g, L, O: LayerShape("l", kind, 1 if kind == "linear" else P, 1 if kind == "linear" else g, L, O),
    st.sampled_from(["conv", "linear"]),
    st.integers(1, 12),
    st.integers(1, 2),
    st.integers(1, 50),
    st.integers(1, 24),
)
net_strategy = st.lists(layer_strategy, min_size=1, max_size=4).map(lambda ls: NetworkShapes("h", (1,), tuple(ls)))
config_strategy = st.builds(
    lambda rows, cols, cell, weight, t_ratio, n_wv, lanes: SMALL.replace(
        rows=rows,
        cols=cols,
        cell_bits=cell,
        weight_bits=weight,
        t_write_iter=t_ratio * SMALL.t_cycle,
        verify_iters=n_wv,
        digital_lanes=lanes,
    ),
    st.sampled_from([8, 16, 32]),
    st.sampled_from([16, 32]),
    st.sampled_from([1, 2]),
    st.sampled_from([2, 4]),
    st.sampled_from([0.5, 1, 3, 10]),
    st.integers(1, 20),
    st.sampled_from([1, 4, 16]),
)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(net_strategy, config_strategy, st.integers(1, 3))
def test_reprogram_properties(net, cfg, batch):
    tiles = total_tiles(net, cfg)
    ideal = evaluate(net, cfg, "ideal", 1, batch)
    exact = min(tiles - 1, 40)  # compared with the naive schedule for N <= 40 (it is slow)
    naive = [math.inf] + [naive_reprogram(net, cfg, k, batch) for k in range(1, exact + 1)]
    counts = sorted({*range(1, 48), tiles - 2, tiles - 1, tiles, tiles + 1, 2 * tiles} - {-1, 0})
    previous = math.inf
    for n in counts:
        rep = evaluate(net, cfg, "reprogram", n, batch)
        assert ideal["cycles"] <= rep["cycles"]  # ideal <= reprogram for every N
        assert rep["cycles"] <= previous  # never increases with N
        assert rep["cycles"] >= rep["floor_cycles"]  # no weight-stationary mapping beats floor(N)
        if n >= tiles:  # everything fits: the ideal mapping, writes are one-time
            assert rep["cycles"] == ideal["cycles"]
            assert rep["energy_j"] == pytest.approx(ideal["energy_j"])
        elif n <= exact:  # exactly the best layer-order greedy schedule on N' <= N crossbars
            assert rep["cycles_per_batch"] == min(naive[1 : n + 1])
        previous = rep["cycles"]


@PROPERTY
@given(net_strategy, config_strategy, st.sampled_from([1, 2, 4, 8]), st.integers(1, 3))
def test_basisn_properties(net, cfg, n_basis, batch):
    m = min(cfg.rows, 16)
    n_basis = min(n_basis, m)
    x = math.ceil(n_basis * cfg.cols_per_weight / cfg.cols)
    previous = math.inf
    for n in range(x, x + 24):
        dense = evaluate(net, cfg, "basisn", n, batch, BasisSpec(n_basis, m, 1))
        assert dense["cycles"] <= previous  # never increases with N
        previous = dense["cycles"]
        for groups in [g for g in (2, 4, 8) if n_basis % g == 0]:
            grouped = evaluate(net, cfg, "basisn", n, batch, BasisSpec(n_basis, m, groups))
            assert grouped["reads_cycles"] <= dense["reads_cycles"]  # group-sparse never reads more
            assert (grouped.layers["reads"] <= dense.layers["reads"]).all()


def test_basisn_cycles_never_increase_with_n_on_a_real_network():
    net = layer_shapes(Head(), (3, 4, 4))
    cfg = preset("default")
    values = [evaluate(net, cfg, "basisn", n, basis=BasisSpec(64, 128, 4))["cycles"] for n in range(4, 80)]
    assert all(a >= b for a, b in zip(values, values[1:]))


# ----------------------------------------------------------------------------------------------------------------
# Validation.
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"rows": 0}, r"rows=0 is not allowed; use an integer >= 1"),
        ({"cols": True}, r"cols=True is not allowed"),
        ({"verify_iters": 2.5}, r"verify_iters=2.5 is not allowed"),
        ({"t_cycle": -1e-9}, r"t_cycle=-1e-09 is not allowed; use a finite time"),
        ({"t_write_iter": float("inf")}, r"t_write_iter=inf is not allowed"),
        ({"e_adc": float("nan")}, r"e_adc=nan is not allowed; use a finite energy"),
        ({"e_write_iter": -1.0}, r"e_write_iter=-1.0 is not allowed"),
        ({"cell_bits": 16}, r"cell_bits=16 is not allowed; use at most weight_bits=8"),
        ({"dac_bits": 9}, r"dac_bits=9 is not allowed; use at most input_bits=8"),
        ({"cols": 4}, r"cols=4 is not allowed; a signed weight needs cols_per_weight=8"),
        ({"colour": 1}, r"hardware field 'colour' is unknown; allowed: rows, cols"),
    ],
)
def test_invalid_configurations_name_the_field(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        preset("default").replace(**changes)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["rows", "cols", "cell_bits", "weight_bits", "input_bits", "dac_bits", "verify_iters"]),
    st.one_of(st.integers(-1000, 0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3)),
)
def test_any_bad_integer_field_is_named_with_its_value(field, value):
    with pytest.raises(ValueError) as info:
        SMALL.replace(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field}={value!r} is not allowed") and "integer >= 1" in message
    assert "\n" not in message


def test_invalid_inputs_raise_clear_errors():
    net = one_conv()
    with pytest.raises(ValueError, match=r"hardware preset 'slow' is unknown; allowed: default, fast_write"):
        preset("slow")
    with pytest.raises(ValueError, match=r"groups=3 is not allowed; use a divisor of n_basis=8"):
        BasisSpec(8, 16, 3)
    with pytest.raises(ValueError, match=r"n_basis=32 is not allowed; use at most segment_len=16"):
        BasisSpec(32, 16, 1)
    with pytest.raises(ValueError, match=r"segment_len=32 is not allowed; use at most the crossbar rows R=16"):
        evaluate(net, SMALL, "basisn", 8, basis=BasisSpec(8, 32, 1))
    with pytest.raises(ValueError, match=r"n_crossbars=1 is not allowed for basisn: one basis copy needs 2"):
        evaluate(net, SMALL, "basisn", 1, basis=BASIS)
    with pytest.raises(ValueError, match=r"scheme='dense' is not allowed; allowed: ideal, reprogram, basisn"):
        evaluate(net, SMALL, "dense", 4)
    with pytest.raises(ValueError, match=r"n_crossbars=0 is not allowed"):
        evaluate(net, SMALL, "reprogram", 0)
    with pytest.raises(ValueError, match=r"batch=0 is not allowed"):
        evaluate(net, SMALL, "ideal", 4, batch=0)
    with pytest.raises(ValueError, match=r"basis key 'n' is unknown"):
        evaluate(net, SMALL, "basisn", 4, basis={"n": 8})
    with pytest.raises(ValueError, match=r"P=0 is not allowed \(layer 'x'\)"):
        LayerShape("x", "conv", 0, 1, 1, 1)
    with pytest.raises(ValueError, match=r"kind='pool' is not allowed"):
        LayerShape("x", "pool", 1, 1, 1, 1)


def test_presets_are_valid_and_favour_cheap_writes():
    assert {"default", "fast_write", "design_prototype"} <= set(PRESETS)
    default, fast = PRESETS["default"], PRESETS["fast_write"]
    assert fast.row_program_cycles < default.row_program_cycles
    assert fast.e_write_iter < default.e_write_iter
    assert HardwareConfig(t_cycle=100e-9, t_write_iter=200e-9).write_iter_cycles == 2  # not 3 from float noise


# ----------------------------------------------------------------------------------------------------------------
# Shapes.
# ----------------------------------------------------------------------------------------------------------------
def test_layer_shapes_of_torchvision_networks():
    from torchvision.models import densenet121, resnet18, resnet50

    with torch.device("meta"):
        r18, r50, d121 = resnet18(), resnet50(), densenet121()
    s18 = layer_shapes(r18, 224)
    assert len(s18) == 21  # 20 convolutions + fc
    first, last = s18.layers[0], s18.layers[-1]
    assert (first.P, first.L, first.O) == (112 * 112, 3 * 7 * 7, 64)
    assert (last.kind, last.P, last.L, last.O) == ("linear", 1, 512, 1000)
    assert s18.weights == sum(p.numel() for n, p in r18.named_parameters() if n.endswith("weight") and p.dim() > 1)
    assert len(layer_shapes(r50, (3, 224, 224))) == 54
    assert len(layer_shapes(d121, (1, 3, 224, 224))) == 121


def test_layer_shapes_leaves_the_model_alone_and_handles_groups_and_sequences():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2, padding=1), nn.BatchNorm2d(8))
    model.train()
    before = model[0].weight.detach().clone()
    (conv,) = layer_shapes(model, (4, 5, 5)).layers
    assert (conv.g, conv.L, conv.O, conv.P) == (2, 2 * 9, 4, 25)
    assert model.training and model[0].weight.device.type == "cpu"
    assert torch.equal(model[0].weight, before)
    (lin,) = layer_shapes(nn.Sequential(nn.Linear(6, 3)), (2, 7, 6)).layers  # (B, T, F): T outputs per input
    assert (lin.P, lin.L, lin.O) == (7, 6, 3)


class DataDependent(nn.Module):
    """Control flow on a tensor value: cannot run on the meta device, so layer_shapes falls back to the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.abs().sum() >= 0 else x


def test_layer_shapes_falls_back_to_the_cpu():
    (fc,) = layer_shapes(DataDependent(), (4,)).layers
    assert (fc.kind, fc.P, fc.L, fc.O) == ("linear", 1, 4, 2)


def test_layer_shapes_of_a_basis_mapped_model(tmp_path):
    torch.manual_seed(0)
    model, _ = to_basisn(Head(), n_basis=8, segment_len=16, groups=2, exclude=["fc"])
    shapes = layer_shapes(model, (3, 4, 4), name="pipeline")
    assert shapes.basis == BasisSpec(8, 16, 2)
    assert [s.mapped for s in shapes.layers] == [True, False]
    assert [(s.L, s.O) for s in shapes.layers] == [(27, 8), (128, 4)]
    path = save_shapes(shapes, tmp_path / "shapes.json")
    again = load_shapes(path, name="renamed")
    assert again.layers == shapes.layers and again.basis == shapes.basis and again.name == "renamed"
    # its own basis is used by default; the dense fc takes 8 of the crossbars
    bas = evaluate(again, SMALL, "basisn", 12)
    assert (bas["n_basis"], bas["groups"], bas["dense_crossbars"]) == (8, 2, 8)


# ----------------------------------------------------------------------------------------------------------------
# Sweep and CLI.
# ----------------------------------------------------------------------------------------------------------------
def test_sweep_is_tidy_and_ratios_match_evaluate():
    net = two_layer()
    frame = sweep(net, SMALL, [6, 8], n_basis=[4, 8], groups=[1, 2, 3], segment_len=16, batch=[1, 2])
    # groups=3 divides neither n: left out; ideal and reprogram once per (N, B), basisn per (n, G) too
    assert set(frame["groups"].dropna()) == {1, 2}
    assert len(frame) == 2 * 2 * (2 + 4)
    one = evaluate(net, SMALL, "basisn", 8, 2, BasisSpec(8, 16, 2))["cycles"]
    row = frame[(frame.scheme == "basisn") & (frame.n_crossbars == 8) & (frame.batch == 2)]
    assert row[(row.n_basis == 8) & (row.groups == 2)]["cycles"].item() == one
    r = ratios(frame)
    rep = evaluate(net, SMALL, "reprogram", 8, 2)["cycles"]
    picked = r[(r.n_crossbars == 8) & (r.batch == 2) & (r.n_basis == 8) & (r.groups == 2)]
    assert picked["cycles_ratio"].item() == pytest.approx(one / rep)
    assert floor_cycles(net, SMALL, 8) == evaluate(net, SMALL, "ideal", 8)["floor_cycles"]


def _params(tmp_path, block: str):
    path = tmp_path / "params.yaml"
    path.write_text(block)
    return path


SMALL_BLOCK = """
hardware:
  preset: default
  overrides: {verify_iters: 20}
  compare_presets: [fast_write]
  networks: [cifar_resnet18]
  crossbars: [16, 64]
  report_crossbars: [16, 32]
  batch: 1
  basis: {n_basis: 64, segment_len: 128, groups: 1}
  sweep: {groups: [1, 4], verify_iters: [5]}
"""


def test_hw_eval_writes_tables_and_prints_ratios(tmp_path, capsys):
    model, _ = to_basisn(Head(), n_basis=8, segment_len=16)
    save_shapes(layer_shapes(model, (3, 4, 4)), tmp_path / "model_shapes.json")
    out = tmp_path / "hw"
    argv = ["--params", str(_params(tmp_path, SMALL_BLOCK)), "--out", str(out)]
    assert hw_eval_main([*argv, "--model-shapes", str(tmp_path / "model_shapes.json"), "--model-name", "mine"]) == 0
    printed = capsys.readouterr().out
    assert "cifar_resnet18" in printed and "cycles N=32" in printed and "EDP N=16" in printed
    assert "n/a" not in printed  # report_crossbars are evaluated even when not in `crossbars`
    info = json.loads((out / "hw_eval.json").read_text())
    assert info["format"] == "basisn-hw-eval/1" and info["config"]["verify_iters"] == 20
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["network"]) == {"cifar_resnet18", "mine"}
    assert set(summary["preset"]) == {"default", "fast_write"}
    assert set(summary["scheme"]) == {"ideal", "reprogram", "basisn"}
    sweep_frame = pd.read_csv(out / "sweep.csv")
    assert set(sweep_frame["sweep"]) == {"groups", "verify_iters"}
    r = pd.read_csv(out / "ratios.csv")
    row = summary[(summary.network == "cifar_resnet18") & (summary.n_crossbars == 16) & (summary.preset == "default")]
    expected = row[row.scheme == "basisn"]["cycles"].item() / row[row.scheme == "reprogram"]["cycles"].item()
    got = r[(r.network == "cifar_resnet18") & (r.n_crossbars == 16) & (r.preset == "default")]["cycles_ratio"]
    assert got.item() == pytest.approx(expected)
    layers = pd.read_csv(out / "layers.csv")
    assert set(layers["n_crossbars"]) == {16, 32}
    assert np.isin(["reads", "digital", "bound", "energy_write_j"], layers.columns).all()


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("hardware: {presett: default}", "hardware.presett is unknown"),
        ("hardware: {preset: slow}", "hardware.preset='slow' is unknown"),
        ("hardware: {overrides: {rows: 0}}", "rows=0 is not allowed"),
        ("hardware: {networks: [vgg16]}", "hardware.networks contains 'vgg16'"),
        ("hardware: {crossbars: [2, 16]}", "hardware.crossbars contains 2; basisn needs at least 4"),
        ("hardware: {sweep: {lanes: [1]}}", "hardware.sweep.lanes is unknown"),
        ("hardware: {basis: {groups: 3}}", "groups=3 is not allowed"),
    ],
)
def test_hw_eval_rejects_bad_params_before_writing(tmp_path, capsys, block, message):
    out = tmp_path / "hw"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output")
    assert hw_eval_main(["--params", str(_params(tmp_path, block)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "earlier output" and len(list(out.iterdir())) == 1
