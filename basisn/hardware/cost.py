"""The crossbar cost model: cycles, latency, energy and EDP of every scheme of SCHEMES (docs/method.md §2).

Schemes: `ideal`, `reprogram` (today's baseline), `reprogram_pingpong` (the next round written on one half of
the crossbars while the other computes), `reprogram_best` (the fastest of the baseline's options: pipelined
rounds, rounds of whole layers with copies, replicas when everything fits), `basisn`, and `digital` (the BasisN
unit's MAC lanes running the dense network without crossbars, docs/method.md §2.4).

Pure NumPy from layer shapes alone, vectorised over layers. Names follow docs/method.md §2.2-§2.4: per layer l,
P_l, g_l, L_l, O_l (shapes), t_l dense tiles, s_l segments; R, C, cpw, T_in, N_wv from the HardwareConfig; N
crossbars; B images per batch. Cycles are counted per batch and reported per inference (divided by B).

The baseline's options (docs/hardware.md section 2): write parallelism (`write_cols` cells of a row and
`write_crossbars` crossbars written at once; by default whole rows of every crossbar of a round, the cheapest
schedule), ping-pong halves in the steady state, a round's layers pipelined (`reprogram_pipeline`), rounds of whole
layers with copies on idle crossbars (`reprogram_replicate`, the copies' writes charged), and replicas of layers on
spare crossbars once everything fits; `reprogram_best` takes the fastest (`reprogram_schedules` lists them).
Coefficient MACs are charged by the basis's quantizer and the operand width (`HardwareConfig.mac_energy`: a pow2
coefficient is a shift and an add); the digital lanes' operands are delivered from memory (`operand_delivery`);
idle powered units leak (`_Leakage`).

Two refinements of the docs/method.md formulas keep the properties the issue requires; both favour the baseline or
are neutral, and docs/hardware.md explains them:
- reprogram: greedy layer-order rounds of exactly N tiles are not monotone in N (a larger round can split a layer
  that a smaller one kept whole). A chip with N crossbars can leave some idle, so the schedule is the best
  layer-order greedy packing on any N' <= N crossbars (`crossbars_used` reports N'). This only lowers the
  baseline's cost.
- basisn with G groups: when a group is smaller than a crossbar's columns, one group per crossbar wastes columns
  and may read fewer segments in parallel than the dense layout. The chip places the basis the better of two ways
  (`layout`): "grouped" (K_g copies of every group, X_g crossbars each) or "dense" (K copies of the whole basis,
  each segment reading all of it while the digital unit still does n/G MACs).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from basisn.hardware.config import (
    FIELD_NAMES,
    MAX_BATCH,
    MAX_CROSSBARS,
    BasisSpec,
    HardwareConfig,
    check_int,
    priced_basis,
)
from basisn.hardware.shapes import NetworkShapes

SCHEMES = ("ideal", "reprogram", "reprogram_pingpong", "reprogram_best", "basisn", "digital")
BASELINE_OPTIONS = ("reprogram", "reprogram_pingpong", "reprogram_best")  # the reprogramming baseline's schedules
ENERGY_TERMS = ("xbar", "adc", "shift_add", "coef_mac", "mac", "write", "memory", "static")
INT_COLUMNS = (
    "n_basis segment_len groups copies xbars_per_read basis_crossbars dense_crossbars digital_bound_layers "
    "reads_bound_layers coef_bits write_cols write_crossbars round_size"
).split()
LAYER_COLUMNS = (
    "layer name kind P g L O macs mapped tiles copies rounds segments reads digital bound compute_cycles "
    "program_cycles cycles latency_s energy_xbar_j energy_adc_j energy_shift_add_j energy_coef_mac_j energy_mac_j "
    "energy_write_j energy_memory_j energy_static_j energy_j bytes_moved transfer_cycles"
).split()


def _ceil_div(a: Any, b: Any) -> Any:
    """Exact integer ceil(a / b) for ints or int64 arrays."""
    return -(-a // b)


# ----------------------------------------------------------------------------------------------------------------
# Dense tiling and the round schedules of the reprogramming baseline.
# ----------------------------------------------------------------------------------------------------------------
TABLE_MIN_SIZES = 4096  # round tables are built for at least this many sizes (one build serves the whole N grid)


class _RangeMax:
    """Maxima of values[start:stop] for many (start, stop) at once: a sparse table of power-of-two windows."""

    def __init__(self, values: np.ndarray) -> None:
        n = len(values)
        table = [values]
        while (1 << len(table)) <= n:  # level k holds the maxima of the windows of length 2^k
            half = 1 << (len(table) - 1)
            table.append(np.maximum(table[-1][:-half], table[-1][half:]))
        self.padded = np.zeros((len(table), n), dtype=values.dtype)
        for k, row in enumerate(table):
            self.padded[k, : len(row)] = row

    def __call__(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        level = np.floor(np.log2(stop - start)).astype(np.int64)
        return np.maximum(self.padded[level, start], self.padded[level, stop - (1 << level)])


class _RoundTable:
    """Every candidate round size N' at once: per round, its write steps and its compute (sum of P_l).

    A round of N' tiles (consecutive in layer order) is written `write_crossbars` (w) crossbars at a time, in
    waves of consecutive tiles; a wave costs its largest write steps. Sizes N' <= w are one wave; larger sizes are
    multiples of w (whole waves; a partial wave would only add a wave), so waves align with the tile sequence and
    a round's writes are a difference of prefix sums. Size index i covers `sizes[i]`.
    """

    def __init__(self, tiling: _Tiling, steps: np.ndarray, write_crossbars: int | None, n_max: int) -> None:
        total = tiling.total
        w = write_crossbars
        if w is None or w >= n_max:
            sizes = np.arange(1, n_max + 1, dtype=np.int64)
        else:
            sizes = np.concatenate([np.arange(1, w + 1), np.arange(2 * w, n_max + 1, w)]).astype(np.int64)
        counts = _ceil_div(total, sizes)
        size_of_block = np.repeat(sizes, counts)
        first_block = np.cumsum(counts) - counts
        index_in_size = np.arange(int(counts.sum())) - np.repeat(first_block, counts)
        start = index_in_size * size_of_block
        stop = np.minimum(start + size_of_block, total)
        owner = np.repeat(np.arange(len(sizes)), counts)
        range_max = _RangeMax(steps)
        if w is None or w >= n_max:
            prog = range_max(start, stop)
        else:
            wave_starts = np.arange(0, total, w)
            waves = range_max(wave_starts, np.minimum(wave_starts + w, total))
            cum = np.concatenate([[0], np.cumsum(waves)])
            prog = np.where(size_of_block <= w, range_max(start, stop), cum[_ceil_div(stop, w)] - cum[start // w])
        cum_weights = np.concatenate([[0], np.cumsum(tiling.tile_weights)])
        self.round_weights = cum_weights[stop] - cum_weights[start]  # weights a round must receive before writing
        cum_p = np.concatenate([[0], np.cumsum(tiling.P)])
        layer = tiling.layer_of_tile
        comp = cum_p[layer[stop - 1] + 1] - cum_p[layer[start]]
        comp_max = _RangeMax(tiling.P)(layer[start], layer[stop - 1] + 1)  # a pipelined round: its slowest layer
        following = np.arange(len(owner)) + 1  # the next round of the same size, cyclic (steady state)
        following[first_block + counts - 1] = first_block
        self.n_max, self.sizes, self.owner = n_max, sizes, owner
        self.prog, self.comp, self.comp_max, self.following = prog, comp, comp_max, following
        self.prog_sum = np.bincount(owner, weights=prog, minlength=len(sizes))
        self.comp_sum = np.bincount(owner, weights=comp, minlength=len(sizes))
        self._costs: dict[tuple[int, int, float | None, float, bool], tuple[np.ndarray, np.ndarray]] = {}

    def costs(
        self,
        row_cycles: int,
        compute_cycles: int,
        bytes_per_cycle: float | None = None,
        bytes_per_weight: float = 1.0,
        pipelined: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(plain, ping-pong) cycles per batch for every size: writes cost `row_cycles` per write step, a round
        `compute_cycles` per unit of P (`pipelined`: of its largest P, the round's layers running at once).
        Ping-pong: sum_r max(compute_r, writes of round r+1).

        With `bytes_per_cycle` (memory traffic on), a round's writes overlap the arrival of its weights only up to
        the bandwidth: its write phase is max(writes_r, transfer_r), transfer_r = ceil(bytes_r / bytes_per_cycle).
        """
        key = (row_cycles, compute_cycles, bytes_per_cycle, bytes_per_weight, pipelined)
        if key not in self._costs:
            write = self.prog * row_cycles
            if bytes_per_cycle is not None:
                write = np.maximum(write, transfer_cycles(self.round_weights * bytes_per_weight, bytes_per_cycle))
            comp = (self.comp_max if pipelined else self.comp) * compute_cycles
            plain = np.bincount(self.owner, weights=write + comp, minlength=len(self.sizes))
            overlap = np.maximum(write[self.following], comp)
            self._costs[key] = (plain, np.bincount(self.owner, weights=overlap, minlength=len(self.sizes)))
        return self._costs[key]


def transfer_cycles(n_bytes: Any, bytes_per_cycle: float) -> Any:
    """ceil(bytes / bytes per t_cycle), robust to float noise (exact for whole multiples)."""
    return np.ceil(np.round(np.asarray(n_bytes, dtype=float) / bytes_per_cycle, 9))


