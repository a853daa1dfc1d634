"""The functional crossbar simulation (basisn.hardware.sim): exactness when ideal, the direction of every
non-ideality (in expectation over seeds), faults at rates 0 and 1, determinism and parameter validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from basisn.basis import to_basisn
from basisn.hardware.sim import (
    SimConfig,
    _program,
    calibrate,
    crossbar_layers,
    sample_verify_error,
    simulate,
    verify_error_std,
)
from basisn.layers import quantize_uniform
from basisn.models import build_model

SEEDS = range(4)


def _randomise_bn(model: nn.Module, generator: torch.Generator) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    dense = _randomise_bn(build_model("small_resnet", 10, 1), generator)
    with torch.no_grad():
        dense.fc.bias.copy_(torch.randn(10, generator=generator))
    basisn, _ = to_basisn(copy.deepcopy(dense), n_basis=32, segment_len=128, coef_bits=4, basis_bits=8)
    return {"dense": dense, "basisn": basisn.eval()}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(2))


def _run(model, config, mapping, images, seed=0, calibration=None):
    sim = simulate(model, config, mapping, seed, calibration=calibration)
    with torch.no_grad():
        return sim(images)


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


class Odd(nn.Module):
    """Grouped, strided, reflect-padded, 'same'-padded, biased convolutions and a Linear on a 3-D input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=1, padding_mode="reflect")
        self.b = nn.Conv2d(8, 8, 3, padding="same", groups=2, dilation=2)
        self.c = nn.Conv2d(8, 6, (1, 3), padding=(0, 1), bias=False)
        self.d = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(F.relu(self.b(F.relu(self.a(x)))))
        return self.d(x.flatten(2).transpose(1, 2))  # (B, pixels, 6) -> (B, pixels, 5)


class One(nn.Module):
    """A single layer as a model."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


# --------------------------------------------------------------------------------------------------------------
# Exactness.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mapping", ["dense", "basisn"])
def test_ideal_settings_reproduce_the_digital_logits(models, images, mapping):
    model = models[mapping]
    with torch.no_grad():
        reference = model(images)
    out = _run(model, SimConfig.ideal(), mapping, images)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_ideal_settings_cover_groups_strides_and_padding_modes():
    torch.manual_seed(3)
    model = Odd().eval()
    x = torch.randn(2, 3, 16, 16)
    basisn, _ = to_basisn(copy.deepcopy(model), n_basis=8, segment_len=16, coef_bits=None, basis_bits=None)
    for mapping, net in (("dense", model), ("basisn", basisn.eval())):
        with torch.no_grad():
            reference = net(x)
        out = _run(net, SimConfig.ideal(rows=16), mapping, x)
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_basis_held_in_eight_bit_cells_is_exact_and_dense_weights_match_their_quantizer(models, images):
    config = SimConfig.ideal(weight_bits=8, cell_bits=2, on_off_ratio=10.0)
    with torch.no_grad():
        reference = models["basisn"](images)
    torch.testing.assert_close(_run(models["basisn"], config, "basisn", images), reference, rtol=1e-4, atol=1e-5)
    quantized = copy.deepcopy(models["dense"])  # per-output-channel symmetric 8-bit weights
    with torch.no_grad():
        for module in quantized.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                rows = module.weight.reshape(module.weight.shape[0], -1)
                max_abs = rows.abs().amax(1, keepdim=True)
                module.weight.copy_(quantize_uniform(rows, 8, max_abs).reshape(module.weight.shape))
        reference = quantized(images)
    torch.testing.assert_close(_run(models["dense"], config, "dense", images), reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("signed", [True, False])
def test_bit_serial_inputs_equal_the_quantized_input_product(signed):
    torch.manual_seed(4)
    layer = nn.Conv2d(3, 5, 3, padding=1)
    model = One(layer)
    x = torch.randn(4, 3, 6, 6) if signed else torch.rand(4, 3, 6, 6)
    outs = []
    for dac_bits in (1, 3, 8):
        config = SimConfig.ideal(input_bits=8, dac_bits=dac_bits)
        calibration = calibrate(model, config, "dense", x)
        outs.append(_run(model, config, "dense", x, calibration=calibration))
    top = 127 if signed else 255
    scale = float(x.abs().max()) / top
    quantized_x = torch.clamp(torch.round(x / scale), -top if signed else 0, top) * scale
    with torch.no_grad():
        reference = layer(quantized_x)
    for out in outs:
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_an_adc_with_one_level_per_conductance_step_is_lossless():
    """Binary cells, binary inputs, 15 rows, 4-bit ADC over the full-scale current: LSB = one cell's G_on."""
    torch.manual_seed(5)
    model = One(nn.Linear(15, 4))
    x = torch.randn(16, 15)
    base = SimConfig(cell_bits=1, weight_bits=8, input_bits=8, dac_bits=1, on_off_ratio=None, adc_range="full")
    calibration = calibrate(model, base, "dense", x)
    exact = _run(model, base.replace(adc_bits=None), "dense", x, calibration=calibration)
    lossless = _run(model, base.replace(adc_bits=4), "dense", x, calibration=calibration)
    lossy = _run(model, base.replace(adc_bits=3), "dense", x, calibration=calibration)
    torch.testing.assert_close(lossless, exact, rtol=1e-5, atol=1e-6)
    assert _rel(lossy, exact) > 1e-3


