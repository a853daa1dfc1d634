"""The hardware description of the cost model (docs/method.md §2.1) and its named presets.

Every constant cites its source next to its value; `docs/hardware.md` repeats them in one table. Units are SI
(seconds, joules, watts). Where a write constant is uncertain we take the value that favours the reprogramming
baseline (cheap and fast writes), and its sensitivity is swept in `hw-eval`. Not every choice favours the
baseline, though: docs/hardware.md section 4 lists every modelling choice with the side it favours and its
measured size (`basisn.hardware.choices_table`).

Sources (full references in docs/hardware.md):
- ISAAC: A. Shafiee et al., "ISAAC: A Convolutional Neural Network Accelerator with In-Situ Analog Arithmetic in
  Crossbars", ISCA 2016, Table I (32 nm; per IMA: 8 arrays 128x128 at 2 bits/cell = 2.4 mW, 8x128 1-bit DACs =
  4 mW, 8x128 sample-and-hold = 10 uW, 8 ADCs 8-bit 1.2 GS/s = 16 mW, 4 shift-and-add = 0.2 mW) and section IV
  (a cycle is one crossbar read, 100 ns).
- NeuroSim: P.-Y. Chen, X. Peng, S. Yu, "NeuroSim: A Circuit-Level Macro Model for Benchmarking Neuro-Inspired
  Architectures in Online Learning", IEEE TCAD 2018; code github.com/neurosim/MLP_NeuroSim_V3.0, Cell.cpp
  (RealDevice: 2 V write pulses of 80 ns, conductance 0.476-10 uS; IdealDevice: 2 V pulses of 10 ns, conductance
  0.1-5 uS, read pulse 5 ns).
- Horowitz: M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014, Fig. 1.1.9
  (45 nm, 0.9 V: 8-bit integer add 0.03 pJ, 8-bit multiply 0.2 pJ, 32-bit add 0.1 pJ, 32-bit multiply 3.1 pJ).
- NeuRRAM: W. Wan et al., "A compute-in-memory chip based on resistive random-access memory", Nature 608,
  504-512 (2022); the authors' code github.com/weierwan/Neurram_48core, python/wupdate_control.py:
  `program_array` (array programming: pulse_width=1e-6 s, iteration_limit=20, set voltages from 1.2 V, one cell
  at a time: it loops over rows and columns and selects one of each with `write_reg`) and `program_increment`
  (single-cell programming: pulse_width=1e-7 s, iteration_limit=10). Both limits are maxima, not means.
- NeuroSim V2.1: github.com/neurosim/DNN_NeuroSim_V2.1, Training_pytorch/NeuroSIM/Param.cpp (writeVoltage = 4 V,
  writePulseWidth = 50 ns, readPulseWidth = 10 ns, resistanceOn = 100 kOhm, resistanceOff = 1 MOhm).
- docs/method.md §2.4: the prototype of these formulas (not a measurement; kept as a preset to check our numbers).
- Horowitz ISSCC 2014, Fig. 1.1.9 again for memory (45 nm, one 64-bit read): 8 KB SRAM 10 pJ, 32 KB SRAM 20 pJ,
  1 MB SRAM 100 pJ, DRAM 1.3-2.6 nJ.
- JEDEC JESD79-4 (DDR4 SDRAM): DDR4-3200 moves 3200 MT/s x 64 bits = 25.6 GB/s per channel.
- ISAAC Table I also gives each tile a 64 KB eDRAM buffer on a 256-bit bus; the rate of that bus is our
  assumption (one word per ns).
- ISAAC section V (the pipeline): layers are pipelined and replicated over the crossbars; PUMA: A. Ankit et al.,
  "PUMA: A Programmable Ultra-efficient Memristor-based Accelerator for Machine Learning Inference", ASPLOS 2019
  (the same spatial layer pipeline). The baseline's `reprogram_pipeline` / `reprogram_replicate` options.
- PUMA simulator: github.com/Aayush-Ankit/puma-simulator, include/constants.py (per-unit leakage powers of a
  core's crossbar, DAC, ADC, sample-and-hold and shift-add units).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

# Largest accepted value of each integer field: far beyond any chip, small enough that every count the model
# forms (cycles, cells, MACs) stays exact in int64 instead of overflowing.
INT_LIMITS = {
    "rows": 1 << 16,
    "cols": 1 << 16,
    "cell_bits": 32,
    "weight_bits": 32,
    "input_bits": 32,
    "dac_bits": 32,
    "verify_iters": 1_000_000,
    "digital_lanes": 1 << 20,
    "coef_operand_bits": 64,
}
MEMORY_INT_LIMITS = {"sram_bytes": 1 << 40}  # 0 allowed: no on-chip buffer, everything from DRAM
INT_FIELDS = tuple(INT_LIMITS)
OPTIONAL_INT_LIMITS = {"write_cols": 1 << 16, "write_crossbars": 1 << 24}  # None: no limit (today's schedule)
TIME_FIELDS = ("t_cycle", "t_write_iter")
ENERGY_FIELDS = (
    "e_xbar_step",
    "e_adc",
    "e_shift_add",
    "e_coef_mac",
    "e_add",
    "e_shift",
    "e_write_iter",
    "e_sram_byte",
    "e_dram_byte",
    "e_verify_read",
)
POWER_FIELDS = ("p_static_crossbar", "p_static_lanes")  # watts
BOOL_FIELDS = ("memory", "operand_delivery", "reprogram_replicate", "reprogram_pipeline")
BANDWIDTH_FIELDS = ("sram_bandwidth", "dram_bandwidth")  # bytes per second
MAX_CROSSBARS = 1 << 24  # n_crossbars accepted by the cost model (16.7 million crossbars)
MAX_BATCH = 1 << 24  # images per batch accepted by the cost model
MAX_WRITE_ITER_CYCLES = 1_000_000_000  # t_write_iter / t_cycle


@dataclass(frozen=True)
class HardwareConfig:
    """One crossbar accelerator (docs/method.md §2.1). Defaults are the `default` preset; see PRESETS for others.

    Construction validates every field: a bad value raises ValueError naming the field, the value and what is
    allowed. Use `replace(**changes)` for a modified copy (validated again).
    """

    # --- geometry and precision -----------------------------------------------------------------------------
    rows: int = 128  # R: crossbar rows. ISAAC Table I: 128x128 arrays.
    cols: int = 128  # C: crossbar columns. ISAAC Table I.
    cell_bits: int = 2  # bits per RRAM cell. ISAAC Table I / section VIII-A: 2 bits per cell.
    weight_bits: int = (
        8  # weight precision held by the cells (8-bit networks; ISAAC used 16). docs/method.md §1.1/§2.4.
    )
    input_bits: int = 8  # activation precision fed to the rows. docs/method.md §2.4 prototype (T_in = 8).
    dac_bits: int = 1  # bits per input step (bit-serial inputs). ISAAC Table I: 1-bit DACs.
    # --- timing -----------------------------------------------------------------------------------------------
    t_cycle: float = 100e-9  # one input step through one crossbar incl. ADC of its columns. ISAAC section IV: 100 ns.
    verify_iters: int = 10  # N_wv write+verify iterations per cell. Uncertain (no device paper adopted): half the
    # docs/method.md §2.4 prototype's 20, which favours the baseline; swept 1..100 in hw-eval.
    t_write_iter: float = 180e-9  # one write pulse + one verify read: NeuroSim RealDevice write pulse 80 ns
    # + a verify read through the column ADC = one ISAAC crossbar read (100 ns).
    write_cols: int | None = None  # cells of a row written in parallel per crossbar; None: the whole row at once
    # (docs/method.md §2.1, the cheapest schedule: favours the baseline). NeuRRAM's own code writes one cell at a time
    # (wupdate_control.py program_array); swept in hw-eval.
    write_crossbars: int | None = None  # crossbars written at once (write drivers / charge pumps); None: every
    # crossbar of a round at once (docs/method.md §2.1: favours the baseline). No source gives a number; swept.
    reprogram_replicate: bool = True  # reprogram_best may copy a round's layers onto its idle crossbars (ISAAC
    # section V replicates layers; the copies' writes are charged). False: the schedule before issue 26.
    reprogram_pipeline: bool = True  # reprogram_best may pipeline the layers of a round (ISAAC section V, PUMA):
    # a round computes in max_l instead of sum_l of its layers' cycles; pipeline fill and drain are not charged
    # (favours the baseline). False: the layers of a round run one after another.
    # --- BasisN combination unit --------------------------------------------------------------------------------
    digital_lanes: int = 128  # coefficient MACs per crossbar per t_cycle: one MAC unit per crossbar clocked at
    # the rate ISAAC's ADC delivers that crossbar's outputs (128 conversions per 100 ns). Our assumption.
    coef_operand_bits: int = 16  # width of the value a coefficient multiplies: a basis output after the
    # shift-and-add of its bit slices and input steps. ISAAC section IV: 16-bit shift-and-add outputs.
    # --- energies (J) ------------------------------------------------------------------------------------------
    e_xbar_step: float = 80.125e-12  # array + 128 DACs + 128 S+H, one crossbar, one step. ISAAC Table I:
    # (2.4 mW + 4 mW + 0.01 mW) / 8 arrays x 100 ns = 30 + 50 + 0.125 pJ.
    e_adc: float = 1.667e-12  # one 8-bit conversion. ISAAC Table I: 2 mW per ADC / 1.2 GS/s.
    e_shift_add: float = 0.0208e-12  # one column output shifted and added. ISAAC Table I: 0.2 mW for 4 units
    # / (8 ADCs x 1.2 GS/s) = 0.0208 pJ.
    e_coef_mac: float = 0.3e-12  # one 8-bit x 8-bit MAC (multiply + accumulate). Horowitz ISSCC 2014, 45 nm:
    # 8-bit mult 0.2 pJ + 32-bit add 0.1 pJ (not scaled to 32 nm). A b-bit x w-bit MAC pays
    # e_add + (e_coef_mac - e_add)·b·w/64 (a multiplier's energy grows with the product of its widths: Horowitz's
    # 32-bit multiply, 3.1 pJ, is 15.5x the 8-bit one for 16x the width product). BasisN's coefficient MACs take
    # w = coef_operand_bits; the digital scheme's dense MACs take weight_bits x input_bits.
    e_add: float = 0.1e-12  # the accumulate of a MAC: one 32-bit integer add. Horowitz ISSCC 2014, 45 nm.
    e_shift: float = 0.03e-12  # the shift of a pow2 coefficient (a shift and an add, no multiply): charged as one
    # 8-bit add per 8 operand bits, Horowitz ISSCC 2014, 45 nm (our assumption for a barrel shifter; costs BasisN
    # more than a fixed wire shift would).
    e_write_iter: float = 1.68e-12  # one cell, one write pulse: V^2·G·t of the NeuroSim RealDevice pulse, 2 V,
    # mid-range G = 5.24 uS, 80 ns; driver energy not charged (favours the baseline).
    e_verify_read: float = 1.672e-12  # one cell, one verify read: one ISAAC ADC conversion (1.667 pJ, e_adc) plus the
    # cell's share of one crossbar step (e_xbar_step / (128 x 128) = 0.005 pJ). ISAAC Table I.
    # --- leakage (static power), charged while a unit is powered but idle: ISAAC's powers above are measured
    # while busy, so busy time already includes it. Unused crossbars are power-gated (charged to no scheme).
    p_static_crossbar: float = 3.35e-4  # W per powered crossbar with its periphery, PUMA simulator
    # include/constants.py leakage (mW): 128 DACs x 0.000390625 + one ADC 0.2 + 128 sample-and-holds x 9.7e-7
    # + shift-and-add 0.005 + input and output registers (128) 0.04 each = 0.335 mW (crossbar itself: 0).
    p_static_lanes: float = 3.84e-5  # W per crossbar's digital_lanes MAC lanes: 10% of their dynamic power
    # (128 x 0.3 pJ per 100 ns = 0.384 mW). Our assumption; no source adopted.
    # --- memory: where weights and coefficients live, what moving them costs (docs/hardware.md section 2) ------
    memory: bool = False  # charge the reprogramming baseline's stream of rewritten weights (energy, and cycles bound
    # by transfer)? False (favours the baseline); hw-eval reports the headline ratios both ways (memory.csv).
    operand_delivery: bool = True  # the digital MAC lanes pay for delivering their operands, whatever `memory` says:
    # the digital scheme its dense weights, BasisN its coefficients (SRAM when they fit, else DRAM). False: operands
    # free for both (a labelled variant, docs/hardware.md section 4).
    sram_bytes: int = 4 * 2**20  # on-chip buffer capacity, 4 MiB. Our assumption (no chip adopted); swept in hw-eval.
    e_sram_byte: float = 12.5e-12  # one byte read from the buffer. Horowitz ISSCC 2014, 45 nm: 1 MB SRAM 100 pJ per
    # 64-bit word / 8 (a 4 MiB buffer costs more per read: favours the scheme that reads more, the baseline).
    e_dram_byte: float = 162.5e-12  # one byte from DRAM. Horowitz ISSCC 2014: DRAM 1.3-2.6 nJ per 64-bit word; the
    # low end / 8 (favours the baseline, which moves more bytes).
    sram_bandwidth: float = 32e9  # B/s. ISAAC Table I: a 256-bit eDRAM bus per tile; one word per ns is our
    # assumption -> 32 GB/s for the whole chip (one bus: favours no scheme, every scheme reads through it).
    dram_bandwidth: float = 25.6e9  # B/s: one DDR4-3200 channel, JEDEC JESD79-4 (3200 MT/s x 8 bytes).

    def __post_init__(self) -> None:
        for name, high in INT_LIMITS.items():
            check_int(name, getattr(self, name), high=high)
        for name, high in OPTIONAL_INT_LIMITS.items():
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, high=high, none="; or null for no limit")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed; use true or false")
        check_int("sram_bytes", self.sram_bytes, low=0, high=MEMORY_INT_LIMITS["sram_bytes"])
        for name in BANDWIDTH_FIELDS:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} is not allowed; use a finite bandwidth in bytes per second > 0")
        for name in POWER_FIELDS:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r} is not allowed; use a finite power in watts >= 0")
        for name in TIME_FIELDS:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}={value!r} is not allowed; use a finite time in seconds > 0")
        for name in ENERGY_FIELDS:
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}={value!r} is not allowed; use a finite energy in joules >= 0")
        if self.t_write_iter / self.t_cycle > MAX_WRITE_ITER_CYCLES:
            raise ValueError(
                f"t_write_iter={self.t_write_iter!r} is not allowed; use at most {MAX_WRITE_ITER_CYCLES} x "
                f"t_cycle={self.t_cycle!r}"
            )
        if self.cell_bits > self.weight_bits:
            raise ValueError(f"cell_bits={self.cell_bits} is not allowed; use at most weight_bits={self.weight_bits}")
        if self.dac_bits > self.input_bits:
            raise ValueError(f"dac_bits={self.dac_bits} is not allowed; use at most input_bits={self.input_bits}")
        if self.cols_per_weight > self.cols:
            raise ValueError(
                f"cols={self.cols} is not allowed; a signed weight needs cols_per_weight={self.cols_per_weight} "
                "columns (2 x ceil(weight_bits/cell_bits)), use cols >= that"
            )

    # --- derived quantities (docs/method.md §2.1) ---------------------------------------------------------------------
    @property
    def slices(self) -> int:
        """Cells per weight magnitude: ceil(weight_bits / cell_bits)."""
        return -(-self.weight_bits // self.cell_bits)

    @property
    def cols_per_weight(self) -> int:
        """cpw = 2·slices: a signed weight is a differential pair of bit-sliced cells."""
        return 2 * self.slices

    @property
    def input_steps(self) -> int:
        """T_in = ceil(input_bits / dac_bits): bit-serial input steps per crossbar read."""
        return -(-self.input_bits // self.dac_bits)

    @property
    def write_iter_cycles(self) -> int:
        """ceil(t_write_iter / t_cycle), robust to float noise (200 ns / 100 ns is 2 cycles, not 3)."""
        return max(1, math.ceil(round(self.t_write_iter / self.t_cycle, 9)))

    @property
    def row_program_cycles(self) -> int:
        """Cycles to program one row of every crossbar of a round: N_wv · ceil(t_write_iter / t_cycle)."""
        return self.verify_iters * self.write_iter_cycles

    @property
    def write_passes(self) -> int:
        """Passes needed to write a full row of C cells, `write_cols` at a time (1 with the default)."""
        return 1 if self.write_cols is None else -(-self.cols // self.write_cols)

    def mac_energy(self, bits: int | None, quant: str = "uniform", operand_bits: int = 8) -> float:
        """One MAC of a `bits`-bit `quant` value with an `operand_bits`-bit operand (None bits: 8, as e_coef_mac).

        uniform: e_add + (e_coef_mac - e_add)·bits·operand_bits/64 (multiplier energy ~ width product, Horowitz
        ISSCC 2014); pow2: e_add + e_shift·operand_bits/8 (sign·2^e is a shift of the operand and an add).
        """
        if quant == "pow2":
            return self.e_add + self.e_shift * operand_bits / 8
        width = 8 if bits is None else bits
        return self.e_add + max(0.0, self.e_coef_mac - self.e_add) * width * operand_bits / 64

    @property
    def e_cell_program(self) -> float:
        """Energy to program one cell: N_wv iterations of a write pulse and a verify read."""
        return self.verify_iters * (self.e_write_iter + self.e_verify_read)

    @property
    def e_step(self) -> float:
        """Energy of one crossbar step: e_xbar_step + C·e_adc + C·e_shift_add (docs/method.md §2.3)."""
        return self.e_xbar_step + self.cols * (self.e_adc + self.e_shift_add)

    def memory_source(self, stored_bytes: float) -> tuple[str, float, float]:
        """(where, joules per byte, bytes per t_cycle) of data of `stored_bytes`: the SRAM when it fits, else DRAM."""
        if stored_bytes <= self.sram_bytes:
            return "sram", self.e_sram_byte, self.sram_bandwidth * self.t_cycle
        return "dram", self.e_dram_byte, self.dram_bandwidth * self.t_cycle

    def replace(self, **changes: Any) -> HardwareConfig:
        """A validated copy with some fields changed; unknown field names raise ValueError."""
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise ValueError(f"hardware field {unknown[0]!r} is unknown; allowed: {', '.join(FIELD_NAMES)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(HardwareConfig))


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(name: str, value: object, low: int = 1, high: int | None = None, none: str = "") -> None:
    """A one-line ValueError naming `name`, `value` and the allowed range unless low <= value <= high."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name}={value!r} is not allowed; use {allowed}{none}")


