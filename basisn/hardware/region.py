"""Where the paper's headline would hold: BasisN / the best reprogramming schedule over the assumptions that move it
most (the write cost, the number of crossbars N, the batch B, the coefficient groups G), and how much each hardware
constant moves it (a one-at-a-time sensitivity, x0.5 and x2 of every numeric HardwareConfig field).

The write cost is one axis, `row_write_s`: the time to write and verify one row of every crossbar of a round (pulse
width x verify iterations x the passes a row needs; rows are written one after another: docs/hardware.md). It is
swept as `t_write_iter` with `verify_iters` = 1 and whole rows written at once on every crossbar (`write_cols` and
`write_crossbars` None), so a preset sits on the axis at `row_write_seconds(preset)`. Each row write then costs
the energy of one write-verify iteration only: a longer pulse or
more iterations cost more energy in a real device, which only lowers the ratio further. The map is therefore the
least favourable reading for BasisN at each write time (fair to the baseline, docs/method.md §2). BasisN's own
cycles and energy do not depend on the write cost (its basis is written once, reported separately); the digital
baseline's do not either.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd

from basisn.hardware.config import BasisSpec, HardwareConfig
from basisn.hardware.cost import ratios, sweep
from basisn.hardware.shapes import NetworkShapes

REGION_SCHEMES = ("reprogram_best", "basisn", "digital")
REGION_COLUMNS = ("cycles_ratio", "edp_ratio", "cycles_ratio_digital", "edp_ratio_digital")
SENSITIVITY_SKIPPED = ("memory",)  # a switch, not a magnitude (memory traffic is swept on its own in hw-eval)


def region(
    networks: Mapping[str, NetworkShapes],
    config: HardwareConfig,
    basis: BasisSpec,
    row_write_s: Sequence[float],
    crossbars: Sequence[int],
    batches: Sequence[int],
    groups: Sequence[int],
) -> pd.DataFrame:
    """One row per network x row write time x N x B x G: cycles_ratio / edp_ratio (BasisN over the best
    reprogramming schedule) and *_ratio_digital (BasisN over the digital lanes), with best_option."""
    nets = {name: shapes.with_basis(basis) for name, shapes in networks.items()}
    frames = []
    for seconds in row_write_s:
        cfg = config.replace(t_write_iter=float(seconds), verify_iters=1, write_cols=None, write_crossbars=None)
        frame = sweep(nets, cfg, list(crossbars), schemes=REGION_SCHEMES, groups=list(groups), batch=list(batches))
        table = ratios(frame, baseline="reprogram_best", others={"digital": "digital"})
        frames.append(table.assign(row_write_s=float(seconds)))
    keep = ["network", "groups", "n_crossbars", "batch", "row_write_s", *REGION_COLUMNS, "best_option"]
    return pd.concat(frames, ignore_index=True)[keep]


def row_write_seconds(config: HardwareConfig) -> float:
    """The time a config takes to write and verify one row of a crossbar: where it sits on the region's axis."""
    return config.row_program_cycles * config.write_passes * config.t_cycle


def smallest_write_cost(table: pd.DataFrame, column: str, bound: float) -> pd.DataFrame:
    """Per network x G x N x B: the smallest row write time of the grid from which `column` stays below `bound`
    (at that time and every longer one of the grid; NaN: not within the grid)."""
    rows = []
    keys = ["network", "groups", "n_crossbars", "batch"]
    for key, part in table.groupby(keys, sort=True):
        part = part.sort_values("row_write_s")
        below = (part[column] < bound).to_numpy()
        # from the longest write time down: the run of points below the bound that reaches the longest time
        first = len(below)
        while first > 0 and below[first - 1]:
            first -= 1
        rows.append(
            dict(
                zip(keys, key),
                smallest_row_write_s=part["row_write_s"].iloc[first] if first < len(below) else float("nan"),
            )
        )
    return pd.DataFrame(rows)


def sensitivity(
    shapes: NetworkShapes,
    config: HardwareConfig,
    basis: BasisSpec,
    n_crossbars: int,
    batch: int,
    factors: Sequence[float] = (0.5, 2.0),
) -> pd.DataFrame:
    """Every numeric HardwareConfig field times each factor, one at a time: BasisN / the best reprogramming schedule
    (cycles, EDP) against the unchanged config. A field whose scaled value the config refuses (e.g. a basis that no
    longer fits) gets a row with the reason instead of ratios, so nothing is silently left out."""
    nets = {shapes.name: shapes.with_basis(basis)}

    def point(cfg: HardwareConfig) -> dict:
        frame = sweep(nets, cfg, [n_crossbars], schemes=REGION_SCHEMES[:2], batch=[batch], skip_infeasible=False)
        row = ratios(frame, baseline="reprogram_best", others={}).iloc[0]
        return {"cycles_ratio": float(row["cycles_ratio"]), "edp_ratio": float(row["edp_ratio"])}

    base = point(config)
    rows = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in SENSITIVITY_SKIPPED or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        for factor in factors:
            scaled = type(value)(round(value * factor)) if isinstance(value, int) else value * factor
            row = dict(field=field.name, factor=float(factor), base_value=value, value=scaled)
            if scaled == value:
                row["skipped"] = f"x{factor:g} of the integer {value} is {scaled}, no change"
            else:
                try:
                    row |= point(config.replace(**{field.name: scaled}))
                except ValueError as error:
                    row["skipped"] = str(error).splitlines()[0]
            rows.append(row)
    table = pd.DataFrame(rows)
    for metric in ("cycles_ratio", "edp_ratio"):
        table[f"base_{metric}"] = base[metric]
        table[f"{metric}_change"] = table.get(metric, float("nan")) / base[metric]
    return table