@pytest.mark.parametrize("mapping", ["dense", "basisn"])
def test_error_falls_with_adc_bits_and_enough_bits_reproduce_the_digital_logits(models, images, mapping):
    """Analog inputs here: with quantized inputs a tiny upstream change can flip an input code downstream."""
    model = models[mapping]
    base = SimConfig(weight_bits=8, input_bits=None, on_off_ratio=10.0)
    calibration = calibrate(model, base, mapping, images)
    no_adc = _run(model, base.replace(adc_bits=None), mapping, images, calibration=calibration)
    errors = [
        _rel(_run(model, base.replace(adc_bits=bits), mapping, images, calibration=calibration), no_adc)
        for bits in (3, 5, 8, 12, 16)
    ]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4
    if mapping == "basisn":  # the basis fits the cells exactly: no_adc is the digital model itself
        with torch.no_grad():
            torch.testing.assert_close(no_adc, model(images), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Variation and write-verify.
# --------------------------------------------------------------------------------------------------------------
def test_sampled_verify_errors_have_the_stated_spread():
    generator = torch.Generator().manual_seed(6)
    for sigma, tolerance, iters in ((0.1, 0.02, 1), (0.1, 0.02, 10), (0.3, 0.05, 20), (0.05, 0.1, 3), (0.1, 0.0, 5)):
        errors = sample_verify_error((200_000,), sigma, tolerance, iters, generator)
        expected = verify_error_std(sigma, tolerance, iters)
        assert float(errors.std()) == pytest.approx(expected, rel=0.03), (sigma, tolerance, iters)
        assert abs(float(errors.mean())) < 4 * expected / math.sqrt(len(errors))
    assert verify_error_std(0.1, 0.02, 1) == pytest.approx(0.1)
    stds = [verify_error_std(0.1, 0.02, n) for n in (1, 2, 5, 10, 50, 200)]
    assert all(a > b for a, b in zip(stds, stds[1:]))
    assert stds[-1] < 0.02  # converges to the spread inside the acceptance window


def test_more_verify_iterations_never_make_a_cell_less_accurate():
    """Common random numbers: the same seed's cells only get better with more iterations."""
    previous = None
    for iters in (1, 2, 4, 8, 16):
        errors = sample_verify_error((5000,), 0.1, 0.02, iters, torch.Generator().manual_seed(7)).abs()
        if previous is not None:
            assert bool((errors <= previous).all())
        previous = errors


@pytest.mark.parametrize("mapping", ["dense", "basisn"])
def test_error_grows_with_variation_and_falls_with_verify_iterations(models, images, mapping):
    model = models[mapping]
    with torch.no_grad():
        reference = model(images)
    base = SimConfig.ideal(weight_bits=8, verify_tolerance=0.02)

    def mean_error(**changes):
        config = base.replace(**changes)
        return sum(_rel(_run(model, config, mapping, images, seed), reference) for seed in SEEDS) / len(SEEDS)

    by_sigma = [mean_error(sigma_write=s, verify_iters=1, basis_verify_iters=1) for s in (0.0, 0.01, 0.03, 0.1)]
    assert all(a < b for a, b in zip(by_sigma, by_sigma[1:])), by_sigma
    by_iters = [mean_error(sigma_write=0.1, verify_iters=n, basis_verify_iters=n) for n in (1, 3, 10, 30)]
    assert all(a > b for a, b in zip(by_iters, by_iters[1:])), by_iters


def test_read_noise_adds_error_that_grows_with_its_level(models, images):
    model = models["dense"]
    with torch.no_grad():
        reference = model(images)
    errors = [
        sum(_rel(_run(model, SimConfig.ideal(read_noise=level), "dense", images, seed), reference) for seed in SEEDS)
        for level in (0.0, 0.005, 0.02, 0.08)
    ]
    assert errors[0] < 1e-4
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_the_basis_is_programmed_once_for_all_layers(models):
    sim = simulate(models["basisn"], SimConfig.ideal(sigma_write=0.1), "basisn", seed=3)
    arrays = {id(layer.array) for _, layer in crossbar_layers(sim)}
    assert len(arrays) == 1


# --------------------------------------------------------------------------------------------------------------
# Faults.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mapping", ["dense", "basisn"])
@pytest.mark.parametrize("stuck", ["stuck_on", "stuck_off"])
def test_every_cell_stuck_leaves_only_the_digital_bias(models, images, mapping, stuck):
    """Both cells of every differential pair read the same conductance: every weight reads zero."""
    model = models[mapping]
    config = SimConfig(on_off_ratio=10.0, **{stuck: 1.0})
    calibration = calibrate(model, config, mapping, images)
    out = _run(model, config, mapping, images, seed=1, calibration=calibration)
    torch.testing.assert_close(out, model.fc.bias.detach().expand_as(out), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mapping", ["dense", "basisn"])
def test_fault_rate_zero_changes_nothing(models, images, mapping):
    model = models[mapping]
    config = SimConfig.ideal(weight_bits=8, sigma_write=0.05)
    plain = _run(model, config, mapping, images, seed=2)
    zero = _run(model, config.replace(stuck_on=0.0, stuck_off=0.0), mapping, images, seed=2)
    assert torch.equal(plain, zero)
    some = _run(model, config.replace(stuck_on=0.01, stuck_off=0.01), mapping, images, seed=2)
    assert not torch.equal(plain, some)


def test_fault_rates_give_that_fraction_of_stuck_cells():
    config = SimConfig(on_off_ratio=10.0, stuck_on=0.3, stuck_off=0.2)
    generators = {"faults": torch.Generator().manual_seed(8)}
    conductance = _program(torch.ones(100_000, 1), config, 1, generators)  # level 1 of 3: G = 0.4
    assert float((conductance == 1.0).double().mean()) == pytest.approx(0.3, abs=0.01)
    assert float((conductance == 0.1).double().mean()) == pytest.approx(0.2, abs=0.01)


# --------------------------------------------------------------------------------------------------------------
# Seeds, inputs left alone, validation.
# --------------------------------------------------------------------------------------------------------------
def test_seeded_and_leaves_the_model_untouched(models, images):
    model = models["basisn"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = SimConfig.ideal(sigma_write=0.05, read_noise=0.01)
    first = _run(model, config, "basisn", images, seed=5)
    assert torch.equal(first, _run(model, config, "basisn", images, seed=5))
    assert not torch.equal(first, _run(model, config, "basisn", images, seed=6))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_calibration_is_reusable_and_equals_calibrating_on_the_fly(models, images):
    config = SimConfig(on_off_ratio=10.0, sigma_write=0.05)
    calibration = calibrate(models["dense"], config, "dense", images)
    reused = _run(models["dense"], config, "dense", images, seed=1, calibration=calibration)
    sim = simulate(models["dense"], config, "dense", 1, calibration_inputs=images)
    with torch.no_grad():
        assert torch.equal(reused, sim(images))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sigma_write": -0.1}, "sigma_write"),
        ({"sigma_write": float("nan")}, "sigma_write"),
        ({"adc_bits": 0}, "adc_bits"),
        ({"cell_bits": 4, "weight_bits": 3}, "cell_bits"),
        ({"dac_bits": 4, "input_bits": 2}, "dac_bits"),
        ({"stuck_on": 0.7, "stuck_off": 0.5}, "stuck_on + stuck_off"),
        ({"stuck_off": 1.5}, "stuck_off"),
        ({"verify_iters": 0}, "verify_iters"),
        ({"on_off_ratio": 1.0}, "on_off_ratio"),
        ({"adc_range": "auto"}, "adc_range"),
        ({"rows": 2.5}, "rows"),
    ],
)
def test_invalid_parameters_raise_a_one_line_error_naming_them(changes, field):
    with pytest.raises(ValueError, match=r"^" + field.replace("+", r"\+") + r"\b.*not allowed") as error:
        SimConfig(**changes)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="unknown"):
        SimConfig().replace(sigma=0.1)


def test_invalid_uses_raise_clear_errors(models, images):
    with pytest.raises(ValueError, match="mapping='analog'"):
        simulate(models["dense"], SimConfig.ideal(), "analog")
    with pytest.raises(ValueError, match="needs a basis-mapped model"):
        simulate(models["dense"], SimConfig.ideal(), "basisn")
    with pytest.raises(ValueError, match="segment_len=128 .* rows=64"):
        simulate(models["basisn"], SimConfig.ideal(rows=64), "basisn")
    with pytest.raises(ValueError, match="needs a calibration"):
        simulate(models["dense"], SimConfig(), "dense")
    calibration = calibrate(models["dense"], SimConfig(), "dense", images)
    with pytest.raises(ValueError, match="input_bits=8.*input_bits=6"):
        simulate(models["dense"], SimConfig(input_bits=6), "dense", calibration=calibration)
    with pytest.raises(ValueError, match="mapping='dense', not 'basisn'"):
        simulate(models["basisn"], SimConfig(), "basisn", calibration=calibration)
    with pytest.raises(ValueError, match="seed=-1"):
        simulate(models["dense"], SimConfig.ideal(), "dense", seed=-1)