# ----------------------------------------------------------------------------------------------------------------
# Presets. Only the fields that differ from HardwareConfig's defaults are listed, each with its source.
# ----------------------------------------------------------------------------------------------------------------
PRESET_CHANGES: dict[str, dict[str, Any]] = {
    # ISAAC periphery, NeuroSim RealDevice writes verified through the ADC (the class defaults above).
    "default": {},
    # A faster-writing device: NeuroSim IdealDevice 10 ns pulses verified by a per-column sense amplifier in one
    # NeuroSim read pulse (5 ns): 15 ns, i.e. one t_cycle per iteration. Fewer iterations (5, our assumption).
    # Energy: 2 V^2 x mid-range G 2.55 uS x 10 ns = 0.10 pJ. Everything makes writing cheaper: favours the baseline.
    "fast_write": {"t_write_iter": 15e-9, "verify_iters": 5, "e_write_iter": 0.10e-12},
    # The prototype of docs/method.md §2.4 (1 us per write+verify iteration, N_wv = 20): kept to check our formulas
    # against its worked numbers (docs/hardware.md compares them with this preset's hw-eval rows). Not a device.
    "design_prototype": {"t_write_iter": 1e-6, "verify_iters": 20},
    # NeuRRAM's array programming (wupdate_control.py `program_array`): 1 us pulses, iteration_limit=20 used here as
    # the mean (it is a maximum: costs the baseline more; swept as `verify_iters_share`). The verify read costs
    # e_verify_read, as in every preset. Energy V^2·G·t: the lowest set voltage of program_array, 1.2 V, NeuroSim
    # RealDevice mid-range G = 5.24 uS (no NeuRRAM conductance adopted), 1 us -> 7.55 pJ. Rows are written whole
    # (write_cols None), although the chip's code writes one cell at a time: favours the baseline.
    "neurram": {"t_write_iter": 1e-6, "verify_iters": 20, "e_write_iter": 7.55e-12},
    # NeuRRAM's single-cell programming (wupdate_control.py `program_increment` defaults): 100 ns pulses (one
    # t_cycle), iteration_limit=10 used as the mean (a maximum). Energy: 1.2 V, 5.24 uS, 100 ns -> 0.755 pJ.
    "neurram_cell": {"t_write_iter": 100e-9, "verify_iters": 10, "e_write_iter": 0.755e-12},
    # NeuroSim V2.1 defaults (Param.cpp): 50 ns write pulses at 4 V, verified by one 10 ns read pulse -> 60 ns,
    # one t_cycle per iteration. Energy V^2·G·t: 4 V, mid-range G = 5.5 uS (R_on 100 kOhm, R_off 1 MOhm), 50 ns
    # -> 4.4 pJ. NeuroSim does not write-and-verify; N_wv stays at the default 10 (our assumption).
    "neurosim_v21": {"t_write_iter": 60e-9, "e_write_iter": 4.4e-12},
}

