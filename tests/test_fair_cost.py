"""The cost model's terms added for a fair comparison (issue 26), each computed by hand on one linear layer and one
pair of conv layers, and the issue's recomputation of ResNet-18 as regression values of the terms that existed.

Config TINY: R = C = 16, cpw = 4 (4-bit weights, 2-bit cells), T_in = 2, a row write = N_wv (2) x ceil(25/10) = 6
cycles, 4 MAC lanes per crossbar, one byte per cycle from the SRAM. Energies are round numbers in joules.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from basisn.hardware import BasisSpec, HardwareConfig, LayerShape, NetworkShapes, evaluate, preset
from basisn.hardware.cost import floor_cycles, reprogram_schedules
from basisn.hardware.networks import paper_shapes

TINY = HardwareConfig(
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
    e_verify_read=0.5,
    coef_operand_bits=16,
    e_sram_byte=0.25,
    sram_bandwidth=1e8,  # x t_cycle = 1 byte per cycle
    p_static_crossbar=1e8,  # x t_cycle = 1 J per idle crossbar-cycle
    p_static_lanes=2e8,  # 2 J per idle lane-unit-cycle
)
ROW_PROG, T_IN = 6, 2
BASIS = BasisSpec(n_basis=8, segment_len=16, groups=1, coef_bits=4)  # one copy: X = ceil(8·4/16) = 2 crossbars


def linear() -> NetworkShapes:
    """L = 20, O = 3: two tiles (rows 16 and 4), 240 cells, 60 MACs, 30 weight bytes."""
    return NetworkShapes("lin", (20,), (LayerShape("fc", "linear", 1, 1, 20, 3),))


def two_convs() -> NetworkShapes:
    """A: P = 16, L = 16, O = 4 (one tile); B: P = 4, L = 32, O = 4 (two tiles of 16 rows). 3 tiles."""
    layers = (LayerShape("a", "conv", 16, 1, 16, 4), LayerShape("b", "conv", 4, 1, 32, 4))
    return NetworkShapes("convs", (1, 4, 4), layers)


def test_verify_reads_are_charged_per_cell_and_iteration():
    rep = evaluate(linear(), TINY, "reprogram", 1)
    assert TINY.e_cell_program == 2 * (2.0 + 0.5)
    assert rep["energy_write_j"] == pytest.approx(240 * 2 * (2.0 + 0.5))  # 1200
    free = evaluate(linear(), TINY.replace(e_verify_read=0.0), "reprogram", 1)
    assert free["energy_write_j"] == pytest.approx(240 * 2 * 2.0)
    assert free["cycles"] == rep["cycles"]  # the verify read's time was always in t_write_iter


def test_coefficient_macs_are_priced_at_the_basis_output_width():
    # coefficient MACs: segments ceil(20/16) = 2 x O = 3 x n = 8 = 48
    bas = evaluate(linear(), TINY, "basisn", 2, basis=BASIS)
    assert bas["energy_coef_mac_j"] == pytest.approx(48 * (0.0625 + 0.0625 * 4 * 16 / 64))  # 4-bit x 16-bit
    narrow = evaluate(linear(), TINY.replace(coef_operand_bits=8), "basisn", 2, basis=BASIS)
    assert narrow["energy_coef_mac_j"] == pytest.approx(48 * (0.0625 + 0.0625 * 4 * 8 / 64))
    pow2 = evaluate(linear(), TINY, "basisn", 2, basis=BASIS.__class__(8, 16, 1, 4, "pow2"))
    assert pow2["energy_coef_mac_j"] == pytest.approx(48 * (0.0625 + 0.015625 * 16 / 8))  # a 16-bit shift, an add


def test_the_digital_lanes_pay_for_their_weights_and_their_operand_width():
    dig = evaluate(linear(), TINY, "digital", 1)
    assert dig["energy_mac_j"] == pytest.approx(60 * (0.0625 + 0.0625 * 4 * 4 / 64))  # weight_bits x input_bits
    assert dig["memory_source"] == "sram" and dig["bytes_moved"] == 30
    assert dig["energy_memory_j"] == pytest.approx(30 * 0.25)  # delivered although `memory` is off
    # 60 MACs on 4 lanes: 15 cycles, but 30 bytes at one byte per cycle: bound by delivery
    assert dig["cycles"] == max(math.ceil(60 / 4), 30) == 30
    free = evaluate(linear(), TINY.replace(operand_delivery=False), "digital", 1)
    assert free["energy_memory_j"] == 0 and free["cycles"] == 15
    # BasisN's coefficients: 6 entries (O x segments) x 8 active x 4 bits = 24 bytes
    bas = evaluate(linear(), TINY, "basisn", 2, basis=BASIS)
    assert bas["bytes_moved"] == 24 and bas["energy_memory_j"] == pytest.approx(24 * 0.25)
    # `memory` covers only the baseline's weight stream: off here, so reprogram moves nothing it pays for
    assert evaluate(linear(), TINY, "reprogram", 1)["energy_memory_j"] == 0


def test_leakage_is_charged_on_idle_powered_units_only():
    # digital: 1 unit of lanes powered for 30 cycles, busy 60 / 4 = 15 -> 15 idle lane-unit-cycles at 2 J
    assert evaluate(linear(), TINY, "digital", 1)["energy_static_j"] == pytest.approx(15 * 2.0)
    # ideal: each layer's crossbars are busy for the whole time that layer runs: nothing idles
    assert evaluate(linear(), TINY, "ideal", 1)["energy_static_j"] == 0
    # reprogram on N = 1: rounds of one tile, writes 16·6 + 4·6 = 120 cycles, compute 2 x P·T_in = 4
    rep = evaluate(linear(), TINY, "reprogram", 1)
    assert rep["cycles"] == 16 * ROW_PROG + 4 * ROW_PROG + 2 * T_IN == 124
    assert rep["energy_static_j"] == pytest.approx((1 * 124 - 1 * 2 * T_IN) * 1.0)  # idle while it is written
    # basisn on N = 2: 2 basis crossbars for `cycles`, busy segments(2) x X(2) x T_in; lanes busy 48 / 4
    bas = evaluate(linear(), TINY, "basisn", 2, basis=BASIS)
    idle_crossbar = 2 * bas["cycles"] - 2 * 2 * T_IN
    idle_lanes = 2 * bas["cycles"] - 48 / 4
    assert bas["energy_static_j"] == pytest.approx(idle_crossbar * 1.0 + idle_lanes * 2.0)
    layers = bas.layers
    assert layers["energy_static_j"].sum() == pytest.approx(bas["energy_static_j"])
    off = TINY.replace(p_static_crossbar=0.0, p_static_lanes=0.0)
    assert evaluate(linear(), off, "basisn", 2, basis=BASIS)["energy_static_j"] == 0


def test_best_schedule_pipelines_and_replicates_rounds_by_hand():
    net = two_convs()
    schedules = reprogram_schedules(net, TINY, 2)
    # plain on N' = 2: rounds [A, B0] and [B1]: writes 16·6 each; compute (16 + 4)·2 and 4·2
    assert schedules["plain"] == 96 + 96 + 40 + 8 == 240
    # the same rounds pipelined: round 1 computes in max(16, 4)·2
    assert schedules["plain_pipelined"] == 96 + 96 + 32 + 8 == 232
    # ping-pong halves of one tile: sum_r max(compute_r, writes_{r+1}) = max(32, 96) + max(8, 96) + max(8, 96)
    assert schedules["pingpong"] == schedules["pingpong_pipelined"] == 288
    # rounds of whole layers: [A] with a copy on the idle crossbar (16 / 2 pixels each: 8·2), then [B]
    assert schedules["layer_rounds"] == schedules["layer_rounds_pipelined"] == (96 + 16) + (96 + 8) == 216
    best = evaluate(net, TINY, "reprogram_best", 2)
    assert best["cycles"] == 216 and best["option"] == "layer_rounds_pipelined"
    assert best.layers["copies"].tolist() == [2, 1]
    assert best.layers["cycles"].sum() == pytest.approx(216)
    # the copy's cells are written too: A 16·4·4 = 256 cells twice, B 512 once, 5 J per cell
    assert best["energy_write_j"] == pytest.approx((2 * 256 + 512) * 5.0)
    assert evaluate(net, TINY, "reprogram", 2)["energy_write_j"] == pytest.approx(768 * 5.0)
    # both options off: the plain and ping-pong schedules of before
    old = TINY.replace(reprogram_replicate=False, reprogram_pipeline=False)
    assert set(reprogram_schedules(net, old, 2)) == {"plain", "pingpong"}
    assert evaluate(net, old, "reprogram_best", 2)["cycles"] == 240


def test_best_schedule_when_everything_fits_by_hand():
    net = two_convs()  # 3 tiles on N = 6
    schedules = reprogram_schedules(net, TINY, 6)
    assert schedules["fits"] == 32 + 8
    assert schedules["fits_pipelined"] == 32
    # min-max copies on 6 crossbars: c = 4 pixels per copy (A 4 copies, B 1 copy of 2 tiles: 6 crossbars)
    assert schedules["replicated_pipelined"] == 8
    best = evaluate(net, TINY, "reprogram_best", 6)
    assert best["cycles"] == 8 and best["option"] == "replicated_pipelined" and best["crossbars_used"] == 6


def test_issue_26_recomputation_of_resnet18_stays_exact():
    """The issue's independent recomputation (operands free, as it was made): ResNet-18, N = 64, preset default."""
    shapes = paper_shapes("resnet18")
    free = preset("default", operand_delivery=False)
    assert evaluate(shapes, free, "reprogram", 64)["cycles"] == 564_816
    assert evaluate(shapes, free, "ideal", 64)["cycles"] == 241_872
    assert evaluate(shapes, free, "digital", 64)["cycles"] == 221_445
    four_bit = {"n_basis": 64, "segment_len": 128, "coef_bits": 4}
    assert evaluate(shapes, free, "basisn", 64, basis=four_bit | {"groups": 1})["cycles"] == 119_984
    assert evaluate(shapes, free, "basisn", 64, basis=four_bit | {"groups": 4})["cycles"] == 29_996