class _Tiling:
    """Dense tiles of a network in layer order (docs/method.md §2.2): t_l = g·ceil(L/R)·ceil(O·cpw/C).

    Tiles of a layer are ordered group, row block, column block; a tile's rows_used is R except in the last row
    block (L - (ceil(L/R)-1)·R), its cols_used C except in the last column block. Writing a tile takes
    rows_used · ceil(cols_used / write_cols) row writes (`write_steps`).
    """

    def __init__(self, shapes: NetworkShapes, rows: int, cols: int, cpw: int) -> None:
        a = shapes.arrays()
        self.P, self.g, self.L, self.O = a["P"], a["g"], a["L"], a["O"]
        self.row_blocks = _ceil_div(self.L, rows)
        self.col_blocks = _ceil_div(self.O * cpw, cols)
        self.tiles = self.g * self.row_blocks * self.col_blocks
        self.first = np.cumsum(self.tiles) - self.tiles
        self.last = self.first + self.tiles - 1
        self.total = int(self.tiles.sum())
        last_rows = self.L - (self.row_blocks - 1) * rows
        last_cols = self.O * cpw - (self.col_blocks - 1) * cols
        row_parts, col_parts = [], []
        for rb, cb, g, lr, lc in zip(self.row_blocks, self.col_blocks, self.g, last_rows, last_cols):
            per_rows = np.full(int(rb), rows, dtype=np.int64)
            per_rows[-1] = lr
            per_cols = np.full(int(cb), cols, dtype=np.int64)
            per_cols[-1] = lc
            row_parts.append(np.tile(np.repeat(per_rows, int(cb)), int(g)))
            col_parts.append(np.tile(np.tile(per_cols, int(rb)), int(g)))
        self.rows_used = np.concatenate(row_parts)
        self.cols_used = np.concatenate(col_parts)
        self.layer_of_tile = np.repeat(np.arange(len(self.tiles)), self.tiles)
        self.tile_weights = self.rows_used * self.cols_used / cpw  # sums to g·L·O over a layer's tiles
        self.cells = self.g * self.L * self.O * cpw  # cells holding weights (written on every reprogramming)
        self.weights = self.g * self.L * self.O  # weights per layer
        self.tile_cpw = cpw
        self.macs = self.P * self.g * self.L * self.O  # per image, per layer
        self.macs_total = int(self.macs.sum())
        self._tables: dict[tuple[int | None, int | None], _RoundTable] = {}
        self._plans: dict[tuple, Any] = {}  # layer-round schedules (_layer_rounds), per hardware and N

    def write_steps(self, write_cols: int | None) -> np.ndarray:
        """Row writes per tile: rows_used · ceil(cols_used / write_cols) (rows_used for whole-row writes)."""
        if write_cols is None:
            return self.rows_used
        return self.rows_used * _ceil_div(self.cols_used, write_cols)

    def layer_write_steps(self, write_cols: int | None) -> np.ndarray:
        """Per layer, the write steps of its tallest tile (a round writing every crossbar at once waits for it)."""
        return np.maximum.reduceat(self.write_steps(write_cols), self.first)

    def table(self, write_cols: int | None, write_crossbars: int | None, n_max: int) -> _RoundTable:
        """The round table for sizes up to n_max (< total tiles), grown by doubling and cached."""
        if write_cols is not None and write_cols >= int(self.cols_used.max()):
            write_cols = None  # every row is written in one pass anyway: share the whole-row table
        key = (write_cols, write_crossbars)
        have = self._tables.get(key)
        if have is None or have.n_max < n_max:
            target = min(self.total - 1, max(n_max, 2 * (have.n_max if have else 0), TABLE_MIN_SIZES))
            self._tables[key] = _RoundTable(self, self.write_steps(write_cols), write_crossbars, target)
        return self._tables[key]

    def rounds(self, n: int) -> np.ndarray:
        """rounds_l: the rounds of N' = n crossbars that hold tiles of layer l."""
        return self.last // n - self.first // n + 1

    def round_writes(self, n: int, write_cols: int | None, write_crossbars: int | None) -> np.ndarray:
        """Write steps of each round of n tiles: the sum over its waves of `write_crossbars` tiles of their max."""
        steps = self.write_steps(write_cols)
        wave = n if write_crossbars is None else min(n, write_crossbars)
        waves = np.maximum.reduceat(steps, np.arange(0, self.total, wave))
        return np.bincount(np.arange(len(waves)) * wave // n, weights=waves).astype(np.int64)

    def round_compute(self, n: int, pipelined: bool = False) -> np.ndarray:
        """sum of P_l (`pipelined`: max) over the layers with tiles in each round of n tiles."""
        start = np.arange(0, self.total, n)
        stop = np.minimum(start + n, self.total)
        first, last = self.layer_of_tile[start], self.layer_of_tile[stop - 1]
        if pipelined:
            return _RangeMax(self.P)(first, last + 1)
        cum_p = np.concatenate([[0], np.cumsum(self.P)])
        return cum_p[last + 1] - cum_p[first]

    def once_writes(self, write_cols: int | None, write_crossbars: int | None) -> int:
        """Write steps to write every tile once (one round of all tiles)."""
        return int(self.round_writes(self.total, write_cols, write_crossbars).sum())


def _tiling(shapes: NetworkShapes, config: HardwareConfig) -> _Tiling:
    key = ("tiling", config.rows, config.cols, config.cols_per_weight)
    if key not in shapes._cache:
        shapes._cache[key] = _Tiling(shapes, config.rows, config.cols, config.cols_per_weight)
    return shapes._cache[key]


@dataclass(frozen=True)
class _Leakage:
    """Crossbar-cycles and lane-unit-cycles a batch keeps powered, and how many of them are busy.

    A crossbar is powered while a layer (or round) whose weights it holds runs, a unit of digital_lanes MAC lanes
    while a layer it serves runs; both are power-gated otherwise (the RRAM cells keep their weights unpowered).
    Powered but not busy, they leak (p_static_*): ISAAC's busy powers already include their leakage. So static
    energy grows with the idle time a schedule leaves, which differs by scheme.
    """

    powered_crossbar: float  # crossbar-cycles per batch
    busy_crossbar: float  # crossbar steps per batch
    powered_lanes: float = 0.0  # lane-unit-cycles per batch
    busy_lanes: float = 0.0  # MACs / digital_lanes per batch

    def joules(self, config: HardwareConfig) -> float:
        """Static joules per batch."""
        idle_crossbar = max(self.powered_crossbar - self.busy_crossbar, 0.0)
        idle_lanes = max(self.powered_lanes - self.busy_lanes, 0.0)
        return (idle_crossbar * config.p_static_crossbar + idle_lanes * config.p_static_lanes) * config.t_cycle


# ----------------------------------------------------------------------------------------------------------------
# Results.
# ----------------------------------------------------------------------------------------------------------------
def engineering(value: float, unit: str) -> str:
    """1.55e-3 J -> '1.55 mJ': three significant digits with an SI prefix, never an exponent."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}"
    for scale, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


class Evaluation:
    """One scheme on one network: `totals` (a flat dict, per inference) and `layers` (a per-layer DataFrame).

    The per-layer data is computed on first use (`layer_data`): sweeps need only the totals.
    """

    def __init__(self, totals: dict[str, Any], layer_data: Callable[[], dict[str, Any]], shapes: NetworkShapes):
        self.totals, self.shapes = totals, shapes
        self._layer_fn: Callable[[], dict[str, Any]] | None = layer_data
        self._layer_data: dict[str, Any] = {}

    @property
    def layer_data(self) -> dict[str, Any]:
        if self._layer_fn is not None:
            self._layer_data, self._layer_fn = self._layer_fn(), None
        return self._layer_data

    def layer_columns(self) -> dict[str, Any]:
        """The per-layer table as columns (arrays or scalars), in `layers` order: cheap to concatenate."""
        s = self.shapes
        n = len(s.layers)
        arrays = s.arrays()
        columns: dict[str, Any] = {key: self.totals[key] for key in ("network", "n_crossbars", "batch", "scheme")}
        columns |= {
            "layer": np.arange(n),
            "name": np.array([x.name for x in s.layers], dtype=object),
            "kind": np.array([x.kind for x in s.layers], dtype=object),
        }
        columns |= {k: arrays[k] for k in "PgLO"}
        columns |= {"macs": arrays["P"] * arrays["g"] * arrays["L"] * arrays["O"], "mapped": arrays["mapped"]}
        data = self.layer_data
        for column in LAYER_COLUMNS:
            if column not in columns:
                columns[column] = data[column] if column in data else np.full(n, np.nan)
        return {key: np.broadcast_to(np.asarray(value), (n,)) for key, value in columns.items()}

    @property
    def layers(self) -> pd.DataFrame:
        return pd.DataFrame(self.layer_columns())

    def __getitem__(self, key: str) -> Any:
        return self.totals[key]

    def to_frame(self) -> pd.DataFrame:
        """The totals as a one-row DataFrame (concatenate several with pd.concat for a tidy table)."""
        return pd.DataFrame([self.totals])

    def _headline(self) -> dict[str, str]:
        t = self.totals
        return {
            "cycles": f"{t['cycles']:,.0f}",
            "latency": engineering(t["latency_s"], "s"),
            "energy": engineering(t["energy_j"], "J"),
            "EDP": engineering(t["edp_js"], "J·s"),
            "crossbars used": f"{t.get('crossbars_used')} of {t['n_crossbars']}",
        }

    def __repr__(self) -> str:
        t = self.totals
        headline = ", ".join(f"{key} {value}" for key, value in self._headline().items())
        return f"<Evaluation {t['scheme']} on {t['network']} (N = {t['n_crossbars']}, batch {t['batch']}): {headline}>"

    def _repr_html_(self) -> str:
        """Jupyter's view: the headline numbers, then the energy per term (only the terms this scheme has)."""
        t = self.totals
        rows = dict(self._headline())
        rows |= {
            f"energy: {term}": engineering(t[f"energy_{term}_j"], "J")
            for term in ENERGY_TERMS
            if t.get(f"energy_{term}_j")
        }
        table = pd.DataFrame({"value": rows})
        title = f"{t['scheme']} on {t['network']} (N = {t['n_crossbars']}, batch {t['batch']})"
        return f"<b>{title}</b>" + table.to_html()


def _energy_terms(
    steps: np.ndarray,
    coef_mac_energy: np.ndarray,
    write_cells: np.ndarray,
    config: HardwareConfig,
    mac_energy: np.ndarray | None = None,
    memory_energy: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """docs/method.md §2.3: steps·(e_xbar_step + C·e_adc + C·e_shift_add) + coefficient MACs + cells·e_cell_program
    (N_wv write pulses and verify reads; + the digital scheme's dense MACs). MAC terms come in joules already
    (their energy depends on the operands). Leakage (`static`) is added by _finish, from the latency."""
    return {
        "energy_xbar_j": steps * config.e_xbar_step,
        "energy_adc_j": steps * (config.cols * config.e_adc),
        "energy_shift_add_j": steps * (config.cols * config.e_shift_add),
        "energy_coef_mac_j": coef_mac_energy,
        "energy_mac_j": np.zeros(len(steps)) if mac_energy is None else mac_energy,
        "energy_write_j": write_cells * config.e_cell_program,
        "energy_memory_j": np.zeros(len(steps)) if memory_energy is None else memory_energy,
    }


@dataclass(frozen=True)
class MemoryTraffic:
    """The bytes a scheme moves per batch, per layer, and from where (docs/hardware.md section 2).

    `stored_bytes` is what must be kept for every inference; it sits in the SRAM when it fits
    (`HardwareConfig.sram_bytes`), else in DRAM. Uncharged bytes (the baseline's weight stream with `memory` off,
    operands with `memory` and `operand_delivery` off) are still reported, but cost nothing.
    """

    bytes_batch: np.ndarray  # per layer, per batch
    stored_bytes: float
    source: str  # "sram" | "dram" | "none"
    energy: np.ndarray  # J per layer per inference (zeros with memory off)
    transfer_batch: np.ndarray  # cycles per layer per batch to move the bytes (zeros with memory off)
    bytes_per_cycle: float | None  # None with memory off


def _traffic(
    config: HardwareConfig, bytes_batch: np.ndarray, stored_bytes: float, batch: int, operands: bool = False
) -> MemoryTraffic:
    """`operands`: the bytes are a digital unit's MAC operands (charged when `operand_delivery` or `memory` is on);
    otherwise the baseline's rewritten weights (charged when `memory` is on)."""
    bytes_batch = np.asarray(bytes_batch, dtype=float)
    if not bytes_batch.any():
        zeros = np.zeros(len(bytes_batch))
        return MemoryTraffic(bytes_batch, stored_bytes, "none", zeros, zeros, None)
    source, e_byte, bytes_per_cycle = config.memory_source(stored_bytes)
    if not (config.memory or (operands and config.operand_delivery)):
        zeros = np.zeros(len(bytes_batch))
        return MemoryTraffic(bytes_batch, stored_bytes, source, zeros, zeros, None)
    energy = bytes_batch / batch * e_byte
    return MemoryTraffic(
        bytes_batch, stored_bytes, source, energy, transfer_cycles(bytes_batch, bytes_per_cycle), bytes_per_cycle
    )


def _traffic_totals(traffic: MemoryTraffic, batch: int) -> dict[str, Any]:
    return {
        "bytes_moved": float(traffic.bytes_batch.sum()) / batch,
        "stored_bytes": traffic.stored_bytes,
        "memory_source": traffic.source,
        "transfer_cycles": float(traffic.transfer_batch.sum()) / batch,
    }


def coefficient_bytes(shapes: NetworkShapes, basis: BasisSpec, config: HardwareConfig) -> np.ndarray:
    """Bytes of the coefficients one inference uses, per layer (0 for layers kept dense).

    Per (group, output channel, segment): n/G active coefficients at coef_bits (None: 8), plus ceil(log2 G) bits of
    group index when G > 1. Group-sparse coefficients store only the active ones.
    """
    tiling = _tiling(shapes, config)
    mapped = shapes.arrays()["mapped"]
    bits = 8 if basis.coef_bits is None else basis.coef_bits
    index_bits = int(np.ceil(np.log2(basis.groups))) if basis.groups > 1 else 0
    entries = tiling.g * tiling.O * _ceil_div(tiling.L, basis.segment_len)
    return np.where(mapped, entries * (basis.group_size * bits + index_bits) / 8, 0.0)


def dense_weight_bytes(shapes: NetworkShapes, config: HardwareConfig) -> np.ndarray:
    """Bytes of the dense weights per layer, g·L·O·weight_bits/8."""
    return _tiling(shapes, config).weights * (config.weight_bits / 8)


def storage(
    shapes: NetworkShapes,
    config: HardwareConfig,
    basis: BasisSpec | Mapping[str, int] | None = None,
    override_basis: bool = False,
) -> dict:
    """Storage of one network: dense weights vs. BasisN coefficients (+ group index) vs. the basis, and what fits.

    basis_bytes: n·m weights at weight_bits (held by the crossbars after one write, listed for completeness).
    compression_ratio: dense weight bytes / (coefficient bytes + basis bytes). `basis`/`override_basis`: as in
    evaluate.
    """
    spec = priced_basis(basis, shapes.basis, shapes.model_basis, override_basis)
    dense = float(dense_weight_bytes(shapes, config).sum())
    coef = float(coefficient_bytes(shapes, spec, config).sum())
    basis_bytes = spec.n_basis * spec.segment_len * config.weight_bits / 8
    mapped = shapes.arrays()["mapped"]
    kept = float(dense_weight_bytes(shapes, config)[~mapped].sum())
    return {
        "network": shapes.name,
        **spec.as_dict(),
        "dense_weight_bytes": dense,
        "coef_bytes": coef,
        "basis_bytes": basis_bytes,
        "kept_dense_bytes": kept,
        "compression_ratio": dense / (coef + basis_bytes + kept),
        "sram_bytes": config.sram_bytes,
        "dense_fits_sram": dense <= config.sram_bytes,
        "coef_fits_sram": coef <= config.sram_bytes,
    }


def _finish(
    shapes: NetworkShapes,
    config: HardwareConfig,
    scheme: str,
    n: int,
    batch: int,
    basis: BasisSpec | None,
    cycles_per_batch: int,
    energy: dict[str, np.ndarray],
    layer_data: dict[str, Any] | Callable[[], dict[str, Any]],
    totals_extra: dict[str, Any],
    leak: _Leakage,
) -> Evaluation:
    """Totals per inference from the per-batch cycles and the per-layer per-inference energies.

    `layer_data` (a dict or a function returning one, for lazy evaluation) holds `cycles_batch` (per-layer cycles
    per batch) and the other per-layer columns. `leak` gives the static energy from the latency.
    """
    cycles = cycles_per_batch / batch
    latency = cycles * config.t_cycle
    static_j = leak.joules(config) / batch
    energy_totals = {k: float(v.sum()) for k, v in energy.items()} | {"energy_static_j": static_j}
    energy_j = sum(energy_totals.values())
    macs = _tiling(shapes, config).macs_total
    floor_batch = _ceil_div(batch * macs * config.cols_per_weight, n * config.rows * config.cols) * config.input_steps
    floor_cycles = floor_batch / batch

    def layers() -> dict[str, Any]:
        data = dict(layer_data() if callable(layer_data) else layer_data)
        cycles_batch = data.pop("cycles_batch")
        per_layer = cycles_batch / batch
        share = cycles_batch / cycles_per_batch if cycles_per_batch else np.zeros(len(cycles_batch))
        layer_energy = energy | {"energy_static_j": static_j * share}  # shared by cycles: the layers sum to the total
        return (
            data
            | layer_energy
            | {"cycles": per_layer, "latency_s": per_layer * config.t_cycle, "energy_j": sum(layer_energy.values())}
        )

    totals = {
        "network": shapes.name,
        "scheme": scheme,
        "n_crossbars": n,
        "batch": batch,
        "verify_iters": config.verify_iters,
        "digital_lanes": config.digital_lanes,
        "write_cols": config.write_cols,
        "write_crossbars": config.write_crossbars,
        "memory": config.memory,
        "operand_delivery": config.operand_delivery,
        "sram_bytes": config.sram_bytes,
        "n_basis": basis.n_basis if basis else None,
        "segment_len": basis.segment_len if basis else None,
        "groups": basis.groups if basis else None,
        "coef_bits": basis.coef_bits if basis else None,
        "coef_quant": basis.coef_quant if basis else None,
        "cycles": cycles,
        "cycles_per_batch": cycles_per_batch,
        "latency_s": latency,
        **energy_totals,
        "energy_j": energy_j,
        "edp_js": energy_j * latency,
        "macs": macs,
        "floor_cycles": floor_cycles,
        "cycles_over_floor": cycles / floor_cycles,
        **totals_extra,
    }
    totals["program_once_latency_s"] = totals["program_once_cycles"] * config.t_cycle
    return Evaluation(totals, layers, shapes)


# ----------------------------------------------------------------------------------------------------------------
# The schemes.
# ----------------------------------------------------------------------------------------------------------------
def _ideal(
    shapes: NetworkShapes,
    config: HardwareConfig,
    n: int,
    batch: int,
    scheme: str = "ideal",
    copies: np.ndarray | None = None,
    pipelined: bool = False,
    option: str | None = None,
) -> Evaluation:
    """Every tile on its own crossbar, written once; layers run one after another: cycles_l = B·P_l·T_in.

    With `copies` (k_l copies of layer l on spare crossbars, a fitting reprogram_best): each copy computes a share
    of the B·P_l output pixels, cycles_l = ceil(B·P_l/k_l)·T_in; the crossbar steps, hence the energy, are the same.
    `pipelined` (reprogram_best's fits_pipelined / replicated_pipelined): the layers run at once on their own
    crossbars, a batch takes max_l cycles_l (fill and drain not charged); the total is shared among the layers in
    proportion to their own cycles.
    """
    tiling = _tiling(shapes, config)
    t_in = config.input_steps
    copies = np.ones(len(tiling.tiles), dtype=np.int64) if copies is None else copies
    cycles_batch = _ceil_div(batch * tiling.P, copies) * t_in
    total_cycles = int(cycles_batch.max() if pipelined else cycles_batch.sum())
    if pipelined:
        cycles_batch = cycles_batch * (total_cycles / cycles_batch.sum())
    steps = tiling.P * tiling.tiles * t_in  # per inference: B·P_l·t_l·T_in / B
    zeros = np.zeros(len(steps))
    energy = _energy_terms(steps, zeros, zeros, config)
    traffic = _traffic(config, zeros, 0.0, batch)  # written once: nothing moves per inference
    used = int((tiling.tiles * copies).sum())
    once_writes = tiling.once_writes(config.write_cols, config.write_crossbars)
    once_cycles = int(once_writes * int(copies.max())) * config.row_program_cycles  # copies written in turn
    once_energy = float((tiling.cells * copies).sum()) * config.e_cell_program
    layer_data = {
        "cycles_batch": cycles_batch,
        "tiles": tiling.tiles,
        "copies": copies,
        "rounds": np.ones(len(steps), dtype=np.int64),
        "compute_cycles": cycles_batch / batch,
        "program_cycles": zeros,
        "bytes_moved": zeros,
        "transfer_cycles": zeros,
    }
    replicated = bool((copies > 1).any())
    if option is None:
        option = "replicated" if replicated else ("fits" if scheme != "ideal" else "ideal")
    extra = {
        "crossbars_used": used,
        "tiles_total": tiling.total,
        "fits": scheme == "ideal" or tiling.total <= n,
        "rounds_total": 1,
        "round_size": None,
        "option": option,
        "program_once_cycles": once_cycles,
        "program_once_energy_j": once_energy,
        **_traffic_totals(traffic, batch),
    }
    powered = used * total_cycles if pipelined else float((tiling.tiles * copies * cycles_batch).sum())
    leak = _Leakage(powered, float(steps.sum()) * batch)  # a layer's crossbars powered while it runs
    return _finish(shapes, config, scheme, n, batch, None, total_cycles, energy, layer_data, extra, leak)


@dataclass(frozen=True)
class _MinMax:
    """Per prefix (row r of a group: its layers 0..r): the copies' target c, the round's compute in pixels per copy
    summed (sequential) and at its slowest layer (pipelined), and the crossbars the copies hold."""

    target: np.ndarray  # (groups, M)
    pixels_sum: np.ndarray
    pixels_max: np.ndarray
    crossbars: np.ndarray


def _copies_at(work: np.ndarray, cap: np.ndarray | None, target: Any) -> np.ndarray:
    """k_l = min(cap_l, ceil(work_l / c)), at least 1."""
    copies = np.ceil(work / target)
    if cap is not None:
        copies = np.minimum(copies, cap)
    return np.maximum(copies, 1).astype(np.int64)


def _minmax_copies(tiles: np.ndarray, work: np.ndarray, budget: int, cap: np.ndarray | None = None) -> _MinMax:
    """Copies for every prefix of groups of layers that minimise max_l ceil(work_l/k_l) on `budget` crossbars: the
    smallest target c with sum_l t_l·min(cap_l, ceil(work_l/c)) <= budget, k_l = min(cap_l, ceil(work_l/c)).

    Exact for a pipelined round (its time is its slowest layer); for a sequential round a good, feasible
    allocation (every layer at most c pixels per copy). `tiles`, `work` (and `cap`, at most that many copies of a
    layer) are (groups, M): groups of M layers, zeros padding a shorter group; every prefix must fit uncopied
    (sum t_l <= budget).

    Prefix by prefix, all groups at once: c only grows as a layer joins, so the previous prefix's c is tried first
    (it fits most of the time) and a binary search runs only where it does not, between bounds from
    sum t·ceil(w/c) in [sum t·w/c, sum t·w/c + sum t] (the lower one only without caps).
    """
    groups, size = tiles.shape
    # floats: work <= MAX_BATCH x P stays far below 2^52, where ceil of a float quotient is exact
    work_f, tiles_f = work.astype(float), tiles.astype(float)
    cap_f = None if cap is None else cap.astype(float)
    result = _MinMax(*(np.zeros((groups, size)) for _ in range(4)))
    previous = np.ones(groups)
    everyone = np.arange(groups)
    for r in range(size):
        w, t = work_f[:, : r + 1], tiles_f[:, : r + 1]
        k_cap = None if cap_f is None else cap_f[:, : r + 1]

        def need(c: np.ndarray, rows: np.ndarray, w=w, t=t, k_cap=k_cap) -> np.ndarray:
            return (t[rows] * _copies_at(w[rows], None if k_cap is None else k_cap[rows], c[:, None])).sum(axis=1)

        area, held = (t * w).sum(axis=1), t.sum(axis=1)
        high = np.maximum(w.max(axis=1), 1)  # one copy each: always fits
        spare = budget - held
        high = np.maximum(np.where(spare > 0, np.minimum(high, np.ceil(area / np.maximum(spare, 1))), high), 1)
        low = np.maximum(np.ceil(area / budget) - 1, 0) if cap is None else np.zeros(groups)
        low = np.maximum(low, previous - 1)  # below the previous prefix's c nothing fits
        first = np.minimum(np.maximum(previous, 1), high)
        high = np.where(need(first, everyone) <= budget, first, high)
        rows = np.flatnonzero(high - low > 1)
        while len(rows):
            mid = np.floor((low[rows] + high[rows]) / 2)
            ok = need(mid, rows) <= budget
            high[rows[ok]] = mid[ok]
            low[rows[~ok]] = mid[~ok]
            rows = rows[high[rows] - low[rows] > 1]
        copies = _copies_at(w, k_cap, high[:, None])
        pixels = np.where(w > 0, np.ceil(w / copies), 0)
        result.target[:, r], result.crossbars[:, r] = high, (copies * t).sum(axis=1)
        result.pixels_sum[:, r], result.pixels_max[:, r] = pixels.sum(axis=1), pixels.max(axis=1)
        previous = high
    return result


@dataclass(frozen=True)
class _LayerRounds:
    """A schedule of rounds of whole layers (a layer larger than N alone, in rounds of N tiles), each round's spare
    crossbars holding copies of its layers. Per layer, per batch: copies, rounds, compute and exposed writes."""

    cycles: int  # per batch
    crossbars_used: int  # the most crossbars a round holds
    powered: float  # crossbar-cycles: each round's crossbars for its duration
    copies: np.ndarray
    rounds: np.ndarray
    compute: np.ndarray
    program: np.ndarray
    rounds_total: int


def _big_layer_writes(
    tiling: _Tiling, config: HardwareConfig, layers: np.ndarray, n: int, bytes_per_cycle: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(write cycles, rounds) of each layer of `layers` (each larger than N) split alone in rounds of N tiles (of
    whole waves of write_crossbars when N is larger), written in waves as `reprogram`, all layers at once."""
    if not len(layers):
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    tile = np.concatenate([np.arange(tiling.first[i], tiling.last[i] + 1) for i in layers])
    owner = np.repeat(np.arange(len(layers)), tiling.tiles[layers])
    local = tile - tiling.first[layers][owner]
    wave = n if config.write_crossbars is None else min(n, config.write_crossbars)
    chunk = n // wave * wave  # whole waves (a partial wave would only add a wave), as the round table's sizes
    rounds_of = _ceil_div(tiling.tiles[layers], chunk)
    first_round = np.cumsum(rounds_of) - rounds_of
    round_id = first_round[owner] + local // chunk  # rounds numbered over all the layers
    wave_id = round_id * (chunk // wave) + (local % chunk) // wave  # waves start again in each round
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(wave_id)) + 1])
    steps = tiling.write_steps(config.write_cols)[tile]
    rows = np.bincount(round_id[bounds], weights=np.maximum.reduceat(steps, bounds), minlength=int(rounds_of.sum()))
    writes = rows * config.row_program_cycles
    if bytes_per_cycle is not None:
        round_bytes = np.bincount(round_id, weights=tiling.tile_weights[tile]) * (config.weight_bits / 8)
        writes = np.maximum(writes, transfer_cycles(round_bytes, bytes_per_cycle))
    return np.bincount(np.repeat(np.arange(len(layers)), rounds_of), weights=writes), rounds_of


@dataclass(frozen=True)
class _RoundGroups:
    """Every candidate round of whole layers on N crossbars for a batch: group i holds layers [i, i + length_i)
    (those fitting in N together), row r its first r+1 layers, with their min-max copies and compute. Without a
    `write_crossbars` limit it does not depend on the write constants, so one build serves every write sweep;
    cached on the tiling."""

    tiles: np.ndarray  # per layer
    work: np.ndarray  # B·P_l per layer
    valid: np.ndarray  # (count, size): prefix r of group i exists
    clipped: np.ndarray  # (count, size): the layer index of each entry (clipped to the last layer)
    cap: np.ndarray | None  # per layer: at most that many copies (None: no limit)
    target: np.ndarray  # (count, size): the copies' target c of each prefix (_minmax_copies)
    crossbars: np.ndarray  # (count, size): crossbars a prefix holds with its copies
    compute: np.ndarray  # (count, size): sequential compute of a prefix
    compute_pipelined: np.ndarray  # (count, size): its slowest layer
    big: np.ndarray  # layers with more than N tiles


def _layer_wave_rows(tiling: _Tiling, write_cols: int | None, write_crossbars: int) -> np.ndarray:
    """Write steps of each layer written alone in waves of `write_crossbars` consecutive tiles: sum of wave maxima."""
    local = np.arange(tiling.total) - tiling.first[tiling.layer_of_tile]
    wave_id = tiling.layer_of_tile * (int(tiling.tiles.max()) + 1) + local // write_crossbars
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(wave_id)) + 1])
    waves = np.maximum.reduceat(tiling.write_steps(write_cols), bounds)
    return np.bincount(tiling.layer_of_tile[bounds], weights=waves, minlength=len(tiling.tiles))


def _round_groups(
    tiling: _Tiling, n: int, batch: int, t_in: int, write_cols: int | None, write_crossbars: int | None
) -> _RoundGroups:
    """With `write_crossbars` w, a round writes its layers one after another in waves of w (`_layer_wave_rows`), and
    a layer's copies only fill the waves its own tiles need (at most ceil(t/w)·w crossbars), and only when every
    such wave is written at the layer's tallest tile: a copy never adds write time, so more crossbars never slow a
    round down."""
    key = ("groups", n, batch, t_in, write_cols if write_crossbars else None, write_crossbars)
    if key in tiling._plans:
        return tiling._plans[key]
    tiles, work = tiling.tiles.astype(np.int64), (batch * tiling.P).astype(np.int64)
    count = len(tiles)
    cum_tiles = np.concatenate([[0], np.cumsum(tiles)])
    lengths = np.searchsorted(cum_tiles, cum_tiles[:-1] + n, side="right") - 1 - np.arange(count)
    size = max(int(lengths.max()), 1)
    index = np.arange(count)[:, None] + np.arange(size)[None, :]
    valid = np.arange(size)[None, :] < lengths[:, None]
    clipped = np.minimum(index, count - 1)
    group_tiles, group_work = np.where(valid, tiles[clipped], 0), np.where(valid, work[clipped], 0)
    cap = None
    if write_crossbars is not None:
        waves = _ceil_div(tiles, write_crossbars)
        tallest = tiling.layer_write_steps(write_cols)
        even = _layer_wave_rows(tiling, write_cols, write_crossbars) == waves * tallest
        cap = np.where(even, np.maximum(waves * write_crossbars // tiles, 1), 1)
    group_cap = None if cap is None else np.where(valid, cap[clipped], 1)
    minmax = _minmax_copies(group_tiles, group_work, n, group_cap)
    groups = _RoundGroups(tiles, work, valid, clipped, cap, minmax.target, minmax.crossbars,
                          minmax.pixels_sum * t_in, minmax.pixels_max * t_in, np.flatnonzero(lengths == 0))  # fmt: skip
    tiling._plans[key] = groups
    return groups


def _layer_rounds(
    tiling: _Tiling, config: HardwareConfig, n: int, batch: int, pipelined: bool, bytes_per_cycle: float | None
) -> _LayerRounds:
    """The fastest split of the layers into consecutive rounds of whole layers with copies (dynamic programming).

    A round of layers [i, j) fitting in N: copies from _minmax_copies (_round_groups); its writes are the largest
    write steps of its layers (every crossbar, copies included, written at once), or with `write_crossbars` its
    layers' waves one after another, at least the transfer of its weights when memory is charged; its compute
    sum_l (pipelined: max_l) ceil(B·P_l/k_l)·T_in. A layer with more than N tiles is split in rounds of N tiles like
    `reprogram` (no copies). Cached on the tiling.
    """
    key = (config.write_cols, config.write_crossbars, config.row_program_cycles, config.input_steps,
           config.weight_bits, bytes_per_cycle, n, batch, pipelined)  # fmt: skip
    if key in tiling._plans:
        return tiling._plans[key]
    t_in, rpc, wc = config.input_steps, config.row_program_cycles, config.write_crossbars
    groups = _round_groups(tiling, n, batch, t_in, config.write_cols, wc)
    tiles, work, valid, clipped = groups.tiles, groups.work, groups.valid, groups.clipped
    count = len(tiles)
    layer_steps = tiling.layer_write_steps(config.write_cols)
    layer_bytes = tiling.weights * (config.weight_bits / 8)
    if wc is None:  # every crossbar of the round at once: its tallest tile
        rows = np.maximum.accumulate(np.where(valid, layer_steps[clipped], 0), axis=1)
    else:  # layer by layer, each in its own waves (copies fill those waves)
        rows = np.cumsum(np.where(valid, _layer_wave_rows(tiling, config.write_cols, wc)[clipped], 0), axis=1)
    writes = rows * rpc
    if bytes_per_cycle is not None:
        writes = np.maximum(writes, transfer_cycles(np.cumsum(np.where(valid, layer_bytes[clipped], 0), axis=1),
                                                    bytes_per_cycle))  # fmt: skip
    big_writes, big_rounds = _big_layer_writes(tiling, config, groups.big, n, bytes_per_cycle)
    big = {int(i): (float(w), int(r)) for i, w, r in zip(groups.big, big_writes, big_rounds)}
    compute = groups.compute_pipelined if pipelined else groups.compute
    cost = np.full((count + 1, count + 1), np.inf)  # cost[i, j]: one round of layers [i, j)
    starts, prefix = np.nonzero(valid)
    cost[starts, starts + prefix + 1] = (writes + compute)[starts, prefix]
    for i, (big_write, rounds) in big.items():
        cost[i, i + 1] = big_write + rounds * work[i] * t_in
    best = np.full(count + 1, np.inf)
    best[0] = 0.0
    start_of = np.zeros(count + 1, dtype=np.int64)
    for j in range(1, count + 1):
        candidates = best[:j] + cost[:j, j]
        start_of[j] = int(np.argmin(candidates))
        best[j] = candidates[start_of[j]]
    copies_l, rounds_l = np.ones(count, dtype=np.int64), np.ones(count, dtype=np.int64)
    compute_l, program_l = np.zeros(count), np.zeros(count)
    j, rounds_total, used, powered = count, 0, 0, 0.0
    while j > 0:  # walk the chosen rounds back
        i = int(start_of[j])
        if i in big:
            big_write, rounds = big[i]
            rounds_l[i], compute_l[i], program_l[i] = rounds, cost[i, j] - big_write, big_write
            rounds_total += rounds
            held = min(int(tiles[i]), n if wc is None or wc >= n else n // wc * wc)
        else:
            k = _copies_at(work[i:j].astype(float), None if groups.cap is None else groups.cap[i:j],
                           groups.target[i, j - i - 1])  # fmt: skip
            layer_times = _ceil_div(work[i:j], k) * t_in
            round_compute = compute[i, j - i - 1]
            held_l = k * tiles[i:j]
            copies_l[i:j] = k
            compute_l[i:j] = layer_times * (round_compute / layer_times.sum())  # shared by the layers' own cycles
            program_l[i:j] = writes[i, j - i - 1] * held_l / held_l.sum()
            rounds_total += 1
            held = int(held_l.sum())
        used, powered = max(used, held), powered + held * cost[i, j]
        j = i
    tiling._plans[key] = _LayerRounds(
        int(round(best[count])), used, powered, copies_l, rounds_l, compute_l, program_l, rounds_total
    )
    return tiling._plans[key]


def replica_counts(shapes: NetworkShapes, config: HardwareConfig, n_crossbars: int, batch: int = 1) -> np.ndarray:
    """Copies k_l of every layer when all tiles fit in N with crossbars to spare (docs/method.md §2.4, best baseline).

    Greedy: repeatedly give the layer whose next useful copy saves the most cycles per crossbar another copy
    (a copy is useful when it lowers ceil(B·P_l/k_l)), and stop at the first that does not fit in the spare
    crossbars. Stopping there (instead of trying smaller layers) makes the allocation for N a prefix of the one
    for N + 1, so cycles never increase with N.
    """
    tiling = _tiling(shapes, config)
    copies = np.ones(len(tiling.tiles), dtype=np.int64)
    spare = n_crossbars - tiling.total
    if spare <= 0:
        return copies
    work = batch * tiling.P

    def step(layer: int) -> tuple[float, int, int, int] | None:
        current = _ceil_div(int(work[layer]), int(copies[layer]))
        if current <= 1:
            return None
        target = _ceil_div(int(work[layer]), current - 1)  # fewest copies that lower the pixels per copy
        cost = (target - int(copies[layer])) * int(tiling.tiles[layer])
        saving = current - _ceil_div(int(work[layer]), target)
        return (-saving / cost, layer, target, cost)

    heap = [item for item in (step(i) for i in range(len(copies))) if item is not None]
    heapq.heapify(heap)
    while heap:
        _, layer, target, cost = heapq.heappop(heap)
        if cost > spare:
            break
        copies[layer] = target
        spare -= cost
        nxt = step(layer)
        if nxt is not None:
            heapq.heappush(heap, nxt)
    return copies


FITTING_OPTIONS = ("fits", "replicated", "fits_pipelined", "replicated_pipelined")
ROUND_OPTIONS = (
    "plain",
    "pingpong",
    "plain_pipelined",
    "pingpong_pipelined",
    "layer_rounds",
    "layer_rounds_pipelined",
)


def _fitting_options(
    shapes: NetworkShapes, config: HardwareConfig, n: int, batch: int, scheme: str
) -> dict[str, tuple[int, np.ndarray | None, bool]]:
    """option -> (cycles per batch, copies, pipelined) when every tile fits: the ideal mapping, and for
    reprogram_best its replicas on the spare crossbars (`replica_counts`) and, with `reprogram_pipeline`, the
    layers pipelined (without copies, and with min-max copies)."""
    tiling = _tiling(shapes, config)
    work = batch * tiling.P

    def cycles(copies: np.ndarray | None, pipelined: bool) -> int:
        per_layer = _ceil_div(work, 1 if copies is None else copies) * config.input_steps
        return int(per_layer.max() if pipelined else per_layer.sum())

    options = {"fits": (cycles(None, False), None, False)}
    if scheme != "reprogram_best":
        return options
    replicas = replica_counts(shapes, config, n, batch)
    options["replicated"] = (cycles(replicas, False), replicas, False)
    if config.reprogram_pipeline:
        options["fits_pipelined"] = (cycles(None, True), None, True)
        target = _minmax_copies(tiling.tiles[None, :].astype(np.int64), work[None, :].astype(np.int64), n).target
        minmax = _copies_at(work.astype(float), None, target[0, -1])
        options["replicated_pipelined"] = (cycles(minmax, True), minmax, True)
    return options


def _round_options(
    tiling: _Tiling, config: HardwareConfig, n: int, batch: int, scheme: str, traffic: MemoryTraffic
) -> dict[str, tuple[float, Any]]:
    """option -> (cycles per batch, round size N' or a _LayerRounds plan) when the tiles do not fit.

    reprogram: plain rounds; reprogram_pingpong: ping-pong halves; reprogram_best: both, each also with the
    layers of a round pipelined (`reprogram_pipeline`). Among equal costs the largest N' is taken. (_options adds
    the rounds of whole layers with copies.)
    """
    best = scheme == "reprogram_best"
    table = tiling.table(config.write_cols, config.write_crossbars, n)
    options: dict[str, tuple[float, Any]] = {}
    for pipelined in (False, True) if best and config.reprogram_pipeline else (False,):
        plain, overlap = table.costs(
            config.row_program_cycles,
            batch * config.input_steps,
            traffic.bytes_per_cycle,
            config.weight_bits / 8,
            pipelined,
        )
        suffix = "_pipelined" if pipelined else ""
        for name, costs, limit in (("plain", plain, n), ("pingpong", overlap, n // 2)):
            wanted = name == "plain" and (scheme != "reprogram_pingpong" or n < 2)  # one crossbar has no halves
            wanted |= name == "pingpong" and scheme != "reprogram" and n >= 2
            if wanted:
                fit = np.flatnonzero(table.sizes <= limit)
                i = fit[np.flatnonzero(costs[fit] == costs[fit].min())[-1]]  # the largest N' among the cheapest
                options[name + suffix] = (float(costs[i]), int(table.sizes[i]))
    return options


def _layer_rounds_could_win(tiling: _Tiling, config: HardwareConfig, n: int, batch: int, best: float) -> bool:
    """Whether a lower bound on any layer-round schedule is below `best` (an exact shortcut: otherwise none is
    planned). Its writes: at least one round per N tiles, each writing at least the shortest layer's rows, and at
    least the tallest layer's rows (some round holds it); then every crossbar step shared by N crossbars."""
    tallest = tiling.layer_write_steps(config.write_cols)
    rows = max(_ceil_div(tiling.total, n) * int(tallest.min()), int(tallest.max()))
    bound = rows * config.row_program_cycles + float((tiling.tiles * tiling.P).sum()) * batch * config.input_steps / n
    return bound < best


def _options(
    shapes: NetworkShapes,
    tiling: _Tiling,
    config: HardwareConfig,
    n: int,
    batch: int,
    scheme: str,
    traffic: MemoryTraffic,
    every: bool = False,
) -> dict[str, tuple]:
    """The schedules a scheme chooses from at N: the fitting ones when every tile fits, else the round ones. When
    everything fits, reprogram_best may still rewrite rounds of whole layers with more copies every batch (cheap
    writes can make that faster), so that a larger N never loses a schedule a smaller one had.

    reprogram_best's rounds of whole layers with copies (`reprogram_replicate`) come pipelined too when
    `reprogram_pipeline` is on; then sequential layer rounds are never faster (same copies and writes, sum >= max),
    so they are planned only for `every` (reprogram_schedules)."""
    if tiling.total > n:
        options: dict[str, tuple] = dict(_round_options(tiling, config, n, batch, scheme, traffic))
    else:
        options = dict(_fitting_options(shapes, config, n, batch, scheme))
    if scheme == "reprogram_best" and config.reprogram_replicate and (every or _layer_rounds_could_win(
        tiling, config, n, batch, min(value[0] for value in options.values())
    )):  # fmt: skip
        for pipelined in (False, True) if config.reprogram_pipeline else (False,):
            if not pipelined and config.reprogram_pipeline and not every:
                continue
            plan = _layer_rounds(tiling, config, n, batch, pipelined, traffic.bytes_per_cycle)
            options["layer_rounds" + ("_pipelined" if pipelined else "")] = (float(plan.cycles), plan)
    return options


def _weight_stream(shapes: NetworkShapes, config: HardwareConfig, batch: int) -> MemoryTraffic:
    """The reprogramming baseline's traffic: every dense weight, once per batch (charged with `memory`)."""
    weight_bytes = dense_weight_bytes(shapes, config)
    return _traffic(config, weight_bytes, float(weight_bytes.sum()), batch)


def reprogram_schedules(
    shapes: NetworkShapes, config: HardwareConfig, n_crossbars: int, batch: int = 1
) -> dict[str, float]:
    """Cycles per inference of every schedule reprogram_best chooses from (FITTING_OPTIONS or ROUND_OPTIONS, those
    the config enables): to see what each option buys the baseline."""
    check_int("n_crossbars", n_crossbars, high=MAX_CROSSBARS)
    check_int("batch", batch, high=MAX_BATCH)
    tiling = _tiling(shapes, config)
    traffic = _weight_stream(shapes, config, batch)
    options = _options(shapes, tiling, config, n_crossbars, batch, "reprogram_best", traffic, every=True)
    return {name: value[0] / batch for name, value in options.items()}


def _round_plan(
    tiling: _Tiling, config: HardwareConfig, size: int, batch: int, option: str, traffic: MemoryTraffic
) -> dict[str, Any]:
    """Per layer, per batch: rounds, copies, compute and exposed writes of the table option `option` on rounds of
    `size` tiles (each round's exposed writes go to the layers of the round being written, by their tiles)."""
    t_in, rpc, pipelined = config.input_steps, config.row_program_cycles, option.endswith("_pipelined")
    rounds = tiling.rounds(size)
    compute_batch = rounds * tiling.P * (batch * t_in)
    comp_round = tiling.round_compute(size, pipelined) * (batch * t_in)
    if pipelined:  # a round's compute shared by its layers in proportion to their own cycles
        compute_batch = compute_batch * (comp_round.sum() / compute_batch.sum())
    prog_round = tiling.round_writes(size, config.write_cols, config.write_crossbars) * rpc
    if traffic.bytes_per_cycle is not None:  # a round's writes wait for its weights (bandwidth-bound)
        bounds = np.minimum(np.arange(0, tiling.total + size, size), tiling.total)
        cum = np.concatenate([[0], np.cumsum(tiling.tile_weights)])
        round_bytes = np.diff(cum[np.unique(bounds)]) * (config.weight_bits / 8)
        prog_round = np.maximum(prog_round, transfer_cycles(round_bytes, traffic.bytes_per_cycle))
    if option.startswith("plain"):
        exposed, written = prog_round, np.arange(len(prog_round))  # writes of round r, before it computes
    else:
        written = np.roll(np.arange(len(prog_round)), -1)
        exposed = np.maximum(prog_round[written] - comp_round, 0)  # writes of r+1 not hidden by compute of r
    # each round's exposed writes go to the layers of the round being written, in proportion to their tiles
    round_of_tile = np.arange(tiling.total) // size
    share = np.zeros(len(prog_round))
    share[written] = exposed
    per_tile = share[round_of_tile] / np.bincount(round_of_tile)[round_of_tile]
    program_layer = np.bincount(tiling.layer_of_tile, weights=per_tile, minlength=len(rounds))
    return {"rounds": rounds, "copies": np.ones(len(rounds), dtype=np.int64), "compute": compute_batch,
            "program": program_layer}  # fmt: skip


def _reprogram(shapes: NetworkShapes, config: HardwareConfig, n: int, batch: int, scheme: str) -> Evaluation:
    """N crossbars, tiles written round after round (docs/method.md §2.2), best greedy packing on N' <= N crossbars.

    reprogram: cycles = sum_r prog_r + sum_l rounds_l·B·P_l·T_in, prog_r = (write steps of round r)·N_wv·
    ceil(t_wi/t_cycle). reprogram_pingpong: two halves of N' <= N/2 crossbars; round r+1 is written on one half
    while round r computes on the other: sum_r max(compute_r, prog_{r+1}) in the steady state (the next batch's
    first round is written during this batch's last). reprogram_best: the fastest of the options of `_options`.
    Energy: every cell written once per batch (layer rounds: every copy), the same crossbar steps.
    """
    tiling = _tiling(shapes, config)
    traffic = _weight_stream(shapes, config, batch)
    options = _options(shapes, tiling, config, n, batch, scheme, traffic)
    option = min(options, key=lambda name: options[name][0])  # ties: the first listed
    if option in FITTING_OPTIONS:  # written once, then it is the ideal mapping (+ copies, pipelining)
        _, copies, pipelined = options[option]
        return _ideal(shapes, config, n, batch, scheme=scheme, copies=copies, pipelined=pipelined, option=option)
    t_in = config.input_steps
    cost, chosen = options[option]
    steps = tiling.P * tiling.tiles * t_in
    copies = chosen.copies if isinstance(chosen, _LayerRounds) else np.ones(len(steps), dtype=np.int64)
    energy = _energy_terms(
        steps, np.zeros(len(steps)), tiling.cells * copies / batch, config, memory_energy=traffic.energy
    )

    def layer_data() -> dict[str, Any]:
        if isinstance(chosen, _LayerRounds):
            plan = {"rounds": chosen.rounds, "copies": chosen.copies, "compute": chosen.compute,
                    "program": chosen.program}  # fmt: skip
        else:
            plan = _round_plan(tiling, config, chosen, batch, option, traffic)
        return {
            "cycles_batch": plan["compute"] + plan["program"],
            "tiles": tiling.tiles,
            "copies": plan["copies"],
            "rounds": plan["rounds"],
            "compute_cycles": plan["compute"] / batch,
            "program_cycles": plan["program"] / batch,
            "bytes_moved": traffic.bytes_batch / batch,
            "transfer_cycles": traffic.transfer_batch / batch,
        }

    if isinstance(chosen, _LayerRounds):
        used, size, rounds_total = chosen.crossbars_used, None, chosen.rounds_total
    else:
        used, size = chosen * (2 if option.startswith("pingpong") else 1), chosen
        rounds_total = _ceil_div(tiling.total, chosen)
    extra = {
        "crossbars_used": used,
        "tiles_total": tiling.total,
        "fits": False,
        "rounds_total": rounds_total,
        "round_size": size,
        "option": option,
        "program_once_cycles": 0,
        "program_once_energy_j": 0.0,
        **_traffic_totals(traffic, batch),
    }
    powered = chosen.powered if isinstance(chosen, _LayerRounds) else used * cost  # a round's crossbars, while it runs
    leak = _Leakage(float(powered), float(steps.sum()) * batch)
    return _finish(shapes, config, scheme, n, batch, None, int(round(cost)), energy, layer_data, extra, leak)


def _digital(shapes: NetworkShapes, config: HardwareConfig, n: int, batch: int) -> Evaluation:
    """docs/method.md §2.4 `digital`: the N·digital_lanes MAC lanes BasisN is given run the dense network, no crossbars.

    cycles_l = ceil(B·MACs_l / (N·digital_lanes)); energy MACs_l·mac_energy(weight_bits, input_bits). Its operands,
    the dense weights, are delivered from the SRAM (DRAM when they do not fit) once per batch, with
    `operand_delivery` or `memory` on (a layer is bound by max(MAC cycles, transfer cycles)); there are no crossbars
    and no writes. The N units of lanes leak while idle.
    """
    tiling = _tiling(shapes, config)
    macs = tiling.macs
    weight_bytes = dense_weight_bytes(shapes, config)
    traffic = _traffic(config, weight_bytes, float(weight_bytes.sum()), batch, operands=True)
    cycles_batch = np.maximum(_ceil_div(batch * macs, n * config.digital_lanes), traffic.transfer_batch).astype(
        np.int64
    )
    zeros = np.zeros(len(macs))
    mac_j = config.mac_energy(config.weight_bits, operand_bits=config.input_bits)
    energy = _energy_terms(zeros, zeros, zeros, config, macs * mac_j, memory_energy=traffic.energy)
    layer_data = {
        "cycles_batch": cycles_batch,
        "tiles": np.zeros(len(macs), dtype=np.int64),
        "digital": cycles_batch / batch,
        "bound": np.full(len(macs), "digital"),
        "compute_cycles": cycles_batch / batch,
        "program_cycles": zeros,
        "bytes_moved": traffic.bytes_batch / batch,
        "transfer_cycles": traffic.transfer_batch / batch,
    }
    extra = {
        "crossbars_used": 0,
        "tiles_total": tiling.total,
        "fits": True,
        "rounds_total": 0,
        "round_size": None,
        "option": "digital",
        "program_once_cycles": 0,
        "program_once_energy_j": 0.0,
        "digital_cycles": float(cycles_batch.sum()) / batch,
        **_traffic_totals(traffic, batch),
    }
    leak = _Leakage(0.0, 0.0, float(n * cycles_batch.sum()), float(macs.sum()) * batch / config.digital_lanes)
    return _finish(shapes, config, "digital", n, batch, None, int(cycles_batch.sum()), energy, layer_data, extra, leak)


@dataclass(frozen=True)
class BasisLayout:
    """How the basis sits on the crossbars: `copies` parallel segment reads, each over `xbars_per_read`."""

    name: str  # "dense" | "grouped"
    copies: int  # segments read in parallel (K, or G·K_g)
    xbars_per_read: int  # crossbars one segment read activates (X, or X_g)
    in_use: int  # crossbars holding the basis (K·X, or G·K_g·X_g)
    cells: int  # cells written once


def basis_layouts(basis: BasisSpec, config: HardwareConfig, available: int) -> list[BasisLayout]:
    """The placements of the basis on `available` crossbars (docs/method.md §2.2): dense always, grouped if G > 1.

    X = ceil(n·cpw/C), K = floor(N/X); grouped: X_g = ceil((n/G)·cpw/C), K_g = floor(N/(G·X_g)), if K_g >= 1.
    """
    cpw, cols, m = config.cols_per_weight, config.cols, basis.segment_len
    x = _ceil_div(basis.n_basis * cpw, cols)
    k = available // x
    layouts = [BasisLayout("dense", k, x, k * x, k * m * basis.n_basis * cpw)] if k >= 1 else []
    if basis.groups > 1:
        x_g = _ceil_div(basis.group_size * cpw, cols)
        k_g = available // (basis.groups * x_g)
        if k_g >= 1:
            copies = basis.groups * k_g
            layouts.append(BasisLayout("grouped", copies, x_g, copies * x_g, copies * m * basis.group_size * cpw))
    return layouts


def _basisn_layouts(basis: BasisSpec, config: HardwareConfig, n: int, dense_tiles: int) -> list[BasisLayout]:
    """The basis placements on the N - dense_tiles crossbars left by the layers kept dense; raises if none fits."""
    layouts = basis_layouts(basis, config, n - dense_tiles)
    if not layouts:
        x = _ceil_div(basis.n_basis * config.cols_per_weight, config.cols)
        kept = f" + {dense_tiles} for the layers kept dense" if dense_tiles else ""
        raise ValueError(
            f"n_crossbars={n} is not allowed for basisn: one basis copy needs {x} crossbar(s){kept}; "
            f"use n_crossbars >= {x + dense_tiles}"
        )
    return layouts


@dataclass(frozen=True, eq=False)
class _BasisnWork:
    """What basisn computes on one network for one basis and batch, whatever the layout (docs/method.md §2.2-§2.3).

    `run` prices one BasisLayout; `layer_data` and `bound` describe the chosen layout's run per layer.
    """

    config: HardwareConfig
    batch: int
    tiling: _Tiling
    mapped: np.ndarray  # layers on the basis (False: kept dense, run like the ideal mapping)
    t_in: int
    active: int  # a: n (G = 1) or n/G coefficients per segment
    mac_energy: float  # J per coefficient MAC (pow2: a shift and an add)
    segments: np.ndarray  # s_l = B·P_l·g_l·ceil(L_l/m), per batch
    dense_cycles: np.ndarray  # B·P_l·T_in, per batch (layers kept dense)
    traffic: MemoryTraffic  # the coefficients, read once per batch

    @classmethod
    def build(
        cls, shapes: NetworkShapes, config: HardwareConfig, batch: int, basis: BasisSpec, tiling: _Tiling
    ) -> _BasisnWork:
        mapped = shapes.arrays()["mapped"]
        t_in = config.input_steps
        active = basis.group_size
        mac_energy = config.mac_energy(basis.coef_bits, basis.coef_quant, config.coef_operand_bits)
        segments = batch * tiling.P * tiling.g * _ceil_div(tiling.L, basis.segment_len)
        dense_cycles = batch * tiling.P * t_in
        coef_bytes = coefficient_bytes(shapes, basis, config)  # read once per batch; layers kept dense move nothing
        traffic = _traffic(config, coef_bytes, float(coef_bytes.sum()), batch, operands=True)
        return cls(config, batch, tiling, mapped, t_in, active, mac_energy, segments, dense_cycles, traffic)

    def run(self, layout: BasisLayout) -> tuple[int, int, float, dict[str, Any]]:
        """(cycles, reads, energy, data) per batch of one layout: reads_l = ceil(s_l/copies)·T_in, digital_l =
        ceil(s_l·O_l·a/(in_use·lanes)), cycles_l = max(reads_l, digital_l, transfer_l) on mapped layers."""
        config, batch, tiling, mapped, traffic = self.config, self.batch, self.tiling, self.mapped, self.traffic
        segments = self.segments
        reads = _ceil_div(segments, layout.copies) * self.t_in
        digital = _ceil_div(segments * tiling.O * self.active, layout.in_use * config.digital_lanes)
        cycles = np.where(mapped, np.maximum(np.maximum(reads, digital), traffic.transfer_batch), self.dense_cycles)
        steps = np.where(mapped, segments * layout.xbars_per_read, batch * tiling.P * tiling.tiles) * self.t_in / batch
        macs = np.where(mapped, segments * tiling.O * self.active, 0) / batch
        energy = _energy_terms(
            steps, macs * self.mac_energy, np.zeros(len(steps)), config, memory_energy=traffic.energy
        )
        total_energy = float(sum(v.sum() for v in energy.values()))
        data = {"reads": reads, "digital": digital, "cycles_batch": cycles, "energy": energy, "steps": steps,
                "macs": macs}  # fmt: skip
        return int(cycles.sum()), int(np.where(mapped, reads, 0).sum()), total_energy, data

    def bound(self, data: dict[str, Any]) -> np.ndarray:
        """What bounds each layer of a run: "reads", "digital", "transfer" or "dense" (kept dense)."""
        mapped, reads, digital = self.mapped, data["reads"], data["digital"]
        bound = np.where(mapped, np.where(reads >= digital, "reads", "digital"), "dense")
        return np.where(mapped & (self.traffic.transfer_batch > np.maximum(reads, digital)), "transfer", bound)

    def layer_data(self, data: dict[str, Any], bound: np.ndarray) -> dict[str, Any]:
        """The per-layer columns of a run (`cycles_batch` per batch, the others per inference)."""
        batch, mapped, reads, digital = self.batch, self.mapped, data["reads"], data["digital"]
        return {
            "cycles_batch": data["cycles_batch"],
            "tiles": np.where(mapped, 0, self.tiling.tiles),
            "segments": np.where(mapped, self.segments / batch, np.nan),
            "reads": np.where(mapped, reads / batch, np.nan),
            "digital": np.where(mapped, digital / batch, np.nan),
            "bound": bound,
            "compute_cycles": data["cycles_batch"] / batch,
            "program_cycles": np.zeros(len(reads)),
            "bytes_moved": self.traffic.bytes_batch / batch,
            "transfer_cycles": self.traffic.transfer_batch / batch,
        }

    def program_once(self, basis: BasisSpec, layout: BasisLayout, dense_tiles: int) -> dict[str, Any]:
        """crossbars_used and the one-time write of the basis copies and of the layers kept dense (cycles, J)."""
        config, tiling, mapped = self.config, self.tiling, self.mapped
        dense_rows = int(tiling.write_steps(config.write_cols)[np.repeat(~mapped, tiling.tiles)].max(initial=0))
        basis_cols = min(config.cols, basis.n_basis * config.cols_per_weight)
        basis_rows = basis.segment_len * (1 if config.write_cols is None else _ceil_div(basis_cols, config.write_cols))
        used = layout.in_use + dense_tiles
        waves = 1 if config.write_crossbars is None else _ceil_div(used, config.write_crossbars)
        once_cells = layout.cells + int(tiling.cells[~mapped].sum())
        return {
            "crossbars_used": used,
            "program_once_cycles": max(basis_rows, dense_rows) * waves * config.row_program_cycles,
            "program_once_energy_j": once_cells * config.e_cell_program,
        }


def _basisn(shapes: NetworkShapes, config: HardwareConfig, n: int, batch: int, basis: BasisSpec) -> Evaluation:
    """The basis on N crossbars, never rewritten (docs/method.md §2.2-§2.3).

    s_l = B·P_l·g_l·ceil(L_l/m); reads_l = ceil(s_l/copies)·T_in; digital_l = ceil(s_l·O_l·a/(in_use·lanes));
    cycles_l = max(reads_l, digital_l). Layers kept dense (mapped=False) sit on dedicated crossbars taken from N,
    written once, and run like the ideal mapping.
    """
    basis.check_fits(config)
    tiling = _tiling(shapes, config)
    mapped = shapes.arrays()["mapped"]
    dense_tiles = int(tiling.tiles[~mapped].sum())
    layouts = _basisn_layouts(basis, config, n, dense_tiles)
    work = _BasisnWork.build(shapes, config, batch, basis, tiling)
    runs = [(work.run(layout), layout) for layout in layouts]
    (_, _, _, data), layout = min(runs, key=lambda r: r[0][:3])  # fewest cycles, then reads, then energy
    reads, digital = data["reads"], data["digital"]
    bound = work.bound(data)
    once = work.program_once(basis, layout, dense_tiles)
    extra = {
        "crossbars_used": once["crossbars_used"],
        "tiles_total": tiling.total,
        "fits": True,
        "rounds_total": 0,
        "round_size": None,
        "option": layout.name,
        "program_once_cycles": once["program_once_cycles"],
        "program_once_energy_j": once["program_once_energy_j"],
        "layout": layout.name,
        "copies": layout.copies,
        "xbars_per_read": layout.xbars_per_read,
        "basis_crossbars": layout.in_use,
        "dense_crossbars": dense_tiles,
        "reads_cycles": float(np.where(mapped, reads, 0).sum()) / batch,
        "digital_cycles": float(np.where(mapped, digital, 0).sum()) / batch,
        "digital_bound_layers": int((bound == "digital").sum()),
        "reads_bound_layers": int((bound == "reads").sum()),
        **_traffic_totals(work.traffic, batch),
    }
    layer_data = work.layer_data(data, bound)
    # the basis crossbars and their lanes (and the crossbars of layers kept dense) leak while idle
    cycles_batch = int(data["cycles_batch"].sum())
    per_layer = data["cycles_batch"]
    leak = _Leakage(
        float((np.where(mapped, layout.in_use, tiling.tiles) * per_layer).sum()),
        float(data["steps"].sum()) * batch,
        float((np.where(mapped, layout.in_use, 0) * per_layer).sum()),
        float(data["macs"].sum()) * batch / config.digital_lanes,
    )
    return _finish(shapes, config, "basisn", n, batch, basis, cycles_batch, data["energy"], layer_data, extra, leak)


# ----------------------------------------------------------------------------------------------------------------
# Public entry points.
# ----------------------------------------------------------------------------------------------------------------
def evaluate(
    shapes: NetworkShapes,
    config: HardwareConfig,
    scheme: str,
    n_crossbars: int,
    batch: int = 1,
    basis: BasisSpec | Mapping[str, int] | None = None,
    override_basis: bool = False,
) -> Evaluation:
    """Cost of one scheme on one network with `n_crossbars` crossbars and `batch` images per batch.

    `basis` (basisn only; ignored by the others): a BasisSpec or dict (missing keys from the network's own).
    Default: the network's own basis (shapes of a basis-mapped model), else BasisSpec() (n=64, m=128, G=1). A
    basis that contradicts a basis-mapped model's own raises, unless `override_basis` asks for that what-if.
    Totals are per inference; see docs/hardware.md.
    """
    if not isinstance(shapes, NetworkShapes):
        raise ValueError(f"shapes={type(shapes).__name__} is not allowed; pass NetworkShapes (layer_shapes(...))")
    if not isinstance(config, HardwareConfig):
        raise ValueError(f"config={type(config).__name__} is not allowed; pass a HardwareConfig (hardware.preset())")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    check_int("n_crossbars", n_crossbars, high=MAX_CROSSBARS)
    check_int("batch", batch, high=MAX_BATCH)
    # checked for every scheme: a bad basis fails first
    spec = priced_basis(basis, shapes.basis, shapes.model_basis, override_basis)
    if scheme == "ideal":
        return _ideal(shapes, config, n_crossbars, batch)
    if scheme in BASELINE_OPTIONS:
        return _reprogram(shapes, config, n_crossbars, batch, scheme)
    if scheme == "digital":
        return _digital(shapes, config, n_crossbars, batch)
    return _basisn(shapes, config, n_crossbars, batch, spec)


def evaluate_all(
    shapes: NetworkShapes,
    config: HardwareConfig,
    n_crossbars: int,
    batch: int = 1,
    basis: BasisSpec | Mapping[str, int] | None = None,
    override_basis: bool = False,
) -> dict[str, Evaluation]:
    """Every scheme of SCHEMES at one N."""
    return {scheme: evaluate(shapes, config, scheme, n_crossbars, batch, basis, override_basis) for scheme in SCHEMES}


def _as_networks(networks: NetworkShapes | Iterable[NetworkShapes] | Mapping[str, NetworkShapes]) -> list:
    if isinstance(networks, NetworkShapes):
        return [networks]
    if isinstance(networks, Mapping):
        return list(networks.values())
    return list(networks)


def _values(name: str, values: Any, default: Sequence[Any]) -> list[Any]:
    if values is None:
        return list(default)
    values = [values] if isinstance(values, int) and not isinstance(values, bool) else list(values)
    if not values:
        raise ValueError(f"{name}=[] is not allowed; give at least one value")
    return values


class _SweepEvaluations:
    """A sweep's evaluations, memoised in `memo` on (network, config, scheme, N, B, basis).

    Fields a scheme does not read (UNUSED_FIELDS) are set to their defaults in the key, and reported as swept in
    the row.
    """

    def __init__(self, memo: dict) -> None:
        self.memo = memo
        self.canonical: dict[tuple[HardwareConfig, str], HardwareConfig] = {}

    def totals(self, shapes: NetworkShapes, cfg: HardwareConfig, scheme: str, n: int, b: int, spec: Any) -> dict:
        unused = UNUSED_FIELDS.get(scheme, {})
        if unused and (cfg, scheme) not in self.canonical:
            self.canonical[(cfg, scheme)] = cfg.replace(**unused)
        key = (id(shapes), self.canonical[(cfg, scheme)] if unused else cfg, scheme, n, b, spec)
        if key not in self.memo:  # shapes kept in the value: its id stays unique
            # a sweep's n_basis / groups / coef_bits are an explicit what-if, also on a basis-mapped model's shapes
            self.memo[key] = (shapes, evaluate(shapes, key[1], scheme, n, b, spec, override_basis=True).totals)
        totals = self.memo[key][1]
        return totals | {name: getattr(cfg, name) for name in unused if name in totals} if unused else totals


def _sweep_configs(
    config: HardwareConfig, verify_iters: Iterable[int] | int | None, fields: Mapping[str, Iterable[Any]] | None
) -> list[HardwareConfig]:
    """`config` with every combination of the swept verify_iters and other HardwareConfig `fields`."""
    varied = {"verify_iters": _values("verify_iters", verify_iters, (config.verify_iters,))}
    for name, values in (fields or {}).items():
        if name not in FIELD_NAMES:
            raise ValueError(f"hardware field {name!r} is unknown; allowed: {', '.join(FIELD_NAMES)}")
        varied[name] = _values(name, values, (getattr(config, name),))
    return [config.replace(**dict(zip(varied, combo))) for combo in itertools.product(*varied.values())]


def _sweep_bases(
    shapes: NetworkShapes,
    n_basis: Iterable[int] | int | None,
    groups: Iterable[int] | int | None,
    segment_len: int | None,
    coef_bits: int | None,
    coef_quant: str | None,
    skip_infeasible: bool,
) -> list[BasisSpec]:
    """The bases a sweep prices on one network: every n x G, the rest defaulting to the network's own basis."""
    own = shapes.basis or BasisSpec()
    m = own.segment_len if segment_len is None else segment_len
    bits = own.coef_bits if coef_bits is None else coef_bits
    quant = own.coef_quant if coef_quant is None else coef_quant
    bases = []
    for nb in _values("n_basis", n_basis, (own.n_basis,)):
        for gr in _values("groups", groups, (own.groups,)):
            try:
                bases.append(BasisSpec(nb, m, gr, bits, quant))
            except ValueError:
                if not skip_infeasible:
                    raise
    return bases


def _sweep_rows(
    evaluations: _SweepEvaluations,
    shapes: NetworkShapes,
    configs: Sequence[HardwareConfig],
    batches: Sequence[int],
    ns: Sequence[int],
    schemes: Sequence[str],
    bases: Sequence[BasisSpec],
    skip_infeasible: bool,
) -> list[dict[str, Any]]:
    """The totals of one network, config by config, then batch, N, scheme (and basis for basisn)."""
    rows: list[dict[str, Any]] = []
    for cfg in configs:
        for b in batches:
            for n in ns:
                for scheme in schemes:
                    if scheme != "basisn":
                        rows.append(evaluations.totals(shapes, cfg, scheme, n, b, None))
                        continue
                    for spec in bases:
                        try:
                            rows.append(evaluations.totals(shapes, cfg, scheme, n, b, spec))
                        except ValueError:
                            if not skip_infeasible:
                                raise
    return rows


def sweep(
    networks: NetworkShapes | Iterable[NetworkShapes] | Mapping[str, NetworkShapes],
    config: HardwareConfig,
    n_crossbars: Iterable[int] | int,
    *,
    schemes: Iterable[str] = SCHEMES,
    n_basis: Iterable[int] | int | None = None,
    groups: Iterable[int] | int | None = None,
    segment_len: int | None = None,
    batch: Iterable[int] | int = 1,
    verify_iters: Iterable[int] | int | None = None,
    fields: Mapping[str, Iterable[Any]] | None = None,
    coef_bits: int | None = None,
    coef_quant: str | None = None,
    skip_infeasible: bool = True,
    memo: dict | None = None,
) -> pd.DataFrame:
    """Tidy totals (one row per network x scheme x N x B x N_wv x config field values, and x n x G for basisn).

    n_basis / groups / segment_len / coef_bits / coef_quant default to each network's basis (or BasisSpec()).
    `fields` varies other HardwareConfig fields (every combination), e.g. {"digital_lanes": [64, 128]}. `ideal`
    does not depend on N; it is repeated per N so that rows merge on RATIO_KEYS. With `skip_infeasible`, basisn
    combinations that cannot exist (G not dividing n, the basis not fitting in N) are left out instead of raising.
    `memo`: a dict shared between calls to reuse evaluations of the same (network, config, scheme, N, B, basis).
    """
    evaluations = _SweepEvaluations({} if memo is None else memo)
    schemes = list(schemes)
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme={scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    ns = _values("n_crossbars", n_crossbars, ())
    batches = _values("batch", batch, (1,))
    configs = _sweep_configs(config, verify_iters, fields)
    rows: list[dict[str, Any]] = []
    for shapes in _as_networks(networks):
        bases = _sweep_bases(shapes, n_basis, groups, segment_len, coef_bits, coef_quant, skip_infeasible)
        rows += _sweep_rows(evaluations, shapes, configs, batches, ns, schemes, bases, skip_infeasible)
    frame = pd.DataFrame(rows)
    for column in INT_COLUMNS:  # integers with gaps (not every scheme has them): nullable, not float
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


_DEFAULT = HardwareConfig()
_BASELINE_UNUSED = {
    name: getattr(_DEFAULT, name)
    for name in ("digital_lanes", "e_coef_mac", "e_add", "e_shift", "coef_operand_bits", "operand_delivery",
                 "p_static_lanes")
}  # fmt: skip
_DIGITAL_UNUSED = ("verify_iters", "write_cols", "write_crossbars", "e_verify_read", "e_write_iter",
                   "reprogram_replicate", "reprogram_pipeline", "p_static_crossbar", "coef_operand_bits")  # fmt: skip
_SCHEDULE_UNUSED = {name: getattr(_DEFAULT, name) for name in ("reprogram_replicate", "reprogram_pipeline")}
# HardwareConfig fields (with the value they take in a memo key) that a scheme's results do not depend on
UNUSED_FIELDS: dict[str, dict[str, Any]] = {
    **{scheme: _BASELINE_UNUSED | _SCHEDULE_UNUSED for scheme in ("ideal", "reprogram", "reprogram_pingpong")},
    "reprogram_best": _BASELINE_UNUSED,
    "digital": {name: getattr(_DEFAULT, name) for name in _DIGITAL_UNUSED},
}

RATIO_KEYS = [
    "network",
    "n_crossbars",
    "batch",
    "verify_iters",
    "digital_lanes",
    "write_cols",
    "write_crossbars",
    "memory",
    "operand_delivery",
    "sram_bytes",
]
RATIO_METRICS = {
    "cycles": "cycles_ratio",
    "latency_s": "latency_ratio",
    "energy_j": "energy_ratio",
    "edp_js": "edp_ratio",
}
# Other baselines ratios() adds as columns when their rows are in the frame: `<metric>_ratio_<suffix>`.
OTHER_BASELINES = {"reprogram_best": "best", "digital": "digital"}


def ratios(
    frame: pd.DataFrame,
    baseline: str = "reprogram",
    scheme: str = "basisn",
    by: Sequence[str] = (),
    others: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """`scheme`/`baseline` ratios of cycles, latency, energy and EDP, matched on RATIO_KEYS (+ `by`).

    Columns: the keys, n_basis, segment_len, groups, coef_bits, coef_quant, layout (those present), cycles_ratio,
    latency_ratio, energy_ratio, edp_ratio; then, for every baseline of `others` (default OTHER_BASELINES) with
    rows in `frame`, `<metric>_ratio_<suffix>` (e.g. edp_ratio_best, cycles_ratio_digital), and `best_option`
    (the reprogram_best schedule: plain, pingpong, fits or replicated).
    """
    metrics = list(RATIO_METRICS)
    keys = [*by, *[k for k in RATIO_KEYS if k in frame]]
    ours = frame[frame["scheme"] == scheme]
    keep = [c for c in ["n_basis", "segment_len", "groups", "coef_bits", "coef_quant", "layout"] if c in ours]
    merged = ours[keys + keep + metrics]
    columns = list(RATIO_METRICS.values())
    for name, suffix in [(baseline, ""), *(OTHER_BASELINES if others is None else others).items()]:
        if name != baseline and not (frame["scheme"] == name).any():
            continue
        extra = ["option"] if name == "reprogram_best" and "option" in frame else []
        base = frame[frame["scheme"] == name][keys + metrics + extra]
        tag = f"_{suffix}" if suffix else ""
        base = base.rename(columns={m: f"{m}_base" for m in metrics} | {"option": "best_option"})
        merged = merged.merge(base, on=keys, how="inner" if not tag else "left")
        for metric, column in RATIO_METRICS.items():
            merged[column + tag] = merged[metric] / merged[f"{metric}_base"]
        merged = merged.drop(columns=[f"{m}_base" for m in metrics])
        columns += [c + tag for c in RATIO_METRICS.values()] if tag else []
        columns += ["best_option"] if extra else []
    return merged[keys + keep + columns].reset_index(drop=True)


def floor_cycles(shapes: NetworkShapes, config: HardwareConfig, n_crossbars: int, batch: int = 1) -> float:
    """docs/method.md §2.4 floor(N): ceil(B·MACs·cpw/(N·R·C))·T_in per batch, per inference."""
    check_int("n_crossbars", n_crossbars, high=MAX_CROSSBARS)
    check_int("batch", batch, high=MAX_BATCH)
    per_batch = _ceil_div(batch * shapes.macs * config.cols_per_weight, n_crossbars * config.rows * config.cols)
    return per_batch * config.input_steps / batch


def min_crossbars(
    shapes: NetworkShapes, config: HardwareConfig, basis: BasisSpec | None = None, override_basis: bool = False
) -> int:
    """The fewest crossbars basisn can run on: one basis copy plus the tiles of layers kept dense."""
    spec = priced_basis(basis, shapes.basis, shapes.model_basis, override_basis)
    tiling = _tiling(shapes, config)
    dense = int(tiling.tiles[~shapes.arrays()["mapped"]].sum())
    return _ceil_div(spec.n_basis * config.cols_per_weight, config.cols) + dense


def total_tiles(shapes: NetworkShapes, config: HardwareConfig) -> int:
    """sum_l t_l: crossbars the ideal mapping needs (reprogram equals ideal from this N on)."""
    return _tiling(shapes, config).total


__all__ = [
    "BASELINE_OPTIONS",
    "ENERGY_TERMS",
    "FITTING_OPTIONS",
    "ROUND_OPTIONS",
    "SCHEMES",
    "BasisLayout",
    "Evaluation",
    "basis_layouts",
    "evaluate",
    "evaluate_all",
    "floor_cycles",
    "min_crossbars",
    "ratios",
    "replica_counts",
    "reprogram_schedules",
    "storage",
    "sweep",
    "total_tiles",
]