# Presets whose verify_iters is a source's maximum iteration count used as if it were the mean (docs/method.md §2.1
# charges N_wv iterations to every row); hw-eval sweeps a share of it (`sweep.verify_iters_share`).
MAX_AS_MEAN: dict[str, str] = {
    "neurram": "wupdate_control.py program_array iteration_limit=20 (a maximum)",
    "neurram_cell": "wupdate_control.py program_increment iteration_limit=10 (a maximum)",
}

PRESETS: dict[str, HardwareConfig] = {name: HardwareConfig(**changes) for name, changes in PRESET_CHANGES.items()}


def preset(name: str = "default", **overrides: Any) -> HardwareConfig:
    """The named preset, with optional field overrides (validated)."""
    if name not in PRESETS:
        raise ValueError(f"hardware preset {name!r} is unknown; allowed: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


COEF_QUANTS = ("uniform", "pow2")
BASIS_KEYS = ("n_basis", "segment_len", "groups", "coef_bits", "coef_quant")


@dataclass(frozen=True)
class BasisSpec:
    """The basis of a BasisN mapping (docs/method.md §1.1): n vectors of length m, split into G groups.

    `coef_bits` / `coef_quant` describe the coefficient quantizer; they set the energy of one coefficient MAC
    (HardwareConfig.mac_energy: a pow2 coefficient is a shift and an add). coef_bits None: charged as 8 bits.
    """

    n_basis: int = 64  # n: docs/method.md §1.1 default
    segment_len: int = 128  # m = R: docs/method.md §1.1 default
    groups: int = 1  # G: 1 = dense coefficients
    coef_bits: int | None = None  # None: unknown, charged as an 8-bit multiply (the most expensive we cost)
    coef_quant: str = "uniform"  # uniform | pow2

    def __post_init__(self) -> None:
        check_int("n_basis", self.n_basis, high=INT_LIMITS["rows"])
        check_int("segment_len", self.segment_len, high=INT_LIMITS["rows"])
        check_int("groups", self.groups, high=INT_LIMITS["rows"])
        if self.coef_bits is not None:
            check_int("coef_bits", self.coef_bits, high=32, none="; or null")
        if self.coef_quant not in COEF_QUANTS:
            raise ValueError(f"coef_quant={self.coef_quant!r} is not allowed; allowed: {', '.join(COEF_QUANTS)}")
        if self.n_basis > self.segment_len:
            raise ValueError(
                f"n_basis={self.n_basis} is not allowed; use at most segment_len={self.segment_len} "
                "(more basis vectors than the segment length cannot be independent)"
            )
        if self.n_basis % self.groups:
            raise ValueError(f"groups={self.groups} is not allowed; use a divisor of n_basis={self.n_basis}")

    @property
    def group_size(self) -> int:
        return self.n_basis // self.groups

    def check_fits(self, config: HardwareConfig) -> None:
        """A segment occupies m rows of one crossbar: m <= R."""
        if self.segment_len > config.rows:
            raise ValueError(
                f"segment_len={self.segment_len} is not allowed; use at most the crossbar rows R={config.rows}"
            )

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in BASIS_KEYS}


