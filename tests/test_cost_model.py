"""Tests of the crossbar cost model (docs/method.md §2): hand-computed small nets, properties, validation, shapes, CLI.

The hand computations below write out docs/method.md §2.2-§2.3 with the numbers of each net; the property tests compare
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
    SCHEMES,
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
from basisn.hardware.config import MAX_AS_MEAN, MAX_BATCH, MAX_CROSSBARS
from basisn.hardware.cost import replica_counts
from basisn.stages.hardware import main as hw_eval_main

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
    e_add=0.0625,
    e_shift=0.015625,
    e_write_iter=2.0,
    # the hand computations below are of the terms before issue 26; tests/test_fair_cost.py checks the new ones
    e_verify_read=0.0,
    coef_operand_bits=8,
    operand_delivery=False,
    p_static_crossbar=0.0,
    p_static_lanes=0.0,
    reprogram_pipeline=False,
    reprogram_replicate=False,
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


def test_digital_scheme_by_hand():
    net = one_conv()
    macs = 36 * 27 * 8  # P·g·L·O = 7776
    # N = 2 crossbars' worth of lanes: 2 · 4 = 8 MACs per cycle; 4-bit weights: e_add + (e_coef_mac - e_add)·4/8
    dig = evaluate(net, SMALL, "digital", 2)
    assert dig["cycles"] == math.ceil(macs / 8) == 972
    assert dig["energy_mac_j"] == pytest.approx(macs * (0.0625 + 0.0625 * 4 * 4 / 64))  # weight_bits x input_bits
    assert dig["energy_j"] == pytest.approx(dig["energy_mac_j"])  # no crossbar steps, no writes
    assert dig["energy_xbar_j"] == dig["energy_write_j"] == dig["energy_coef_mac_j"] == 0
    assert dig["crossbars_used"] == 0 and dig["program_once_cycles"] == 0
    # a batch of 3 on 4 crossbars' lanes: ceil(3·7776 / 16) = 1458 per batch, 486 per inference
    assert evaluate(net, SMALL, "digital", 4, batch=3)["cycles_per_batch"] == 1458
    assert list(dig.layers["bound"]) == ["digital"]


def test_pow2_and_uniform_coefficients_by_hand():
    net = one_conv()
    macs = 72 * 8 * 8  # s·O·n coefficient MACs, as in test_one_conv_by_hand
    steps = 72 * 2 * T_IN * E_STEP
    unknown = evaluate(net, SMALL, "basisn", 4, basis=BASIS)  # coef_bits None: an 8-bit multiply + add
    uniform = evaluate(net, SMALL, "basisn", 4, basis=BasisSpec(8, 16, 1, coef_bits=4))
    pow2 = evaluate(net, SMALL, "basisn", 4, basis=BasisSpec(8, 16, 1, coef_bits=4, coef_quant="pow2"))
    assert unknown["energy_coef_mac_j"] == pytest.approx(macs * 0.125)
    assert uniform["energy_coef_mac_j"] == pytest.approx(macs * (0.0625 + 0.0625 * 4 / 8))  # half a multiplier
    assert pow2["energy_coef_mac_j"] == pytest.approx(macs * (0.0625 + 0.015625))  # a shift and an add
    assert pow2["energy_j"] == pytest.approx(steps + macs * 0.078125)
    assert unknown["cycles"] == uniform["cycles"] == pow2["cycles"] == 288  # throughput is the lanes'
    assert (pow2["coef_bits"], pow2["coef_quant"]) == (4, "pow2")


def test_write_parallelism_by_hand():
    net = one_linear()  # 9 tiles: rows 16/16/8 by row block, columns 16/16/8 by column block (40 columns)
    # 8 cells of a row at a time: a tile takes rows·ceil(cols/8) row writes: 32 32 16 | 32 32 16 | 16 16 8
    narrow = SMALL.replace(write_cols=8)
    assert narrow.write_passes == 2
    rep = evaluate(net, narrow, "reprogram", 4)
    # N' = 4: rounds [32 32 16 32] [32 16 16 16] [8] -> (32 + 32 + 8)·6 writes + 3 rounds·2 = 438 (N' = 3: 486)
    assert rep["cycles"] == 72 * ROW_PROG + 3 * T_IN == 438
    assert rep["round_size"] == 4
    assert evaluate(net, SMALL, "reprogram", 4, batch=3)["cycles_per_batch"] == 258  # whole rows, as before
    # 2 crossbars written at once, whole rows: rounds of N' = 4 are written in waves of 2 consecutive tiles
    # [16 16] [16 16] | [16 16] [8 8] | [8]: (16 + 16 + 16 + 8 + 8)·6 + 3 rounds·2 = 390 (N' = 2: 394)
    drivers = SMALL.replace(write_crossbars=2)
    assert evaluate(net, drivers, "reprogram", 4)["cycles"] == 64 * ROW_PROG + 3 * T_IN == 390
    # one crossbar at a time writes every tile's rows in turn, whatever N: N' = 8 gives 2 rounds of compute
    one = SMALL.replace(write_crossbars=1)
    assert evaluate(net, one, "reprogram", 8)["cycles"] == (6 * 16 + 3 * 8) * ROW_PROG + 2 * T_IN == 724
    # the one-time write of the ideal mapping pays the same limits: its widest tile, 32 row writes
    assert evaluate(net, narrow, "ideal", 1)["program_once_cycles"] == 32 * ROW_PROG


def test_ping_pong_by_hand():
    net = one_linear()  # 9 tiles of rows 16 x 6 then 8 x 3, P = 1
    batch = 48  # compute per round: B·P·T_in = 96 cycles, as long as writing 16 rows (16·6 = 96)
    # ping-pong on N = 6: halves of N' = 3: rounds [16 16 16] [16 16 16] [8 8 8] write 96, 96, 48 cycles, compute
    # 96 each; steady state: max(96, 96) + max(96, 48) + max(96, 96) (next batch's first round) = 288 per batch
    pp = evaluate(net, SMALL, "reprogram_pingpong", 6, batch=batch)
    assert pp["cycles_per_batch"] == 288
    assert (pp["option"], pp["round_size"], pp["crossbars_used"]) == ("pingpong", 3, 6)
    assert pp.layers["cycles"].sum() == pytest.approx(288 / batch)
    # plain rounds on N' = 6: [16 x 6] [8 8 8]: (16 + 8)·6 + 2·96 = 336
    rep = evaluate(net, SMALL, "reprogram", 6, batch=batch)
    assert rep["cycles_per_batch"] == 336
    best = evaluate(net, SMALL, "reprogram_best", 6, batch=batch)
    assert best["cycles_per_batch"] == 288 and best["option"] == "pingpong"
    for key in ("energy_j", "energy_write_j"):  # overlapping writes changes time, not energy
        assert best[key] == pytest.approx(rep[key])
    # with single images writes dominate: halving the rounds only adds compute, the plain schedule is best
    assert evaluate(net, SMALL, "reprogram_best", 6)["option"] == "plain"


def test_replication_when_everything_fits_by_hand():
    net = one_conv()  # 4 tiles, P = 36
    assert evaluate(net, SMALL, "reprogram", 8)["cycles"] == 36 * T_IN  # fits: the single-copy ideal mapping
    # 4 spare crossbars hold a second copy: each copy computes 18 of the 36 pixels
    best = evaluate(net, SMALL, "reprogram_best", 8)
    assert best["cycles"] == 18 * T_IN and best["option"] == "replicated" and best["crossbars_used"] == 8
    assert best["energy_j"] == pytest.approx(evaluate(net, SMALL, "ideal", 8)["energy_j"])
    assert evaluate(net, SMALL, "reprogram_best", 7)["cycles"] == 36 * T_IN  # 3 spare: no room for a copy
    # two layers: conv (4 tiles, P = 16) gets copies 2 then 3 (8 -> 6 pixels each); the linear (P = 1) none
    two = two_layer()
    assert list(replica_counts(two, SMALL, 20)) == [3, 1]
    assert evaluate(two, SMALL, "reprogram_best", 20)["cycles"] == math.ceil(16 / 3) * T_IN + 1 * T_IN == 14


# ----------------------------------------------------------------------------------------------------------------
# Properties, against a naive implementation of docs/method.md §2.2.
# ----------------------------------------------------------------------------------------------------------------
def naive_tiles(net: NetworkShapes, cfg: HardwareConfig) -> tuple[list[int], list[int]]:
    """Every dense tile in layer order, written out with loops: its rows used and the layer that owns it."""
    rows, owner = [], []
    for i, s in enumerate(net.layers):
        for _ in range(s.g):
            for rb in range(math.ceil(s.L / cfg.rows)):
                for _ in range(math.ceil(s.O * cfg.cols_per_weight / cfg.cols)):
                    rows.append(min(cfg.rows, s.L - rb * cfg.rows))
                    owner.append(i)
    return rows, owner


def naive_reprogram(net: NetworkShapes, cfg: HardwareConfig, n: int, batch: int) -> int:
    """Per-batch cycles: greedy layer-order rounds of exactly n tiles, written out with loops."""
    rows, owner = naive_tiles(net, cfg)
    program, compute = 0, 0
    for start in range(0, len(rows), n):
        program += max(rows[start : start + n]) * cfg.row_program_cycles
    for i, s in enumerate(net.layers):
        rounds = {k // n for k, o in enumerate(owner) if o == i}
        compute += len(rounds) * batch * s.P * cfg.input_steps
    return program + compute


def naive_pingpong(net: NetworkShapes, cfg: HardwareConfig, half: int, batch: int) -> int:
    """Per-batch steady-state cycles of rounds of `half` tiles on two halves: sum_r max(compute_r, writes_{r+1})."""
    rows, owner = naive_tiles(net, cfg)
    starts = list(range(0, len(rows), half))
    writes = [max(rows[a : a + half]) * cfg.row_program_cycles for a in starts]
    compute = [sum(batch * net.layers[i].P * cfg.input_steps for i in sorted(set(owner[a : a + half]))) for a in starts]
    return sum(max(compute[r], writes[(r + 1) % len(starts)]) for r in range(len(starts)))


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
    # the baseline at its best: never worse than today's baseline or ping-pong alone, never better than floor(N),
    # the same energy, and never more cycles with more crossbars
    previous_best = previous_pp = math.inf
    for n in counts:
        rep, pp, best = (evaluate(net, cfg, s, n, batch) for s in ("reprogram", "reprogram_pingpong", "reprogram_best"))
        assert best["cycles"] <= rep["cycles"] and best["cycles"] <= pp["cycles"]
        assert best["cycles"] <= previous_best and pp["cycles"] <= previous_pp
        assert best["cycles"] >= best["floor_cycles"] and pp["cycles"] >= pp["floor_cycles"]
        assert best["energy_j"] == pytest.approx(rep["energy_j"]) == pp["energy_j"]
        assert best["crossbars_used"] <= n
        if 2 <= n < tiles and n // 2 <= 12:  # ping-pong is the best steady-state schedule on halves N' <= N/2
            assert pp["cycles_per_batch"] == min(naive_pingpong(net, cfg, h, batch) for h in range(1, n // 2 + 1))
        previous_best, previous_pp = best["cycles"], pp["cycles"]


@PROPERTY
@given(net_strategy, config_strategy, st.integers(1, 3), st.sampled_from([1, 2, 3, 8]), st.sampled_from([1, 2, 5]))
def test_write_limits_only_slow_the_baseline_and_stay_monotone(net, cfg, batch, write_cols, write_crossbars):
    free = cfg
    limited = cfg.replace(write_cols=min(write_cols, cfg.cols), write_crossbars=write_crossbars)
    previous = math.inf
    for n in range(1, total_tiles(net, cfg) + 3):
        rep = evaluate(net, limited, "reprogram", n, batch)
        best = evaluate(net, limited, "reprogram_best", n, batch)
        assert rep["cycles"] >= evaluate(net, free, "reprogram", n, batch)["cycles"]
        assert rep["cycles"] <= previous and best["cycles"] <= rep["cycles"]
        previous = rep["cycles"]


@PROPERTY
@given(net_strategy, config_strategy, st.integers(1, 3))
def test_digital_properties(net, cfg, batch):
    previous = math.inf
    for n in range(1, 40):
        dig = evaluate(net, cfg, "digital", n, batch)
        assert dig["cycles"] <= previous  # more lanes never slow it down
        assert dig["cycles"] >= net.macs / (n * cfg.digital_lanes)  # no lane does more than one MAC per cycle
        assert dig["energy_j"] == pytest.approx(net.macs * cfg.mac_energy(cfg.weight_bits, operand_bits=cfg.input_bits))
        previous = dig["cycles"]


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


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (
            lambda: evaluate(one_conv(), SMALL, "reprogram", 10**30),
            rf"n_crossbars={10**30} is not allowed; use an integer >= 1 and <= {MAX_CROSSBARS}",
        ),
        (
            lambda: evaluate(one_conv(), SMALL, "digital", 4, batch=2**40),
            rf"batch={2**40} is not allowed; use an integer >= 1 and <= {MAX_BATCH}",
        ),
        (lambda: floor_cycles(one_conv(), SMALL, 10**30), rf"n_crossbars={10**30} is not allowed"),
        (lambda: SMALL.replace(rows=10**9), r"rows=1000000000 is not allowed; use an integer >= 1 and <= 65536"),
        (
            lambda: SMALL.replace(verify_iters=10**12),
            r"verify_iters=1000000000000 is not allowed; use an integer >= 1 and <= 1000000",
        ),
        (
            lambda: SMALL.replace(write_cols=0),
            r"write_cols=0 is not allowed; use an integer >= 1 and <= 65536; or null",
        ),
        (lambda: SMALL.replace(write_crossbars=2.5), r"write_crossbars=2.5 is not allowed"),
        (
            lambda: SMALL.replace(t_write_iter=1e3),
            r"t_write_iter=1000.0 is not allowed; use at most 1000000000 x t_cycle",
        ),
        (lambda: BasisSpec(n_basis=10**20), rf"n_basis={10**20} is not allowed; use an integer >= 1 and <= 65536"),
        (
            lambda: BasisSpec(8, 16, 1, coef_bits=0),
            r"coef_bits=0 is not allowed; use an integer >= 1 and <= 32; or null",
        ),
        (lambda: BasisSpec(8, 16, 1, coef_quant="log"), r"coef_quant='log' is not allowed; allowed: uniform, pow2"),
    ],
)
def test_absurd_sizes_are_rejected_with_the_allowed_range(call, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)


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
    with pytest.raises(
        ValueError, match=r"scheme='dense' is not allowed; allowed: ideal, reprogram, reprogram_pingpong"
    ):
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


def test_device_presets_take_their_sources_values():
    neurram, cell, neurosim = PRESETS["neurram"], PRESETS["neurram_cell"], PRESETS["neurosim_v21"]
    # NeuRRAM wupdate_control.py: program_array 1 us pulses, iteration_limit 20; program_increment 100 ns, 10
    assert (neurram.t_write_iter, neurram.verify_iters, neurram.row_program_cycles) == (1e-6, 20, 200)
    assert (cell.t_write_iter, cell.verify_iters, cell.row_program_cycles) == (100e-9, 10, 10)
    assert neurram.e_write_iter == pytest.approx(1.2**2 * 5.24e-6 * 1e-6, rel=1e-3)  # V^2·G·t
    # NeuroSim V2.1 Param.cpp: 50 ns write pulse + 10 ns read pulse; 4 V on the mid-range of 1-10 uS
    assert neurosim.t_write_iter == pytest.approx(60e-9) and neurosim.write_iter_cycles == 1
    assert neurosim.e_write_iter == pytest.approx(4**2 * 5.5e-6 * 50e-9)
    assert set(MAX_AS_MEAN) == {"neurram", "neurram_cell"} and set(MAX_AS_MEAN) <= set(PRESETS)
    for config in PRESETS.values():  # the write-parallelism defaults are today's cheapest schedule
        assert config.write_cols is None and config.write_crossbars is None


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
    assert shapes.basis == BasisSpec(8, 16, 2, coef_bits=4, coef_quant="uniform")  # to_basisn's defaults
    assert [s.mapped for s in shapes.layers] == [True, False]
    assert [(s.L, s.O) for s in shapes.layers] == [(27, 8), (128, 4)]
    path = save_shapes(shapes, tmp_path / "shapes.json")
    again = load_shapes(path, name="renamed")
    assert again.layers == shapes.layers and again.basis == shapes.basis and again.name == "renamed"
    # its own basis is used by default; the dense fc takes 8 of the crossbars
    bas = evaluate(again, SMALL, "basisn", 12)
    assert (bas["n_basis"], bas["groups"], bas["dense_crossbars"]) == (8, 2, 8)


def test_layer_shapes_carry_the_coefficient_quantizer_into_the_cost(tmp_path):
    """A pow2 model is charged shift-adds, not the 8-bit multiply of an unknown quantizer."""
    torch.manual_seed(0)
    model, _ = to_basisn(Head(), n_basis=8, segment_len=16, coef_bits=3, coef_quant="pow2")
    again = load_shapes(save_shapes(layer_shapes(model, (3, 4, 4)), tmp_path / "shapes.json"))
    assert (again.basis.coef_bits, again.basis.coef_quant) == (3, "pow2")
    own = evaluate(again, SMALL, "basisn", 12)
    with pytest.raises(ValueError, match=r"basis contradicts the model's own basis: coef_bits=None \(model: 3\)"):
        evaluate(again, SMALL, "basisn", 12, basis=BasisSpec(8, 16, 1))
    unknown = evaluate(again, SMALL, "basisn", 12, basis=BasisSpec(8, 16, 1), override_basis=True)
    assert own["energy_coef_mac_j"] < unknown["energy_coef_mac_j"] and own["energy_j"] < unknown["energy_j"]


# ----------------------------------------------------------------------------------------------------------------
# Sweep and CLI.
# ----------------------------------------------------------------------------------------------------------------
def test_sweep_is_tidy_and_ratios_match_evaluate():
    net = two_layer()
    frame = sweep(net, SMALL, [6, 8], n_basis=[4, 8], groups=[1, 2, 3], segment_len=16, batch=[1, 2])
    # groups=3 divides neither n: left out; the other schemes once per (N, B), basisn per (n, G) too
    assert set(frame["groups"].dropna()) == {1, 2}
    assert len(frame) == 2 * 2 * (len(SCHEMES) - 1 + 4)
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
  compare_presets: [fast_write, neurram]
  networks: [cifar_resnet18]
  crossbars: [16, 64]
  report_crossbars: [16, 32]
  batch: 1
  basis: {n_basis: 64, segment_len: 128, groups: 1}
  sweep: {groups: [1, 4], verify_iters: [5], digital_lanes: [64], write_cols: [8], write_crossbars: [4],
          verify_iters_share: [0.5, 1.0], sram_bytes: [1048576, 67108864]}
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
    assert set(summary["preset"]) == {"default", "fast_write", "neurram"}
    assert set(summary["scheme"]) == set(SCHEMES)
    assert "BasisN / digital" in printed and "BasisN / the best baseline schedule" in printed
    assert "s of evaluation" in printed
    sweep_frame = pd.read_csv(out / "sweep.csv")
    assert set(sweep_frame["sweep"]) == {
        "groups",
        "verify_iters",
        "digital_lanes",
        "write_cols",
        "write_crossbars",
        "verify_iters_share",
        "sram_bytes",
    }
    sram = sweep_frame[(sweep_frame["sweep"] == "sram_bytes") & (sweep_frame["network"] == "cifar_resnet18")]
    assert sram["memory"].all()  # the SRAM sweep runs with memory traffic on
    sources = sram[sram["scheme"] == "basisn"].groupby("sram_bytes")["memory_source"].first()
    assert sources.to_dict() == {1048576: "dram", 67108864: "sram"}  # 2.81 MB of coefficients fit only 64 MiB
    memory = pd.read_csv(out / "memory.csv")
    assert set(memory["memory"]) == {True, False} and set(memory["n_crossbars"]) == {16, 32}
    assert "With memory traffic" in printed
    assert "cifar_resnet18 2.81 MB -> 67108864" in printed  # where the coefficients start to fit the SRAM
    storage_table = pd.read_csv(out / "storage.csv")
    assert set(storage_table[storage_table["network"] == "cifar_resnet18"]["groups"]) == {1, 4}
    assert set(storage_table[storage_table["network"] == "mine"]["n_basis"]) == {8}  # its own basis
    shares = sweep_frame[sweep_frame["sweep"] == "verify_iters_share"]
    assert set(shares["preset"]) == {"neurram"} and set(shares["verify_iters"]) == {10, 20}  # half of 20, 20
    lanes = sweep_frame[(sweep_frame["sweep"] == "digital_lanes") & (sweep_frame["scheme"] == "digital")]
    assert set(lanes["digital_lanes"]) == {64}
    assert set(pd.read_csv(out / "sweep_ratios.csv")["verify_iters_share"].dropna()) == {0.5, 1.0}
    r = pd.read_csv(out / "ratios.csv")
    row = summary[(summary.network == "cifar_resnet18") & (summary.n_crossbars == 16) & (summary.preset == "default")]
    expected = row[row.scheme == "basisn"]["cycles"].item() / row[row.scheme == "reprogram"]["cycles"].item()
    got = r[(r.network == "cifar_resnet18") & (r.n_crossbars == 16) & (r.preset == "default")]["cycles_ratio"]
    assert got.item() == pytest.approx(expected)
    both = row.set_index("scheme")["cycles"]
    mine = r[(r.network == "cifar_resnet18") & (r.n_crossbars == 16) & (r.preset == "default")]
    assert mine["cycles_ratio_digital"].item() == pytest.approx(both["basisn"] / both["digital"])
    assert mine["cycles_ratio_best"].item() == pytest.approx(both["basisn"] / both["reprogram_best"])
    assert mine["cycles_ratio_best"].item() >= mine["cycles_ratio"].item()  # the best baseline is never slower
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
        ("hardware: {crossbars: [1000000000000000000]}", "hardware.crossbars contains 1000000000000000000; allowed"),
        ("hardware: {sweep: {verify_iters_share: [0, 1]}}", "hardware.sweep.verify_iters_share=[0, 1] is not"),
        ("hardware: {sweep: {write_cols: [100000]}}", "write_cols=100000 is not allowed"),
        ("hardware: {basis: {coef_quant: log}}", "coef_quant='log' is not allowed"),
        ("hardware: {basis: {groups: 3}}", "groups=3 is not allowed"),
        ("hardware: {sweep: {sram_bytes: [-1]}}", "hardware.sweep.sram_bytes=[-1] is not allowed"),
        ("hardware: {overrides: {memory: 1}}", "memory=1 is not allowed; use true or false"),
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


# ----------------------------------------------------------------------------------------------------------------
# Memory traffic (docs/hardware.md section 2), by hand on the one-conv and one-linear nets.
# ----------------------------------------------------------------------------------------------------------------
# 120-byte SRAM at 1 J/byte and 0.5 byte per 10 ns cycle; DRAM at 10 J/byte and 0.25 byte per cycle.
MEM = SMALL.replace(
    memory=True, sram_bytes=120, e_sram_byte=1.0, e_dram_byte=10.0, sram_bandwidth=0.5e8, dram_bandwidth=0.25e8
)


def test_memory_traffic_of_one_conv_by_hand():
    net = one_conv()  # L = 27, O = 8, P = 36: 216 weights at 4 bits = 108 bytes (fit the 120-byte SRAM)
    assert evaluate(net, MEM, "ideal", 2)["bytes_moved"] == 0  # written once, nothing moves per inference
    assert evaluate(net, MEM, "ideal", 2)["energy_memory_j"] == 0
    rep = evaluate(net, MEM, "reprogram", 2)
    assert (rep["bytes_moved"], rep["memory_source"]) == (108, "sram")
    assert rep["energy_memory_j"] == pytest.approx(108 * 1.0)
    # rounds [tile 0, 1] = 2 x 16x16/4 = 128 weights = 64 bytes -> 128 cycles > 16 rows x 6 = 96 of writes;
    # [tile 2, 3] = 2 x 11x16/4 = 88 weights = 44 bytes -> 88 cycles > 66: the writes wait for their weights
    assert rep["cycles"] == 128 + 88 + 2 * 36 * T_IN == 360
    assert evaluate(net, SMALL, "reprogram", 2)["cycles"] == 306  # memory off: the model without traffic
    # basisn G = 1: 16 (output channel, segment) pairs x 8 coefficients x 8 bits = 128 bytes > 120: from DRAM,
    # 128 / 0.25 = 512 cycles > the 288 of compute: bound by the transfer
    bas = evaluate(net, MEM, "basisn", 4, basis=BASIS)
    assert (bas["bytes_moved"], bas["memory_source"]) == (128, "dram")
    assert bas["energy_memory_j"] == pytest.approx(128 * 10.0)
    assert bas["cycles"] == 512 and bas.layers.loc[0, "bound"] == "transfer"
    # G = 2: 4 active coefficients + 1 bit of group index per pair: 16 x 33 bits = 66 bytes, from the SRAM
    grouped = evaluate(net, MEM, "basisn", 4, basis=BasisSpec(8, 16, 2))
    assert (grouped["bytes_moved"], grouped["memory_source"]) == (66, "sram")
    assert grouped["energy_memory_j"] == pytest.approx(66 * 1.0)
    assert grouped["transfer_cycles"] == 132 and grouped["cycles"] >= 132
    dig = evaluate(net, MEM, "digital", 2)
    assert (dig["bytes_moved"], dig["memory_source"], dig["transfer_cycles"]) == (108, "sram", 216)
    assert dig["cycles"] == 972  # compute-bound: 972 > 216
    assert dig["energy_j"] == pytest.approx(evaluate(net, SMALL, "digital", 2)["energy_j"] + 108 * 1.0)
    off = evaluate(net, SMALL, "basisn", 4, basis=BASIS)
    assert off["bytes_moved"] == 128 and off["energy_memory_j"] == 0 and off["cycles"] == 288


def test_memory_traffic_of_one_linear_by_hand_with_a_batch():
    net = one_linear()  # 400 weights at 4 bits = 200 bytes > 120: from DRAM; B = 3 shares one read per batch
    rep = evaluate(net, MEM, "reprogram", 4, batch=3)
    assert (rep["bytes_moved"], rep["memory_source"]) == (pytest.approx(200 / 3), "dram")
    assert rep["energy_memory_j"] == pytest.approx(200 * 10.0 / 3)
    # rounds of 4 tiles: 224 weights (112 B -> 448 cycles > 96), 160 (80 B -> 320 > 96), 16 (8 B -> 32 < 48):
    # 834; rounds of 3 tiles (the best N' <= N): 160, 160, 80 weights -> 320 + 320 + 160 cycles (> 96, 96, 48)
    assert rep["cycles_per_batch"] == 320 + 320 + 160 + 3 * 3 * T_IN == 818 < 448 + 320 + 48 + 3 * 3 * T_IN
    assert rep["round_size"] == 3
    assert evaluate(net, SMALL, "reprogram", 4, batch=3)["cycles_per_batch"] == 258  # memory off
    # basisn: 10 outputs x 3 segments x 8 coefficients x 8 bits = 240 bytes from DRAM -> 960 cycles per batch
    bas = evaluate(net, MEM, "basisn", 4, batch=3, basis=BASIS)
    assert bas["bytes_moved"] == pytest.approx(240 / 3) and bas["memory_source"] == "dram"
    assert bas["energy_memory_j"] == pytest.approx(240 * 10.0 / 3)
    assert bas["cycles_per_batch"] == 960
    dig = evaluate(net, MEM, "digital", 4, batch=3)
    assert dig["energy_memory_j"] == pytest.approx(200 * 10.0 / 3)
    assert dig["cycles_per_batch"] == 800  # 200 / 0.25 > ceil(3·400/16) = 75
    assert evaluate(net, MEM, "ideal", 4, batch=3)["energy_memory_j"] == 0
    # with a large SRAM everything is read from it instead
    big = evaluate(net, MEM.replace(sram_bytes=1 << 20), "basisn", 4, batch=3, basis=BASIS)
    assert big["memory_source"] == "sram" and big["energy_memory_j"] == pytest.approx(240 * 1.0 / 3)


def test_storage_of_one_conv_by_hand():
    from basisn.hardware.cost import storage

    row = storage(one_conv(), MEM, BASIS)
    assert (row["dense_weight_bytes"], row["coef_bytes"], row["basis_bytes"]) == (108, 128, 8 * 16 * 4 / 8)
    assert row["compression_ratio"] == pytest.approx(108 / (128 + 64))
    assert row["dense_fits_sram"] and not row["coef_fits_sram"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("net", [one_conv, one_linear, two_layer])
def test_memory_traffic_only_adds_cost(scheme, net):
    shapes = net()
    off = evaluate(shapes, SMALL, scheme, 4, batch=2, basis=BASIS)
    on = evaluate(shapes, MEM, scheme, 4, batch=2, basis=BASIS)
    assert on["cycles"] >= off["cycles"] and on["energy_j"] >= off["energy_j"]
    assert on["energy_j"] == pytest.approx(off["energy_j"] + on["energy_memory_j"])
    assert on["bytes_moved"] == off["bytes_moved"]
    layers = on.layers  # the per-layer table adds up to the totals with the transfer bound too
    assert layers["cycles"].sum() == pytest.approx(on["cycles"])
    assert layers["energy_memory_j"].sum() == pytest.approx(on["energy_memory_j"])
    assert layers["bytes_moved"].sum() == pytest.approx(on["bytes_moved"])


@pytest.mark.parametrize(
    ("changes", "pattern"),
    [
        ({"memory": "yes"}, r"memory='yes' is not allowed; use true or false"),
        ({"sram_bytes": -1}, r"sram_bytes=-1 is not allowed; use an integer >= 0"),
        ({"dram_bandwidth": 0.0}, r"dram_bandwidth=0.0 is not allowed; use a finite bandwidth"),
        ({"e_sram_byte": -1.0}, r"e_sram_byte=-1.0 is not allowed"),
    ],
)
def test_invalid_memory_fields_are_named(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        preset("default").replace(**changes)


@PROPERTY
@given(
    net_strategy,
    config_strategy,
    st.integers(1, 3),
    st.sampled_from([0, 64, 1 << 20]),
    st.sampled_from([0.05e8, 0.5e8, 10e8]),
)
def test_memory_traffic_properties(net, cfg, batch, sram_bytes, bandwidth):
    """With memory traffic on, the orderings still hold, and it never makes a scheme cheaper."""
    on = cfg.replace(memory=True, sram_bytes=sram_bytes, sram_bandwidth=bandwidth, dram_bandwidth=bandwidth / 4)
    tiles = total_tiles(net, cfg)
    ideal = evaluate(net, on, "ideal", 1, batch)
    previous = {"reprogram": math.inf, "reprogram_best": math.inf, "digital": math.inf}
    for n in sorted({*range(1, 24), tiles - 1, tiles, tiles + 1} - {0}):
        for scheme in previous:
            result = evaluate(net, on, scheme, n, batch)
            assert result["cycles"] <= previous[scheme]  # never more cycles with more crossbars
            assert result["cycles"] >= evaluate(net, cfg, scheme, n, batch)["cycles"]
            assert result["energy_memory_j"] >= 0
            previous[scheme] = result["cycles"]
        assert ideal["cycles"] <= evaluate(net, on, "reprogram", n, batch)["cycles"]
    m = min(cfg.rows, 16)
    dense = evaluate(net, on, "basisn", 8, batch, BasisSpec(4, m, 1))
    grouped = evaluate(net, on, "basisn", 8, batch, BasisSpec(4, m, 2))
    assert grouped["bytes_moved"] < dense["bytes_moved"]  # group-sparse moves fewer bytes, index included
    assert grouped["energy_memory_j"] <= dense["energy_memory_j"]  # fewer bytes, from the same or a cheaper place
