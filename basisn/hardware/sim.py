"""Functional model of analog RRAM crossbars, usable inside a PyTorch forward pass (docs/method.md §3).

`simulate(model, config, mapping, seed)` returns a copy of a trained model whose weight layers compute their
matrix-vector products the way an RRAM crossbar accelerator would, with every non-ideality a named field of
`SimConfig` (docs/simulation.md states the model, its equations and sources):

* weights -> conductances: signed integer weights on a differential pair of columns, each magnitude bit-sliced
  over ceil(weight_bits / cell_bits) cells of `cell_bits` bits; level l of a cell is G_off + l·(G_on - G_off) /
  (2^cell_bits - 1) with G_on = 1 and G_off = 1 / `on_off_ratio`;
* programming variation that shrinks with write-verify iterations: every write lands N(0, sigma_write^2) (in units
  of G_on - G_off) away from its target; a verify read accepts it if it is within +-`verify_tolerance`, else the
  cell is written again, at most N_wv times (the incremental write-verify loop of Wan et al., Nature 2022,
  Extended Data Fig. 3a). The final error is the first accepted write, or the last one if none was accepted;
* read noise: every cell adds N(0, (read_noise·(G_on - G_off))^2) to each read (additive, as the ~1 % read noise
  of IBM aihwkit's ReRAM models);
* stuck-at-on / stuck-at-off cells at the given rates (the cell reads G_on / G_off whatever was written);
* bit-serial inputs: activations quantized to `input_bits` per layer (signed layers: sign + magnitude, positive and
  negative parts fed in separate passes), fed `dac_bits` bits per step;
* an `adc_bits` ADC on every column, per (layer, weight slice) range calibrated on calibration images (or the
  full-scale current), followed by digital shift-and-add over slices, input steps and crossbar tiles.

Two mappings. `dense`: each layer's unrolled weight (L x O per group, PyTorch's (C_in, kh, kw) order) is tiled
onto crossbars of `rows` rows; every R-row tile's column currents pass the ADC separately. `basisn`: the n basis
vectors (length m = segment_len <= rows) are the crossbar columns, written once with `basis_verify_iters`
iterations and shared by every layer (one set of device errors for the whole network); each layer's input
patches are cut into the segments of `basisn.basis`, every segment's column outputs pass the ADC, and the digital
unit combines them with the layer's quantized coefficients and per-output scale. Everything is vectorised: one
batched matmul per chunk of input steps covers every tile or segment, every slice and polarity.

Determinism: every random draw comes from a `torch.Generator` derived from `seed` (separate streams for
programming errors, faults and read noise, so that changing one non-ideality leaves the others' draws alone).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from basisn.layers import BasisConv2d, BasisLayer, basis_layers, detach_bank_hooks

MAPPINGS = ("basisn", "dense")
ADC_RANGES = ("calibrated", "full")
# Fields that change what a calibration pass measures (input ranges, ideal column currents).
CALIBRATION_FIELDS = ("rows", "cell_bits", "weight_bits", "input_bits", "dac_bits", "on_off_ratio")
# Fields shared with the cost model's HardwareConfig (basisn.hardware.config); `from_hardware` copies them.
HARDWARE_FIELDS = ("rows", "cell_bits", "weight_bits", "input_bits", "dac_bits", "verify_iters")
# Elements of column currents held at once (float32): bounds the memory of one chunk of the simulation.
CHUNK_ELEMENTS = 1 << 20  # 4 MiB: the in-place ADC passes stay in cache


# --------------------------------------------------------------------------------------------------------------
# Configuration.
# --------------------------------------------------------------------------------------------------------------
def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(name: str, value: object, low: int, high: int | None = None, optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"{name}={value!r} is not allowed; use {allowed}" + (" or None" if optional else ""))


def _check_real(name: str, value: object, low: float, high: float | None = None) -> None:
    if not _is_real(value) or not math.isfinite(value) or value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}={value!r} is not allowed; use a finite number {allowed}")


@dataclass(frozen=True)
class SimConfig:
    """Every parameter of the crossbar model; defaults: the cost model's `default` preset, noise off.

    Non-idealities default to off (0) except the quantization steps a real chip cannot avoid (weights, inputs,
    ADC); `SimConfig.ideal()` turns those off too. Sources of the defaults are given next to each value and in
    docs/simulation.md.
    """

    # --- geometry and precision (shared with basisn.hardware.config.HardwareConfig) ---------------------------
    rows: int = 128  # R crossbar rows. ISAAC (Shafiee et al., ISCA 2016) Table I: 128x128 arrays.
    cell_bits: int = 2  # bits per RRAM cell. ISAAC Table I: 2 bits per cell.
    weight_bits: int | None = (
        8  # signed weight precision (2^(b-1)-1 levels per sign). docs/method.md §1.1; None: analog
    )
    input_bits: int | None = 8  # activation precision. docs/method.md §2.4 (T_in = 8); None: analog inputs (ideal DAC)
    dac_bits: int = 1  # bits per input step (bit-serial). ISAAC Table I: 1-bit DACs.
    adc_bits: int | None = 8  # ADC resolution per column. ISAAC Table I: 8-bit ADCs; None: ideal ADC.
    adc_range: str = "calibrated"  # "calibrated": max ideal current on calibration images; "full": max possible
    on_off_ratio: float | None = 10.0  # G_on/G_off. NeuroSim DNN_NeuroSim_V1.4 inference.py --onoffratio default
    # 10; None: G_off = 0.
    # --- programming (write-verify) ------------------------------------------------------------------------------
    sigma_write: float = 0.0  # spread of one write, in units of G_on - G_off (off by default; swept).
    verify_tolerance: float = 0.02  # accept a write within +-2 % of the range: the 2 % acceptance range of
    # IBM aihwkit's ReRamCMONoiseModel program-and-verify data (there relative to the target conductance).
    verify_iters: int = 10  # N_wv for weights written by the reprogramming chip (dense mapping). Cost model
    # default preset (basisn.hardware.config.HardwareConfig.verify_iters).
    basis_verify_iters: int = 100  # N_wv for the BasisN basis, written once. Our assumption (the one-time cost
    # is reported by the cost model); swept by the robustness stage.
    # --- reading -----------------------------------------------------------------------------------------------
    read_noise: float = 0.0  # per cell and read, in units of G_on - G_off (off by default; aihwkit: ~1 %).
    stuck_on: float = 0.0  # fraction of cells stuck at G_on (off by default).
    stuck_off: float = 0.0  # fraction of cells stuck at G_off (off by default).

    def __post_init__(self) -> None:
        _check_int("rows", self.rows, 1)
        _check_int("cell_bits", self.cell_bits, 1, 8)
        _check_int("weight_bits", self.weight_bits, 2, 16, optional=True)
        _check_int("input_bits", self.input_bits, 2, 16, optional=True)
        _check_int("dac_bits", self.dac_bits, 1, 16)
        _check_int("adc_bits", self.adc_bits, 1, 24, optional=True)
        _check_int("verify_iters", self.verify_iters, 1)
        _check_int("basis_verify_iters", self.basis_verify_iters, 1)
        if self.weight_bits is not None and self.cell_bits > self.weight_bits:
            raise ValueError(f"cell_bits={self.cell_bits} is not allowed; use at most weight_bits={self.weight_bits}")
        if self.input_bits is not None and self.dac_bits > self.input_bits:
            raise ValueError(f"dac_bits={self.dac_bits} is not allowed; use at most input_bits={self.input_bits}")
        if self.adc_range not in ADC_RANGES:
            raise ValueError(f"adc_range={self.adc_range!r} is not allowed; use one of {', '.join(ADC_RANGES)}")
        if self.on_off_ratio is not None and (
            not _is_real(self.on_off_ratio) or not math.isfinite(self.on_off_ratio) or self.on_off_ratio <= 1
        ):
            raise ValueError(f"on_off_ratio={self.on_off_ratio!r} is not allowed; use a finite number > 1 or None")
        for name in ("sigma_write", "verify_tolerance", "read_noise"):
            _check_real(name, getattr(self, name), 0.0)
        for name in ("stuck_on", "stuck_off"):
            _check_real(name, getattr(self, name), 0.0, 1.0)
        if self.stuck_on + self.stuck_off > 1:
            raise ValueError(
                f"stuck_on + stuck_off = {self.stuck_on + self.stuck_off!r} is not allowed; use a sum <= 1"
            )

    @classmethod
    def ideal(cls, **changes: Any) -> SimConfig:
        """Every non-ideality off: analog weights and inputs, ideal ADC, no offset, noise or faults."""
        values = dict(weight_bits=None, input_bits=None, adc_bits=None, on_off_ratio=None)
        values.update(changes)
        return cls(**values)

    @classmethod
    def from_hardware(cls, hardware: Any, **changes: Any) -> SimConfig:
        """The fields shared with a cost-model `HardwareConfig` (rows, cell and weight bits, ...) taken from it."""
        values = {name: getattr(hardware, name) for name in HARDWARE_FIELDS}
        values.update(changes)
        return cls(**values)

    def replace(self, **changes: Any) -> SimConfig:
        """A validated copy with some fields changed; unknown names raise ValueError."""
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise ValueError(f"sim field {unknown[0]!r} is unknown; allowed: {', '.join(FIELD_NAMES)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def g_off(self) -> float:
        """G_off in units of G_on."""
        return 0.0 if self.on_off_ratio is None else 1.0 / self.on_off_ratio

    def needs_calibration(self) -> bool:
        """Quantized inputs need per-layer input ranges; a calibrated ADC needs per-layer current ranges."""
        return self.input_bits is not None or (self.adc_bits is not None and self.adc_range == "calibrated")

    def verify_iters_for(self, mapping: str) -> int:
        """Write-verify iterations of the cells a mapping programs: the basis (basisn) or the weights (dense)."""
        _check_mapping(mapping)
        return self.basis_verify_iters if mapping == "basisn" else self.verify_iters


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SimConfig))


def _check_mapping(mapping: object) -> None:
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping={mapping!r} is not allowed; use one of {', '.join(MAPPINGS)}")


# --------------------------------------------------------------------------------------------------------------
# Programming variation under write-verify.
# --------------------------------------------------------------------------------------------------------------
def _normal_tail(a: float) -> float:
    """P(Z < -a) for a standard normal Z."""
    return 0.5 * math.erfc(a / math.sqrt(2.0))


def verify_reject_probability(sigma_write: float, tolerance: float) -> float:
    """p = P(|e| > tolerance) for one write e ~ N(0, sigma_write^2): the chance a verify read rejects a write."""
    _check_real("sigma_write", sigma_write, 0.0)
    _check_real("verify_tolerance", tolerance, 0.0)
    if sigma_write == 0:
        return 0.0
    return 2.0 * _normal_tail(tolerance / sigma_write)


def verify_error_std(sigma_write: float, tolerance: float, iters: int) -> float:
    """Standard deviation of the programmed error after at most `iters` write-verify iterations.

    With a = tolerance / sigma_write, p = P(|Z| > a) and q = p^iters (no write accepted):
    Var = (1 - q)·Var(e | |e| <= tol) + q·Var(e | |e| > tol), where for Z ~ N(0, 1)
    Var(Z | |Z| <= a) = 1 - 2a·phi(a) / (1 - p) and Var(Z | |Z| > a) = 1 + 2a·phi(a) / p.
    """
    _check_int("iters", iters, 1)
    p = verify_reject_probability(sigma_write, tolerance)
    if sigma_write == 0:
        return 0.0
    a = tolerance / sigma_write
    density = math.exp(-0.5 * a * a) / math.sqrt(2.0 * math.pi)
    var_in = 1.0 - 2.0 * a * density / (1.0 - p) if p < 1 else 0.0
    var_out = 1.0 + 2.0 * a * density / p if p > 0 else 0.0
    q = p**iters
    return sigma_write * math.sqrt(max((1.0 - q) * var_in + q * var_out, 0.0))


def sample_verify_error(
    shape: tuple[int, ...] | torch.Size,
    sigma_write: float,
    tolerance: float,
    iters: int,
    generator: torch.Generator,
) -> Tensor:
    """Programming errors (float64, units of G_on - G_off) of cells written with at most `iters` verify rounds.

    Exact sampling of the write-verify loop: a cell keeps its first write inside +-tolerance, else its last write
    (outside). Three uniforms per cell are always drawn (branch, value, sign), so the same seed gives common random
    numbers across sigma_write and iters: a larger spread or fewer iterations never makes a cell more accurate.
    """
    _check_int("iters", iters, 1)
    p = verify_reject_probability(sigma_write, tolerance)
    if sigma_write == 0:
        return torch.zeros(shape, dtype=torch.float64)
    u = torch.rand((3, *shape), generator=generator, dtype=torch.float64)
    tail = _normal_tail(tolerance / sigma_write)  # P(Z < -a)
    inside = torch.special.ndtri(tail + u[1] * (1.0 - 2.0 * tail))
    tiny = torch.finfo(torch.float64).tiny
    outside = -torch.special.ndtri((u[1] * tail).clamp_min(tiny)) * torch.where(u[2] < 0.5, -1.0, 1.0)
    z = torch.where(u[0] < p**iters, outside, inside)
    return sigma_write * z


# --------------------------------------------------------------------------------------------------------------
# Weights -> integer levels -> conductances.
# --------------------------------------------------------------------------------------------------------------
def _slices(config: SimConfig) -> int:
    return 1 if config.weight_bits is None else -(-config.weight_bits // config.cell_bits)


def _level_max(config: SimConfig) -> float:
    return 1.0 if config.weight_bits is None else float(2**config.cell_bits - 1)


def _slice_weights(config: SimConfig) -> Tensor:
    """Significance of each slice in units of the weight integer: 2^(cell_bits·s)."""
    if config.weight_bits is None:
        return torch.ones(1, dtype=torch.float64)
    return torch.tensor([2.0 ** (config.cell_bits * s) for s in range(_slices(config))], dtype=torch.float64)


def _to_levels(integers: Tensor, config: SimConfig) -> Tensor:
    """Signed integers (or analog values in [-1, 1]) -> cell levels (..., slices, 2): magnitude split over slices,
    positive part on the first column of the differential pair, negative part on the second."""
    parts = torch.stack([integers.clamp_min(0), (-integers).clamp_min(0)], dim=-1)  # (..., 2)
    if config.weight_bits is None:
        return parts.unsqueeze(-2)  # (..., 1, 2): one analog cell per polarity
    base = 2**config.cell_bits
    powers = torch.tensor([base**s for s in range(_slices(config))], dtype=parts.dtype, device=parts.device)
    return torch.remainder(torch.floor(parts.unsqueeze(-2) / powers[:, None]), base)  # (..., slices, 2)


def _weight_integers(rows: Tensor, config: SimConfig) -> tuple[Tensor, Tensor]:
    """Dense weights (O x L) -> (integers, per-output scale) with the symmetric quantizer of basisn.layers."""
    max_abs = rows.abs().amax(dim=1)
    top = 1.0 if config.weight_bits is None else float(2 ** (config.weight_bits - 1) - 1)
    scale = torch.where(max_abs > 0, max_abs / top, torch.ones_like(max_abs))
    integers = rows / scale[:, None]
    if config.weight_bits is not None:
        integers = torch.clamp(torch.round(integers), -top, top)
    return integers, scale


def _basis_integers(basis: Tensor, basis_bits: int | None, config: SimConfig) -> tuple[Tensor, float]:
    """The (quantized) basis -> (integers, one scale). The bank's own grid is kept when the cells can hold it, so
    the crossbar stores exactly the basis the digital model uses; otherwise it is re-quantized to weight_bits."""
    max_abs = float(basis.abs().max())
    if max_abs == 0:
        return torch.zeros_like(basis), 1.0
    if config.weight_bits is None:
        return basis / max_abs, max_abs
    if basis_bits is not None and basis_bits <= config.weight_bits:
        step = max_abs / (2 ** (basis_bits - 1) - 1)
        return torch.round(basis / step), step
    top = 2 ** (config.weight_bits - 1) - 1
    step = max_abs / top
    return torch.clamp(torch.round(basis / step), -top, top), step


def _program(levels: Tensor, config: SimConfig, iters: int, generators: dict[str, torch.Generator]) -> Tensor:
    """Target levels -> programmed conductances (units of G_on): variation after write-verify, then faults."""
    g_off = config.g_off
    g_range = 1.0 - g_off
    conductance = g_off + levels.to(torch.float64) * (g_range / _level_max(config))
    if config.sigma_write > 0:
        error = sample_verify_error(
            levels.shape, config.sigma_write, config.verify_tolerance, iters, generators["variation"]
        )
        conductance = (conductance + error.to(conductance.device) * g_range).clamp_min(0.0)
    if config.stuck_on > 0 or config.stuck_off > 0:
        u = torch.rand(levels.shape, generator=generators["faults"], dtype=torch.float64).to(conductance.device)
        conductance = torch.where(u < config.stuck_on, torch.ones_like(conductance), conductance)
        stuck_off = (u >= config.stuck_on) & (u < config.stuck_on + config.stuck_off)
        conductance = torch.where(stuck_off, torch.full_like(conductance, g_off), conductance)
    return conductance


# --------------------------------------------------------------------------------------------------------------
# Calibration records.
# --------------------------------------------------------------------------------------------------------------
@dataclass
class LayerCalibration:
    """What a calibration pass measured at one layer: its input range and its largest ideal column currents."""

    input_max: float = 0.0  # max |x| over the calibration images
    signed: bool = False  # did the layer see negative inputs? (then sign + magnitude passes)
    current_max: Tensor | None = None  # (slices,) largest ideal column current per weight slice

    def update(self, x: Tensor) -> None:
        self.input_max = max(self.input_max, float(x.detach().abs().max()) if x.numel() else 0.0)
        self.signed = self.signed or bool((x < 0).any())

    def update_currents(self, per_slice_max: Tensor) -> None:
        per_slice_max = per_slice_max.detach().to("cpu", torch.float64)
        self.current_max = per_slice_max if self.current_max is None else torch.maximum(self.current_max, per_slice_max)


@dataclass
class Calibration:
    """Per-layer ranges for one (model, mapping, calibration-relevant config); reusable across seeds and noise."""

    mapping: str
    key: dict[str, Any]
    layers: dict[str, LayerCalibration] = field(default_factory=dict)
    images: int = 0

    def check(self, config: SimConfig, mapping: str) -> None:
        if mapping != self.mapping:
            raise ValueError(f"calibration was made for mapping={self.mapping!r}, not {mapping!r}; recalibrate")
        for name in CALIBRATION_FIELDS:
            if getattr(config, name) != self.key[name]:
                raise ValueError(
                    f"calibration was made with {name}={self.key[name]!r}, the config has "
                    f"{name}={getattr(config, name)!r}; recalibrate"
                )


# --------------------------------------------------------------------------------------------------------------
# The crossbar layer.
# --------------------------------------------------------------------------------------------------------------
class _Context:
    """State shared by the crossbar layers of one simulated model (plain object: not part of state_dict)."""

    def __init__(self, config: SimConfig, mapping: str, seed: int, device: torch.device) -> None:
        self.config, self.mapping, self.seed = config, mapping, seed
        self.noise_generator = torch.Generator(device=device).manual_seed(_derive_seed(seed, 2))
        self.calibration: Calibration | None = None
        self.calibrating = False


def _derive_seed(seed: int, stream: int) -> int:
    """Independent generator seeds per purpose (0 variation, 1 faults, 2 read noise) from one user seed."""
    return (seed * 0x9E3779B1 + stream * 0x85EBCA77 + 0x27D4EB2F) % (2**63 - 1)


@dataclass
class _Array:
    """Programmed conductances: (groups, rows, units·slices·2) for a dense layer, (1, m, n·slices·2) for the
    shared basis. `block` is the rows of one crossbar tile (R) or one segment (m)."""

    conductance: Tensor
    block: int
    units: int
    shared: bool


class CrossbarLayer(nn.Module):
    """A Conv2d/Linear (dense mapping) or BasisConv2d/BasisLinear (basisn mapping) computed on crossbars.

    Inference only (runs under no_grad). The layer's digital part (slice shift-add, input-step accumulation, the
    BasisN coefficient combination, scales, bias) is exact; everything analog goes through the crossbar model.
    """

    def __init__(
        self,
        name: str,
        source: nn.Module,
        array: _Array,
        combine: Tensor,
        context: _Context,
        mapping: str,
    ) -> None:
        super().__init__()
        self.name, self.mapping = name, mapping
        self.kind = "conv" if isinstance(source, nn.Conv2d | BasisConv2d) else "linear"
        object.__setattr__(self, "array", array)  # the basis array is shared: keep it out of module state
        object.__setattr__(self, "context", context)
        # dense: per-output scale (groups, O'); basisn: coefficients·scale·basis step (groups, O', S·n)
        self.register_buffer("combine", combine)
        bias = source.bias.detach().clone() if source.bias is not None else None
        self.register_buffer("bias", bias)
        self.groups = getattr(source, "groups", 1)
        if self.kind == "conv":
            self.kernel_size = _pair(source.kernel_size)
            self.stride, self.dilation = _pair(source.stride), _pair(source.dilation)
            self.padding, self.padding_mode = source.padding, source.padding_mode
            self.reversed_padding = getattr(source, "_reversed_padding_repeated_twice", None)
            self.out_channels = source.out_channels
            self.row_len = (source.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        else:
            self.out_channels = source.out_features
            self.row_len = source.in_features

    def extra_repr(self) -> str:
        return f"{self.name!r}, {self.kind}, mapping={self.mapping}, rows={self.row_len}, out={self.out_channels}"

    # --- inputs -> (groups, B·P, L) patch rows ------------------------------------------------------------------
    def _patches(self, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
        if self.kind == "linear":
            lead = x.shape[:-1]
            return x.reshape(1, -1, x.shape[-1]), (*lead, self.out_channels)
        if self.padding_mode != "zeros":
            x = F.pad(x, self.reversed_padding, mode=self.padding_mode)
            padding: Any = (0, 0)
        elif isinstance(self.padding, str):
            x, padding = _pad_same(x, self.padding, self.kernel_size, self.dilation), (0, 0)
        else:
            padding = _pair(self.padding)
        batch, _, height, width = x.shape
        out_h = (height + 2 * padding[0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        out_w = (width + 2 * padding[1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, self.dilation, padding, self.stride)  # (B, C·kh·kw, P)
        pixels = cols.shape[-1]
        cols = cols.view(batch, self.groups, self.row_len, pixels).permute(1, 0, 3, 2)
        return cols.reshape(self.groups, batch * pixels, self.row_len), (batch, out_h, out_w)

    def _output(self, out: Tensor, shape: tuple[int, ...]) -> Tensor:
        """(groups, B·P, O') -> the layer's output layout, plus bias."""
        if self.kind == "linear":
            out = out[0]
            if self.bias is not None:
                out = out + self.bias
            return out.reshape(shape)
        batch, out_h, out_w = shape
        out = out.view(self.groups, batch, out_h * out_w, -1).permute(1, 0, 3, 2)
        out = out.reshape(batch, self.out_channels, out_h, out_w)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    # --- the analog part ------------------------------------------------------------------------------------------
    def _input_encoding(self, x: Tensor) -> tuple[Tensor, list[tuple[int, int, int]], Tensor, float]:
        """Inputs -> (sources, steps, digital weight of each step, largest DAC level).

        Quantized inputs: one source, the `input_bits`-bit code u of every input (two's complement for a layer
        that saw negative inputs), fed `dac_bits` bits per step: step (0, shift, width) drives the rows with
        floor(u / 2^shift) mod 2^width. The sign bit of a signed code carries weight -2^(input_bits-1) (a separate
        step when it shares a DAC step with other bits), so a layer always takes ceil(input_bits / dac_bits)
        steps, plus one for such a sign bit. Analog inputs (input_bits=None): x+ and x- scaled to [0, 1], one
        step each.
        """
        config, context = self.context.config, self.context
        record = self._record()
        if record is not None:
            record.update(x)
        calibrated = context.calibration.layers.get(self.name) if context.calibration is not None else None
        source = record or calibrated
        if source is not None:
            input_max, signed = source.input_max, source.signed
        else:  # no calibration (analog inputs): the range of this batch
            input_max, signed = float(x.abs().max()) if x.numel() else 0.0, bool((x < 0).any())
        if config.input_bits is None:
            scale = input_max if input_max > 0 else 1.0
            values = x / scale
            sources = (
                torch.stack([values.clamp_min(0), (-values).clamp_min(0)]) if signed else values.clamp_min(0)[None]
            )
            steps = [(part, 0, 0) for part in range(len(sources))]
            weights = [scale if part == 0 else -scale for part in range(len(sources))]
            return sources, steps, torch.tensor(weights, dtype=x.dtype, device=x.device), 1.0
        bits, dac = config.input_bits, config.dac_bits
        top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        scale = input_max / top if input_max > 0 else 1.0
        code = torch.clamp(torch.round(x / scale), -top if signed else 0, top)
        if signed:
            code = torch.remainder(code, 2**bits)  # two's complement code in [0, 2^bits)
        steps = [(0, shift, min(dac, bits - shift)) for shift in range(0, bits, dac)]
        weights = [scale * 2.0**shift for _, shift, _ in steps]
        if signed:
            if steps[-1][2] == 1:  # the sign bit has a step of its own
                weights[-1] = -scale * 2.0 ** (bits - 1)
            else:  # it was fed with +2^(bits-1) inside the top step: take 2^bits back
                steps.append((0, bits - 1, 1))
                weights.append(-scale * 2.0**bits)
        return code[None], steps, torch.tensor(weights, dtype=x.dtype, device=x.device), float(2**dac - 1)

    def _step_inputs(self, sources: Tensor, steps: list[tuple[int, int, int]]) -> Tensor:
        """DAC levels of the given input steps, stacked: (steps, groups, B·P, L)."""
        if self.context.config.input_bits is None:
            return sources[[part for part, _, _ in steps]]
        code = sources[0].to(torch.int32)
        out = sources.new_empty((len(steps), *code.shape))
        for index, (_, shift, width) in enumerate(steps):
            out[index] = torch.bitwise_and(torch.bitwise_right_shift(code, shift), 2**width - 1)
        return out

    def _record(self) -> LayerCalibration | None:
        context = self.context
        if not context.calibrating:
            return None
        return context.calibration.layers.setdefault(self.name, LayerCalibration())

    def _adc_range(self, dac_max: float) -> Tensor | None:
        config, context = self.context.config, self.context
        if config.adc_bits is None or context.calibrating:
            return None
        if config.adc_range == "full":
            rows = min(self.array.block, self.row_len)
            return torch.full((_slices(config),), rows * dac_max, dtype=torch.float64)
        layer = context.calibration.layers.get(self.name) if context.calibration is not None else None
        if layer is None or layer.current_max is None:
            raise ValueError(f"layer {self.name!r} has no calibrated ADC range; simulate with a calibration")
        return layer.current_max

    def _readout(self, adc_range: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
        """(conductances, output weight per column, per-column 1/LSB or None), cached per ADC range.

        With an ADC the columns of the conductance matrix are pre-divided by their LSB, so the matmul yields the
        currents in ADC steps and the ADC is just round + clip; the shift-and-add weights carry the LSB back.
        """
        config = self.context.config
        key = (None if adc_range is None else tuple(adc_range.tolist()), dtype)
        cached = self.__dict__.get("_readout_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        slices = _slices(config)
        weights = _slice_weights(config).repeat_interleave(2) * torch.tensor([1.0, -1.0]).repeat(slices)
        weights = (weights * (_level_max(config) / (1.0 - config.g_off))).repeat(self.array.units)  # per column
        conductance = self.array.conductance.to(torch.float64)
        inverse = None
        if adc_range is not None:
            lsb = (adc_range.to(torch.float64) / (2**config.adc_bits - 1)).clamp_min(1e-30)
            lsb = lsb.repeat_interleave(2).repeat(self.array.units)  # per column: (units, slices, 2) order
            conductance = conductance / lsb.to(conductance.device)
            weights = weights * lsb
            inverse = (1.0 / lsb).to(dtype)
        device = self.array.conductance.device
        result = (conductance.to(dtype), weights.to(device, dtype), None if inverse is None else inverse.to(device))
        self.__dict__["_readout_cache"] = (key, result)
        return result

    def _tile_outputs(self, x: Tensor, adc_range: Tensor | None) -> Tensor:
        """DAC levels (groups, M, L) -> digitised, slice-recombined outputs (groups, M, tiles, units).

        Every tile (dense: R rows of the layer; basisn: one m-row segment on the shared basis) is one crossbar read:
        its column currents get read noise and the ADC before the digital shift-and-add over slices.
        """
        array = self.array
        conductance, weights, inverse = self._readout(adc_range, x.dtype)
        full, rest = divmod(x.shape[-1], array.block)
        outputs = []
        if full:
            xf = x[..., : full * array.block].unflatten(-1, (full, array.block))  # (g, M, k, r)
            if array.shared:  # one plain matmul over every segment of every position
                currents = (xf.reshape(-1, array.block) @ conductance[0]).view(*xf.shape[:-1], -1)
            else:
                g_full = conductance[:, : full * array.block].unflatten(1, (full, array.block))
                currents = torch.einsum("gmkr,gkrc->gmkc", xf, g_full)
            outputs.append(self._read_out(currents, xf, weights, inverse))
        if rest:
            xr = x[..., full * array.block :]
            g_rest = conductance[0, :rest] if array.shared else conductance[:, full * array.block :]
            if array.shared:
                currents = (xr.reshape(-1, rest) @ g_rest).view(*xr.shape[:-1], 1, -1)
            else:
                currents = torch.bmm(xr.contiguous(), g_rest).unsqueeze(2)
            outputs.append(self._read_out(currents, xr.unsqueeze(2), weights, inverse))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)

    def _read_out(self, currents: Tensor, inputs: Tensor, weights: Tensor, inverse: Tensor | None) -> Tensor:
        """Column currents (g, M, k, columns) -> recombined outputs (g, M, k, units), in place.

        Per column: + read noise, then the ADC (currents arrive in LSB units: round, clip to [0, 2^adc_bits - 1]);
        the digital shift-and-add over slices and the differential pair is one weighted sum per unit.
        """
        config, context = self.context.config, self.context
        units = self.array.units
        record = self._record()
        if record is not None:
            per_slice = currents.unflatten(-1, (units, _slices(config), 2)).amax(dim=(0, 1, 2, 3, 5))
            record.update_currents(per_slice)
        if config.read_noise > 0 and not context.calibrating:
            spread = inputs.square().sum(-1).sqrt_().mul_(config.read_noise * (1.0 - config.g_off))  # (g, M, k)
            noise = torch.randn(
                currents.shape, generator=context.noise_generator, dtype=currents.dtype, device=currents.device
            )
            if inverse is not None:
                noise.mul_(inverse)
            currents.addcmul_(noise, spread[..., None])
        if inverse is not None:
            currents.round_().clamp_(0, 2**config.adc_bits - 1)
        columns = currents.shape[-1] // units
        return currents.unflatten(-1, (units, columns)) @ weights[:columns]  # same weights for every unit

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        patches, shape = self._patches(x)
        sources, steps, step_weights, dac_max = self._input_encoding(patches)
        adc_range = self._adc_range(dac_max)
        groups, positions, rows_total = patches.shape
        tiles = -(-rows_total // self.array.block)
        per_position = tiles * self.array.units * _slices(self.context.config) * 2
        chunk_positions = max(1, min(positions, CHUNK_ELEMENTS // max(per_position * groups, 1)))
        chunk_steps = max(1, min(len(steps), CHUNK_ELEMENTS // max(per_position * groups * chunk_positions, 1)))
        accumulated = patches.new_zeros(groups, positions, tiles, self.array.units)
        for start in range(0, positions, chunk_positions):
            stop = min(positions, start + chunk_positions)
            for first in range(0, len(steps), chunk_steps):
                chosen = steps[first : first + chunk_steps]
                levels = self._step_inputs(sources[:, :, start:stop], chosen)  # (t, g, m, L)
                t = len(chosen)
                flat = levels.permute(1, 0, 2, 3).reshape(groups, t * (stop - start), rows_total)
                out = self._tile_outputs(flat, adc_range).unflatten(1, (t, stop - start))  # (g, t, m, k, u)
                weights = step_weights[first : first + chunk_steps].view(1, t, 1, 1, 1)
                accumulated[:, start:stop] += (out * weights).sum(1)
        if self.mapping == "dense" or self.combine.dim() == 2:
            out = accumulated.sum(2) * self.combine.unsqueeze(1)  # (g, B·P, O')
        else:
            out = accumulated.flatten(2) @ self.combine.transpose(1, 2)  # (g, B·P, S·n) @ (g, S·n, O')
        return self._output(out, shape)


def _pad_same(x: Tensor, padding: str, kernel: tuple[int, int], dilation: tuple[int, int]) -> Tensor:
    """nn.Conv2d's padding='same'/'valid' made explicit (F.unfold takes only symmetric integer padding)."""
    if padding == "valid":
        return x
    pads = []
    for k, d in zip(reversed(kernel), reversed(dilation)):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


# --------------------------------------------------------------------------------------------------------------
# Building a simulated model.
# --------------------------------------------------------------------------------------------------------------
def _generators(seed: int) -> dict[str, torch.Generator]:
    return {
        "variation": torch.Generator().manual_seed(_derive_seed(seed, 0)),
        "faults": torch.Generator().manual_seed(_derive_seed(seed, 1)),
    }


def _dense_layer(name: str, module: nn.Module, config: SimConfig, generators: dict, context: _Context) -> CrossbarLayer:
    weight = module.weight.detach()
    groups = getattr(module, "groups", 1)
    out_per_group = weight.shape[0] // groups
    rows = weight.reshape(weight.shape[0], -1).to(torch.float64)
    integers, scale = _weight_integers(rows, config)
    # (O, L) -> (g, L, O') -> levels (g, L, O', slices, 2)
    integers = integers.view(groups, out_per_group, -1).transpose(1, 2)
    levels = _to_levels(integers, config)
    conductance = _program(levels, config, config.verify_iters, generators)
    array = _Array(conductance.flatten(2).to(weight.dtype), config.rows, out_per_group, shared=False)
    combine = scale.view(groups, out_per_group).to(weight.dtype)
    return CrossbarLayer(name, module, array, combine, context, "dense")


def _basis_array(bank: nn.Module, config: SimConfig, generators: dict) -> tuple[_Array, float]:
    if bank.segment_len > config.rows:
        raise ValueError(
            f"segment_len={bank.segment_len} of the model's basis is not allowed with rows={config.rows}; "
            "a segment must fit in the rows of one crossbar"
        )
    with torch.no_grad():
        basis = bank.quantized().detach().to(torch.float64)  # (n, m)
    integers, step = _basis_integers(basis, bank.basis_bits, config)
    levels = _to_levels(integers.T, config)  # (m, n, slices, 2)
    conductance = _program(levels, config, config.basis_verify_iters, generators)
    array = _Array(conductance.flatten(1).unsqueeze(0).to(bank.weight.dtype), bank.segment_len, bank.n_basis, True)
    return array, step


def _basis_layer(name: str, layer: BasisLayer, array: _Array, step: float, context: _Context) -> CrossbarLayer:
    with torch.no_grad():
        coefs = layer.quantized_coefficients().detach() * layer.scale.detach()[:, None, None] * step  # (O, S, n)
    groups = getattr(layer, "groups", 1)
    combine = coefs.reshape(groups, layer.out_rows // groups, -1)
    return CrossbarLayer(name, layer, array, combine, context, "basisn")


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def _build(model: nn.Module, config: SimConfig, mapping: str, seed: int) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is not allowed; pass a torch.nn.Module")
    if not isinstance(config, SimConfig):
        raise ValueError(f"config={type(config).__name__} is not allowed; pass a basisn.hardware.sim.SimConfig")
    _check_mapping(mapping)
    _check_int("seed", seed, 0)
    has_bank = hasattr(model, "basisn_bank")
    if mapping == "basisn" and not has_bank:
        raise ValueError("mapping='basisn' needs a basis-mapped model (from to_basisn / load_model of a BasisN file)")
    if mapping == "dense" and has_bank:
        from basisn.basis import to_dense

        sim = to_dense(model)  # the same (rebuilt) weights, reprogrammed layer by layer
    else:
        sim = copy.deepcopy(model)
    sim.eval()
    reference = next(iter(sim.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    context = _Context(config, mapping, seed, device)
    generators = _generators(seed)
    targets: list[tuple[str, nn.Module]] = []
    if mapping == "basisn":
        bank = sim.basisn_bank
        array, step = _basis_array(bank, config, generators)
        for name, layer in basis_layers(sim):
            targets.append((name, _basis_layer(name, layer, array, step, context)))
    mapped = {name for name, _ in targets}
    for name, module in sim.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and name not in mapped:
            targets.append((name, _dense_layer(name, module, config, generators, context)))
    if not targets:
        raise ValueError("model has no nn.Conv2d / nn.Linear / basis-mapped layer to put on crossbars")
    for name, module in targets:
        _replace(sim, name, module)
    if mapping == "basisn":
        detach_bank_hooks(sim)
        del sim.basisn_bank
    sim.crossbar_context = context
    return sim


def calibrate(
    model: nn.Module, config: SimConfig, mapping: str, inputs: Tensor, batch_size: int | None = None
) -> Calibration:
    """Measure per-layer input ranges and ideal column-current ranges on `inputs` (design-time calibration).

    Runs the mapping with ideal devices (no variation, noise, faults or ADC) but the config's quantization, so
    the result holds for every seed and noise level of configs sharing CALIBRATION_FIELDS.
    """
    if not isinstance(inputs, Tensor) or inputs.ndim < 2 or len(inputs) == 0:
        raise ValueError("inputs must be a non-empty batch tensor (N x ...) of calibration images")
    ideal = config.replace(sigma_write=0.0, read_noise=0.0, stuck_on=0.0, stuck_off=0.0, adc_bits=None)
    sim = _build(model, ideal, mapping, 0)
    calibration = Calibration(mapping, {name: getattr(config, name) for name in CALIBRATION_FIELDS})
    context: _Context = sim.crossbar_context
    context.calibration, context.calibrating = calibration, True
    batch_size = batch_size or len(inputs)
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            sim(inputs[start : start + batch_size])
    context.calibrating = False
    calibration.images = len(inputs)
    return calibration


def simulate(
    model: nn.Module,
    config: SimConfig,
    mapping: str = "basisn",
    seed: int = 0,
    calibration: Calibration | None = None,
    calibration_inputs: Tensor | None = None,
) -> nn.Module:
    """A copy of `model` whose weight layers run on simulated crossbars, programmed with `seed`.

    mapping="basisn" needs a basis-mapped model; mapping="dense" takes a dense model (or a BasisN model, whose
    rebuilt weights are then programmed densely). Quantized inputs or a calibrated ADC need a `calibration`
    (from `calibrate`) or `calibration_inputs` to make one. The input model is left untouched.
    """
    _check_mapping(mapping)
    if calibration is None and calibration_inputs is not None:
        calibration = calibrate(model, config, mapping, calibration_inputs)
    if calibration is None and isinstance(config, SimConfig) and config.needs_calibration():
        raise ValueError(
            f"config with input_bits={config.input_bits}, adc_bits={config.adc_bits}, "
            f"adc_range={config.adc_range!r} needs a calibration; pass calibration= or calibration_inputs="
        )
    if calibration is not None:
        if not isinstance(calibration, Calibration):
            raise ValueError(f"calibration={type(calibration).__name__} is not allowed; pass a Calibration")
        calibration.check(config, mapping)
    sim = _build(model, config, mapping, seed)
    sim.crossbar_context.calibration = calibration
    return sim


def crossbar_layers(model: nn.Module) -> list[tuple[str, CrossbarLayer]]:
    """(name, layer) of every simulated layer of a model returned by `simulate`."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, CrossbarLayer)]


__all__ = [
    "ADC_RANGES",
    "MAPPINGS",
    "Calibration",
    "CrossbarLayer",
    "LayerCalibration",
    "SimConfig",
    "calibrate",
    "crossbar_layers",
    "sample_verify_error",
    "simulate",
    "verify_error_std",
    "verify_reject_probability",
]
