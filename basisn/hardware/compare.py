"""Your own model, every scheme, one table: `compare` (cycles, latency, energy, EDP and the ratios to a baseline),
`readable` (the same table as text, ratios formatted by magnitude) and `plot_compare` (a seaborn figure).

The cost model itself is basisn.hardware.cost; this file only gathers its totals for one network at one N and B,
the way a user asks "what does BasisN buy on my model?" (README, notebooks/headline.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from torch import nn

from basisn.hardware.config import BasisSpec, HardwareConfig, preset
from basisn.hardware.cost import SCHEMES, engineering, evaluate
from basisn.hardware.shapes import NetworkShapes, layer_shapes

METRICS = {"cycles": "cycles", "latency_s": "latency", "energy_j": "energy", "edp_js": "edp"}  # column -> ratio name
CONTEXT = ["network", "n_crossbars", "batch", "scheme"]
DETAILS = ["crossbars_used", "fits", "layout", "option"]  # what explains a scheme's numbers, where it has them


def format_ratio(ratio: float) -> str:
    """A ratio as the text a reader compares: percent below 10x ('0.153%', '8.03%', '783%'), a factor from there
    on ('12.3x', '7,830x'), never an exponent ('7.83e+05%')."""
    if ratio is None or not math.isfinite(ratio):
        return "n/a"
    if ratio >= 10:
        return f"{ratio:.3g}x" if ratio < 1000 else f"{ratio:,.0f}x"
    value = 100 * ratio
    if value == 0:
        return "0%"
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))  # three significant digits, fixed point
    return f"{value:.{decimals}f}%"


def compare(
    model_or_shapes: nn.Module | NetworkShapes,
    config: HardwareConfig | None = None,
    n_crossbars: int = 64,
    batch: int = 1,
    *,
    input_size: int | tuple[int, ...] | None = None,
    example_inputs: Any = None,
    basis: BasisSpec | Mapping[str, int] | None = None,
    override_basis: bool = False,
    schemes: Sequence[str] = SCHEMES,
    baseline: str = "reprogram_best",
) -> pd.DataFrame:
    """One row per scheme: cycles, latency_s, energy_j, edp_js per inference, and the ratios to `baseline`:
    cycles_vs_<baseline>, latency_vs_..., energy_vs_..., edp_vs_... (below 1: better than the baseline).

    `model_or_shapes`: a model (its shapes are traced with `input_size` or `example_inputs`, as layer_shapes does)
    or NetworkShapes. A basis-mapped model is priced with its own basis (see evaluate). `config`: default the
    `default` preset. `baseline`: the scheme the ratios divide by (default the best reprogramming schedule).
    """
    if baseline not in schemes:
        raise ValueError(f"baseline={baseline!r} is not allowed; use one of the compared schemes: {', '.join(schemes)}")
    if isinstance(model_or_shapes, NetworkShapes):
        if input_size is not None or example_inputs is not None:
            raise ValueError("input_size / example_inputs are for a model; NetworkShapes already hold the shapes")
        shapes = model_or_shapes
    elif isinstance(model_or_shapes, nn.Module):
        shapes = layer_shapes(model_or_shapes, input_size, example_inputs=example_inputs)
    else:
        raise ValueError(
            f"model_or_shapes={type(model_or_shapes).__name__} is not allowed; pass an nn.Module or NetworkShapes"
        )
    config = preset() if config is None else config
    rows = []
    for scheme in schemes:
        totals = evaluate(shapes, config, scheme, n_crossbars, batch, basis, override_basis).totals
        rows.append({key: totals.get(key) for key in [*CONTEXT, *METRICS, *DETAILS]})
    table = pd.DataFrame(rows)
    reference = table.set_index("scheme").loc[baseline]
    for metric, name in METRICS.items():
        table[f"{name}_vs_{baseline}"] = table[metric] / reference[metric]
    return table


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """`compare`'s table as text: cycles with thousands separators, engineering units, ratios by magnitude."""
    text = table.copy()
    text["cycles"] = [f"{value:,.0f}" for value in table["cycles"]]
    for column, unit in (("latency_s", "s"), ("energy_j", "J"), ("edp_js", "J·s")):
        text[column] = [engineering(float(value), unit) for value in table[column]]
    for column in [c for c in table if "_vs_" in c]:
        text[column] = [format_ratio(float(value)) for value in table[column]]
    for column in DETAILS:  # a detail only some schemes have (layout: basisn's) is blank for the others
        if column in text:
            text[column] = [("" if value is None or value != value else value) for value in table[column]]
    return text


def plot_compare(table: pd.DataFrame, ax: Any = None) -> Any:
    """Each scheme's cycles, energy and EDP relative to the table's baseline, one dot each on a log axis (a ratio,
    not a length: no bars), the baseline's line labelled. Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    ratio_columns = [c for c in table if "_vs_" in c and not c.startswith("latency")]
    if not ratio_columns:
        raise ValueError("table has no <metric>_vs_<baseline> columns; pass the output of basisn.hardware.compare")
    baseline = ratio_columns[0].split("_vs_", 1)[1]
    long = table.melt(id_vars=["scheme"], value_vars=ratio_columns, var_name="metric", value_name="ratio")
    long["metric"] = [c.split("_vs_")[0].replace("edp", "EDP") for c in long["metric"]]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.2))
    sns.stripplot(
        data=long, x="ratio", y="scheme", hue="metric", dodge=True, jitter=False, size=7, ax=ax,
        palette="colorblind", hue_order=[m for m in ("cycles", "energy", "EDP") if m in set(long["metric"])],
    )  # fmt: skip
    ax.set_xscale("log")
    ax.axvline(1.0, color="0.3", linestyle="--", linewidth=1, label=f"{baseline} (= 1)")
    ax.set_xlabel(f"relative to {baseline} (log scale; left of the dashed line: better)")
    ax.set_ylabel("")
    first = table.iloc[0]
    ax.set_title(f"{first['network']}, N = {first['n_crossbars']} crossbars, batch {first['batch']}")
    ax.legend(loc="best", fontsize="small")
    return ax


__all__ = ["compare", "format_ratio", "plot_compare", "readable"]