def test_best_schedule_is_at_least_twice_as_fast_as_plain_rounds_on_resnet18_at_256():
    shapes = paper_shapes("resnet18")
    config = preset("default")
    plain = evaluate(shapes, config, "reprogram", 256)["cycles"]
    best = evaluate(shapes, config, "reprogram_best", 256)
    assert plain == 319_576 and best["cycles"] <= plain / 2


def test_rewriting_rounds_with_copies_can_beat_writing_once_when_everything_fits():
    """docs/hardware.md: DenseNet-121 fits in 4096 crossbars, yet rounds of whole layers rewritten every image with
    many copies are faster than the fitting schedules: the reason these are planned when everything fits too."""
    shapes = paper_shapes("densenet121")
    config = preset("default")
    schedules = reprogram_schedules(shapes, config, 4096)
    assert "fits" in schedules  # everything fits
    fitting = min(schedules[name] for name in ("fits", "replicated", "fits_pipelined", "replicated_pipelined"))
    assert schedules["layer_rounds_pipelined"] < fitting
    assert evaluate(shapes, config, "reprogram_best", 4096)["option"] == "layer_rounds_pipelined"


def test_new_fields_are_validated_in_one_line():
    for name, bad in (("operand_delivery", 1), ("reprogram_pipeline", "yes"), ("reprogram_replicate", None)):
        with pytest.raises(ValueError, match=f"^{name}=.* is not allowed; use true or false$"):
            TINY.replace(**{name: bad})
    with pytest.raises(ValueError, match="^p_static_lanes=-1.0 is not allowed; use a finite power in watts >= 0$"):
        TINY.replace(p_static_lanes=-1.0)
    with pytest.raises(ValueError, match="^coef_operand_bits=0 is not allowed"):
        TINY.replace(coef_operand_bits=0)
    with pytest.raises(ValueError, match="^e_verify_read=nan is not allowed"):
        TINY.replace(e_verify_read=float("nan"))