def as_basis(basis: BasisSpec | dict[str, int] | None, default: BasisSpec | None = None) -> BasisSpec:
    """Coerce a dict (or None: `default`, else BasisSpec()) to a BasisSpec; a dict's missing keys come from
    `default` (else BasisSpec()'s)."""
    if basis is None:
        return default if default is not None else BasisSpec()
    if isinstance(basis, BasisSpec):
        return basis
    if isinstance(basis, dict):
        unknown = sorted(set(basis) - set(BASIS_KEYS))
        if unknown:
            raise ValueError(f"basis key {unknown[0]!r} is unknown; allowed: {', '.join(BASIS_KEYS)}")
        return BasisSpec(**((default or BasisSpec()).as_dict() | basis))
    raise ValueError(f"basis={basis!r} is not allowed; pass a BasisSpec, a dict or None")


def priced_basis(
    basis: BasisSpec | dict[str, int] | None,
    default: BasisSpec | None,
    own: BasisSpec | None,
    override_basis: bool = False,
) -> BasisSpec:
    """The basis to price a network with: `basis`, else `default` (the shapes' basis), else BasisSpec().

    `own`: a basis-mapped model's own basis (NetworkShapes.model_basis). An explicit `basis` that contradicts it
    (another n, m, G or coefficient quantizer: a 4-bit model priced as 8-bit, say) raises one line, unless
    `override_basis` asks for that what-if on purpose. A plain network has no basis of its own.
    """
    spec = as_basis(basis, default)
    if own is not None and spec != own and not override_basis:
        differing = ", ".join(
            f"{key}={getattr(spec, key)!r} (model: {getattr(own, key)!r})"
            for key in BASIS_KEYS
            if getattr(spec, key) != getattr(own, key)
        )
        raise ValueError(
            f"basis contradicts the model's own basis: {differing}; leave basis out to price the model as built, "
            "or pass override_basis=True to price another basis"
        )
    return spec
