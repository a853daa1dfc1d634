"""The crossbar cost model: cycles, latency, energy and EDP of `ideal`, `reprogram` and `basisn` (DESIGN.md 2).

Pure NumPy from layer shapes alone, vectorised over layers. Names follow DESIGN.md 2.2-2.4: per layer l,
P_l, g_l, L_l, O_l (shapes), t_l dense tiles, s_l segments; R, C, cpw, T_in, N_wv from the HardwareConfig; N
crossbars; B images per batch. Cycles are counted per batch and reported per inference (divided by B).

Two refinements of the DESIGN.md formulas keep the properties the issue requires; both favour the baseline or
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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from basisn.hardware.config import BasisSpec, HardwareConfig, as_basis, check_int
from basisn.hardware.shapes import NetworkShapes

SCHEMES = ("ideal", "reprogram", "basisn")
ENERGY_TERMS = ("xbar", "adc", "shift_add", "coef_mac", "write")
INT_COLUMNS = (
    "n_basis segment_len groups copies xbars_per_read basis_crossbars dense_crossbars digital_bound_layers "
    "reads_bound_layers"
).split()
LAYER_COLUMNS = (
    "layer name kind P g L O macs mapped tiles rounds segments reads digital bound compute_cycles program_cycles "
    "cycles latency_s energy_xbar_j energy_adc_j energy_shift_add_j energy_coef_mac_j energy_write_j energy_j"
).split()


def _ceil_div(a: Any, b: Any) -> Any:
    """Exact integer ceil(a / b) for ints or int64 arrays."""
    return -(-a // b)


# ----------------------------------------------------------------------------------------------------------------
# Dense tiling and the greedy round schedule of the reprogramming baseline.
# ----------------------------------------------------------------------------------------------------------------
class _Tiling:
    """Dense tiles of a network in layer order (DESIGN.md 2.2): t_l = g·ceil(L/R)·ceil(O·cpw/C).

    Tiles of a layer are ordered group, row block, column block; a tile's rows_used is R except in the last row
    block (L - (ceil(L/R)-1)·R). `greedy(n_max)` tabulates, for every round size N' = 1..n_max, the two parts of
    the greedy schedule's cost: sum over rounds of max rows_used, and sum over layers of rounds_l·P_l.
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
        parts = []
        for rb, cb, g, lr in zip(self.row_blocks, self.col_blocks, self.g, last_rows):
            per_group = np.full(int(rb), rows, dtype=np.int64)
            per_group[-1] = lr
            parts.append(np.tile(np.repeat(per_group, int(cb)), int(g)))
        self.rows_used = np.concatenate(parts)
        self.layer_of_tile = np.repeat(np.arange(len(self.tiles)), self.tiles)
        self.cells = self.g * self.L * self.O * cpw  # cells holding weights (written on every reprogramming)
        self._sums = np.zeros(1, dtype=np.int64)  # index N': sum_r max rows_used (index 0 unused)
        self._work = np.zeros(1, dtype=np.int64)  # index N': sum_l rounds_l · P_l

    def greedy(self, n_max: int) -> tuple[np.ndarray, np.ndarray]:
        """(row sums, compute weights) for N' = 0..n_max (entry 0 unused); n_max < total tiles."""
        have = len(self._sums) - 1
        if n_max > have:
            target = min(self.total - 1, max(n_max, 2 * have))
            sizes = np.arange(have + 1, target + 1, dtype=np.int64)
            self._sums = np.concatenate([self._sums, _block_max_sums(self.rows_used, sizes)])
            work = []
            for chunk in np.array_split(sizes, max(1, len(sizes) * len(self.tiles) // 2_000_000 + 1)):
                rounds = self.last[None, :] // chunk[:, None] - self.first[None, :] // chunk[:, None] + 1
                work.append(rounds @ self.P)
            self._work = np.concatenate([self._work, *work])
        return self._sums[: n_max + 1], self._work[: n_max + 1]

    def rounds(self, n: int) -> np.ndarray:
        """rounds_l: the rounds of N' = n crossbars that hold tiles of layer l."""
        return self.last // n - self.first // n + 1

    def round_max_rows(self, n: int) -> np.ndarray:
        return np.maximum.reduceat(self.rows_used, np.arange(0, self.total, n))


def _block_max_sums(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """For each block size s in `sizes`: sum over consecutive blocks [0,s), [s,2s), ... of max(values[block]).

    All blocks of all sizes at once (about T·ln(max size) of them) with a sparse table for range maxima.
    """
    n = len(values)
    table = [values]
    while (1 << len(table)) <= n:  # level k holds the maxima of the windows of length 2^k
        half = 1 << (len(table) - 1)
        table.append(np.maximum(table[-1][:-half], table[-1][half:]))
    counts = _ceil_div(n, sizes)
    size_of_block = np.repeat(sizes, counts)
    index_in_size = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    start = index_in_size * size_of_block
    stop = np.minimum(start + size_of_block, n)
    level = np.floor(np.log2(stop - start)).astype(np.int64)
    padded = np.zeros((len(table), n), dtype=values.dtype)
    for k, row in enumerate(table):
        padded[k, : len(row)] = row
    maxima = np.maximum(padded[level, start], padded[level, stop - (1 << level)])
    owner = np.repeat(np.arange(len(sizes)), counts)
    return np.bincount(owner, weights=maxima, minlength=len(sizes)).round().astype(np.int64)


def _tiling(shapes: NetworkShapes, config: HardwareConfig) -> _Tiling:
    key = ("tiling", config.rows, config.cols, config.cols_per_weight)
    if key not in shapes._cache:
        shapes._cache[key] = _Tiling(shapes, config.rows, config.cols, config.cols_per_weight)
    return shapes._cache[key]


# ----------------------------------------------------------------------------------------------------------------
# Results.
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One scheme on one network: `totals` (a flat dict, per inference) and `layers` (a per-layer DataFrame)."""

    totals: dict[str, Any]
    layer_data: dict[str, Any]
    shapes: NetworkShapes

    @property
    def layers(self) -> pd.DataFrame:
        s = self.shapes
        n = len(s.layers)
        base = {
            "layer": np.arange(n),
            "name": [x.name for x in s.layers],
            "kind": [x.kind for x in s.layers],
        }
        arrays = s.arrays()
        base |= {k: arrays[k] for k in "PgLO"}
        base |= {"macs": arrays["P"] * arrays["g"] * arrays["L"] * arrays["O"], "mapped": arrays["mapped"]}
        frame = pd.DataFrame(base | self.layer_data)
        for column in LAYER_COLUMNS:
            if column not in frame:
                frame[column] = np.nan
        for key in ("network", "n_crossbars", "batch", "scheme"):
            frame[key] = self.totals[key]
        return frame[["network", "n_crossbars", "batch", "scheme", *LAYER_COLUMNS]]

    def __getitem__(self, key: str) -> Any:
        return self.totals[key]


def _energy_terms(
    steps: np.ndarray, coef_macs: np.ndarray, write_cells: np.ndarray, config: HardwareConfig
) -> dict[str, np.ndarray]:
    """DESIGN.md 2.3: steps·(e_xbar_step + C·e_adc + C·e_shift_add) + MACs·e_coef_mac + cells·N_wv·e_write_iter."""
    return {
        "energy_xbar_j": steps * config.e_xbar_step,
        "energy_adc_j": steps * (config.cols * config.e_adc),
        "energy_shift_add_j": steps * (config.cols * config.e_shift_add),
        "energy_coef_mac_j": coef_macs * config.e_coef_mac,
        "energy_write_j": write_cells * (config.verify_iters * config.e_write_iter),
    }


def _finish(
    shapes: NetworkShapes,
    config: HardwareConfig,
    scheme: str,
    n: int,
    batch: int,
    basis: BasisSpec | None,
    cycles_batch: np.ndarray,
    extra_batch_cycles: int,
    energy: dict[str, np.ndarray],
    layer_data: dict[str, Any],
    totals_extra: dict[str, Any],
) -> Evaluation:
    """Totals per inference from per-layer per-batch cycles and per-inference energies."""
    cycles_per_batch = int(cycles_batch.sum()) + int(extra_batch_cycles)
    cycles = cycles_per_batch / batch
    latency = cycles * config.t_cycle
    energy_totals = {k: float(v.sum()) for k, v in energy.items()}
    energy_j = sum(energy_totals.values())
    macs = shapes.macs
    floor_batch = _ceil_div(batch * macs * config.cols_per_weight, n * config.rows * config.cols) * config.input_steps
    floor_cycles = floor_batch / batch
    layer_energy = sum(energy.values())
    layer_data = (
        layer_data
        | energy
        | {
            "cycles": cycles_batch / batch,
            "latency_s": cycles_batch / batch * config.t_cycle,
            "energy_j": layer_energy,
        }
    )
    totals = {
        "network": shapes.name,
        "scheme": scheme,
        "n_crossbars": n,
        "batch": batch,
        "verify_iters": config.verify_iters,
        "n_basis": basis.n_basis if basis else None,
        "segment_len": basis.segment_len if basis else None,
        "groups": basis.groups if basis else None,
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
    return Evaluation(totals, layer_data, shapes)


# ----------------------------------------------------------------------------------------------------------------
# The three schemes.
# ----------------------------------------------------------------------------------------------------------------
def _ideal(shapes: NetworkShapes, config: HardwareConfig, n: int, batch: int, scheme: str = "ideal") -> Evaluation:
    """Every tile on its own crossbar, written once; layers run one after another: cycles_l = B·P_l·T_in."""
    tiling = _tiling(shapes, config)
    t_in = config.input_steps
    cycles_batch = batch * tiling.P * t_in
    steps = tiling.P * tiling.tiles * t_in  # per inference: B·P_l·t_l·T_in / B
    energy = _energy_terms(steps, np.zeros(len(steps)), np.zeros(len(steps)), config)
    once_cycles = int(tiling.rows_used.max()) * config.row_program_cycles
    once_energy = float(tiling.cells.sum()) * config.verify_iters * config.e_write_iter
    layer_data = {
        "tiles": tiling.tiles,
        "rounds": np.ones(len(steps), dtype=np.int64),
        "compute_cycles": cycles_batch / batch,
        "program_cycles": np.zeros(len(steps)),
    }
    extra = {
        "crossbars_used": tiling.total,
        "tiles_total": tiling.total,
        "fits": scheme == "ideal" or tiling.total <= n,
        "rounds_total": 1,
        "program_once_cycles": once_cycles,
        "program_once_energy_j": once_energy,
    }
    return _finish(shapes, config, scheme, n, batch, None, cycles_batch, 0, energy, layer_data, extra)


def _reprogram(shapes: NetworkShapes, config: HardwareConfig, n: int, batch: int) -> Evaluation:
    """N crossbars, tiles written round after round (DESIGN.md 2.2), best greedy packing on N' <= N crossbars.

    cycles = sum_r prog_r + sum_l rounds_l·B·P_l·T_in with prog_r = max(rows_used in r)·N_wv·ceil(t_wi/t_cycle).
    """
    tiling = _tiling(shapes, config)
    if tiling.total <= n:  # everything fits: written once, then it is the ideal mapping
        return _ideal(shapes, config, n, batch, scheme="reprogram")
    t_in, rpc = config.input_steps, config.row_program_cycles
    sums, work = tiling.greedy(n)
    cost = sums[1:] * rpc + work[1:] * (batch * t_in)
    best = int(np.flatnonzero(cost == cost.min())[-1]) + 1  # the largest N' among the cheapest
    rounds = tiling.rounds(best)
    compute_batch = rounds * tiling.P * (batch * t_in)
    prog_round = tiling.round_max_rows(best) * rpc
    # attribute each round's programming to the layers in it, in proportion to their tiles
    round_of_tile = np.arange(tiling.total) // best
    per_tile = prog_round[round_of_tile] / np.bincount(round_of_tile)[round_of_tile]
    program_layer = np.bincount(tiling.layer_of_tile, weights=per_tile, minlength=len(rounds))
    program_total = int(prog_round.sum())
    steps = tiling.P * tiling.tiles * t_in
    energy = _energy_terms(steps, np.zeros(len(steps)), tiling.cells / batch, config)
    layer_data = {
        "tiles": tiling.tiles,
        "rounds": rounds,
        "compute_cycles": compute_batch / batch,
        "program_cycles": program_layer / batch,
    }
    extra = {
        "crossbars_used": best,
        "tiles_total": tiling.total,
        "fits": False,
        "rounds_total": len(prog_round),
        "program_once_cycles": 0,
        "program_once_energy_j": 0.0,
    }
    evaluation = _finish(
        shapes, config, "reprogram", n, batch, None, compute_batch, program_total, energy, layer_data, extra
    )
    evaluation.layer_data["cycles"] = (compute_batch + program_layer) / batch
    evaluation.layer_data["latency_s"] = evaluation.layer_data["cycles"] * config.t_cycle
    return evaluation


@dataclass(frozen=True)
class BasisLayout:
    """How the basis sits on the crossbars: `copies` parallel segment reads, each over `xbars_per_read`."""

    name: str  # "dense" | "grouped"
    copies: int  # segments read in parallel (K, or G·K_g)
    xbars_per_read: int  # crossbars one segment read activates (X, or X_g)
    in_use: int  # crossbars holding the basis (K·X, or G·K_g·X_g)
    cells: int  # cells written once


def basis_layouts(basis: BasisSpec, config: HardwareConfig, available: int) -> list[BasisLayout]:
    """The placements of the basis on `available` crossbars (DESIGN.md 2.2): dense always, grouped if G > 1.

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


def _basisn(shapes: NetworkShapes, config: HardwareConfig, n: int, batch: int, basis: BasisSpec) -> Evaluation:
    """The basis on N crossbars, never rewritten (DESIGN.md 2.2-2.3).

    s_l = B·P_l·g_l·ceil(L_l/m); reads_l = ceil(s_l/copies)·T_in; digital_l = ceil(s_l·O_l·a/(in_use·lanes));
    cycles_l = max(reads_l, digital_l). Layers kept dense (mapped=False) sit on dedicated crossbars taken from N,
    written once, and run like the ideal mapping.
    """
    basis.check_fits(config)
    tiling = _tiling(shapes, config)
    arrays = shapes.arrays()
    mapped = arrays["mapped"]
    dense_tiles = int(tiling.tiles[~mapped].sum())
    layouts = basis_layouts(basis, config, n - dense_tiles)
    if not layouts:
        x = _ceil_div(basis.n_basis * config.cols_per_weight, config.cols)
        kept = f" + {dense_tiles} for the layers kept dense" if dense_tiles else ""
        raise ValueError(
            f"n_crossbars={n} is not allowed for basisn: one basis copy needs {x} crossbar(s){kept}; "
            f"use n_crossbars >= {x + dense_tiles}"
        )
    t_in = config.input_steps
    active = basis.group_size  # a: n (G = 1) or n/G coefficients per segment
    segments = batch * tiling.P * tiling.g * _ceil_div(tiling.L, basis.segment_len)
    dense_cycles = batch * tiling.P * t_in

    def run(layout: BasisLayout) -> tuple[int, int, float, dict[str, Any]]:
        reads = _ceil_div(segments, layout.copies) * t_in
        digital = _ceil_div(segments * tiling.O * active, layout.in_use * config.digital_lanes)
        cycles = np.where(mapped, np.maximum(reads, digital), dense_cycles)
        steps = np.where(mapped, segments * layout.xbars_per_read, batch * tiling.P * tiling.tiles) * t_in / batch
        macs = np.where(mapped, segments * tiling.O * active, 0) / batch
        energy = _energy_terms(steps, macs, np.zeros(len(steps)), config)
        total_energy = float(sum(v.sum() for v in energy.values()))
        data = {"reads": reads, "digital": digital, "cycles_batch": cycles, "energy": energy}
        return int(cycles.sum()), int(np.where(mapped, reads, 0).sum()), total_energy, data

    runs = [(run(layout), layout) for layout in layouts]
    (total, _, _, data), layout = min(runs, key=lambda r: r[0][:3])  # fewest cycles, then reads, then energy
    reads, digital = data["reads"], data["digital"]
    bound = np.where(mapped, np.where(reads >= digital, "reads", "digital"), "dense")
    layer_data = {
        "tiles": np.where(mapped, 0, tiling.tiles),
        "segments": np.where(mapped, segments / batch, np.nan),
        "reads": np.where(mapped, reads / batch, np.nan),
        "digital": np.where(mapped, digital / batch, np.nan),
        "bound": bound,
        "compute_cycles": data["cycles_batch"] / batch,
        "program_cycles": np.zeros(len(reads)),
    }
    dense_rows = int(tiling.rows_used[np.repeat(~mapped, tiling.tiles)].max(initial=0))
    once_cells = layout.cells + int(tiling.cells[~mapped].sum())
    extra = {
        "crossbars_used": layout.in_use + dense_tiles,
        "tiles_total": tiling.total,
        "fits": True,
        "rounds_total": 0,
        "program_once_cycles": max(basis.segment_len, dense_rows) * config.row_program_cycles,
        "program_once_energy_j": once_cells * config.verify_iters * config.e_write_iter,
        "layout": layout.name,
        "copies": layout.copies,
        "xbars_per_read": layout.xbars_per_read,
        "basis_crossbars": layout.in_use,
        "dense_crossbars": dense_tiles,
        "reads_cycles": float(np.where(mapped, reads, 0).sum()) / batch,
        "digital_cycles": float(np.where(mapped, digital, 0).sum()) / batch,
        "digital_bound_layers": int((bound == "digital").sum()),
        "reads_bound_layers": int((bound == "reads").sum()),
    }
    return _finish(
        shapes, config, "basisn", n, batch, basis, data["cycles_batch"], 0, data["energy"], layer_data, extra
    )


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
) -> Evaluation:
    """Cost of one scheme on one network with `n_crossbars` crossbars and `batch` images per batch.

    `basis` (basisn only; ignored by the others): a BasisSpec or dict; default the network's own basis (a
    basis-mapped model) or BasisSpec() (n=64, m=128, G=1). Totals are per inference; see docs/hardware.md.
    """
    if not isinstance(shapes, NetworkShapes):
        raise ValueError(f"shapes={type(shapes).__name__} is not allowed; pass NetworkShapes (layer_shapes(...))")
    if not isinstance(config, HardwareConfig):
        raise ValueError(f"config={type(config).__name__} is not allowed; pass a HardwareConfig (hardware.preset())")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    check_int("n_crossbars", n_crossbars)
    check_int("batch", batch)
    if scheme == "ideal":
        return _ideal(shapes, config, n_crossbars, batch)
    if scheme == "reprogram":
        return _reprogram(shapes, config, n_crossbars, batch)
    return _basisn(shapes, config, n_crossbars, batch, as_basis(basis, shapes.basis))


def evaluate_all(
    shapes: NetworkShapes,
    config: HardwareConfig,
    n_crossbars: int,
    batch: int = 1,
    basis: BasisSpec | Mapping[str, int] | None = None,
) -> dict[str, Evaluation]:
    """All three schemes at one N."""
    return {scheme: evaluate(shapes, config, scheme, n_crossbars, batch, basis) for scheme in SCHEMES}


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
    skip_infeasible: bool = True,
) -> pd.DataFrame:
    """Tidy totals (one row per network x scheme x N x B x N_wv, and x n x G for basisn) as a DataFrame.

    n_basis / groups / segment_len default to each network's basis (or BasisSpec()). `ideal` does not depend on
    N; it is repeated per N so that rows merge on (network, n_crossbars, batch, verify_iters). With
    `skip_infeasible`, basisn combinations that cannot exist (G not dividing n, the basis not fitting in N) are
    left out instead of raising.
    """
    schemes = list(schemes)
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise ValueError(f"scheme={scheme!r} is not allowed; allowed: {', '.join(SCHEMES)}")
    ns = _values("n_crossbars", n_crossbars, ())
    batches = _values("batch", batch, (1,))
    iters = _values("verify_iters", verify_iters, (config.verify_iters,))
    rows: list[dict[str, Any]] = []
    for shapes in _as_networks(networks):
        own = shapes.basis or BasisSpec()
        m = own.segment_len if segment_len is None else segment_len
        bases = []
        for nb in _values("n_basis", n_basis, (own.n_basis,)):
            for gr in _values("groups", groups, (own.groups,)):
                try:
                    bases.append(BasisSpec(nb, m, gr))
                except ValueError:
                    if not skip_infeasible:
                        raise
        for n_wv in iters:
            cfg = config if n_wv == config.verify_iters else config.replace(verify_iters=n_wv)
            for b in batches:
                for n in ns:
                    for scheme in schemes:
                        if scheme != "basisn":
                            rows.append(evaluate(shapes, cfg, scheme, n, b).totals)
                            continue
                        for spec in bases:
                            try:
                                rows.append(evaluate(shapes, cfg, scheme, n, b, spec).totals)
                            except ValueError:
                                if not skip_infeasible:
                                    raise
    frame = pd.DataFrame(rows)
    for column in INT_COLUMNS:  # integers with gaps (not every scheme has them): nullable, not float
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    return frame


RATIO_KEYS = ["network", "n_crossbars", "batch", "verify_iters"]
RATIO_METRICS = {
    "cycles": "cycles_ratio",
    "latency_s": "latency_ratio",
    "energy_j": "energy_ratio",
    "edp_js": "edp_ratio",
}


def ratios(
    frame: pd.DataFrame, baseline: str = "reprogram", scheme: str = "basisn", by: Sequence[str] = ()
) -> pd.DataFrame:
    """`scheme`/`baseline` ratios of cycles, latency, energy and EDP, matched on network, N, B, N_wv (+ `by`).

    Columns: the keys, n_basis, segment_len, groups, layout (those present), cycles_ratio, latency_ratio,
    energy_ratio, edp_ratio.
    """
    metrics, keys = list(RATIO_METRICS), [*by, *RATIO_KEYS]
    base = frame[frame["scheme"] == baseline][keys + metrics]
    ours = frame[frame["scheme"] == scheme]
    keep = [c for c in ["n_basis", "segment_len", "groups", "layout"] if c in ours]
    merged = ours[keys + keep + metrics].merge(base, on=keys, suffixes=("", "_base"))
    for metric, column in RATIO_METRICS.items():
        merged[column] = merged[metric] / merged[f"{metric}_base"]
    return merged[keys + keep + list(RATIO_METRICS.values())].reset_index(drop=True)


def floor_cycles(shapes: NetworkShapes, config: HardwareConfig, n_crossbars: int, batch: int = 1) -> float:
    """DESIGN.md 2.4 floor(N): ceil(B·MACs·cpw/(N·R·C))·T_in per batch, per inference."""
    check_int("n_crossbars", n_crossbars)
    check_int("batch", batch)
    per_batch = _ceil_div(batch * shapes.macs * config.cols_per_weight, n_crossbars * config.rows * config.cols)
    return per_batch * config.input_steps / batch


def min_crossbars(shapes: NetworkShapes, config: HardwareConfig, basis: BasisSpec | None = None) -> int:
    """The fewest crossbars basisn can run on: one basis copy plus the tiles of layers kept dense."""
    spec = as_basis(basis, shapes.basis)
    tiling = _tiling(shapes, config)
    dense = int(tiling.tiles[~shapes.arrays()["mapped"]].sum())
    return _ceil_div(spec.n_basis * config.cols_per_weight, config.cols) + dense


def total_tiles(shapes: NetworkShapes, config: HardwareConfig) -> int:
    """sum_l t_l: crossbars the ideal mapping needs (reprogram equals ideal from this N on)."""
    return _tiling(shapes, config).total


__all__ = [
    "ENERGY_TERMS",
    "SCHEMES",
    "BasisLayout",
    "Evaluation",
    "basis_layouts",
    "evaluate",
    "evaluate_all",
    "floor_cycles",
    "min_crossbars",
    "ratios",
    "sweep",
    "total_tiles",
]