layer = st.builds(
    lambda kind, P, L, O: LayerShape("l", kind, 1 if kind == "linear" else P, 1, L, O),
    st.sampled_from(["conv", "linear"]),
    st.integers(1, 40),
    st.integers(1, 60),
    st.integers(1, 12),
)
nets = st.lists(layer, min_size=1, max_size=5).map(lambda ls: NetworkShapes("h", (1,), tuple(ls)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nets, st.integers(1, 3), st.sampled_from([None, 2]), st.sampled_from([None, 2, 3]), st.sampled_from([1, 3]))
def test_best_schedule_properties_with_every_option_on(net, batch, write_cols, write_crossbars, verify_iters):
    config = TINY.replace(write_cols=write_cols, write_crossbars=write_crossbars, verify_iters=verify_iters)
    previous = math.inf
    for n in range(1, 16):
        best = evaluate(net, config, "reprogram_best", n, batch)
        plain = evaluate(net, config, "reprogram", n, batch)
        assert best["cycles"] <= plain["cycles"]  # every option only adds choices
        assert best["cycles"] >= floor_cycles(net, config, n, batch)  # no crossbar does more than one step a cycle
        assert best["cycles"] <= previous  # more crossbars never slow the best schedule down
        assert best.layers["cycles"].sum() == pytest.approx(best["cycles"])
        assert best["crossbars_used"] <= n
        previous = best["cycles"]
