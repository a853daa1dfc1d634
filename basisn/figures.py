"""One style and deterministic writers for everything in paper_figures/ (used by the notebooks only).

Determinism: the same data gives byte-identical files. PDF and PNG get no timestamps or version strings in their
metadata, SVG hashes use a fixed salt, fonts are fixed (DejaVu Sans ships with matplotlib), and files are
written atomically (temp file, then rename) so a failing notebook never leaves half a figure behind.

Readability: every figure is drawn at one column (COLUMN_WIDTH, 3.5 in) or the full page width (FULL_WIDTH, 7 in)
with fonts of 6.5-8 pt, so it is read at the size a paper prints it; colours are Okabe and Ito's colour-blind-safe
set, and each scheme also has its own marker and line style, so no two are told apart by colour alone. Every
reference line is drawn by `reference_line`, which writes what the line is next to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless and deterministic; notebooks display the PNG we write
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from basisn.atomic import atomic_write  # noqa: E402

COLUMN_WIDTH = 3.5  # inches: one column of a two-column paper
FULL_WIDTH = 7.0  # inches: the full text width
SAVE_DPI = 200

# Okabe, M. and Ito, K. (2008), "Color Universal Design (CUD): how to make figures and presentations that are
# friendly to colorblind people" (jfly.uni-koeln.de/color): eight colours told apart with every common deficiency.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "grey": "#999999",
}
PALETTE = [OKABE_ITO[name] for name in ("blue", "orange", "green", "vermillion", "purple", "sky_blue", "yellow")]

SCHEME_COLORS = {
    "ideal": OKABE_ITO["black"],
    "reprogram": OKABE_ITO["vermillion"],
    "reprogram_best": OKABE_ITO["purple"],
    "basisn": OKABE_ITO["green"],
    "digital": OKABE_ITO["blue"],
    "floor": OKABE_ITO["grey"],
}
SCHEME_MARKERS = {"ideal": "o", "reprogram": "X", "reprogram_best": "v", "basisn": "s", "digital": "D", "floor": ""}
SCHEME_LINESTYLES = {
    "ideal": "-",
    "reprogram": "-",
    "reprogram_best": "--",
    "basisn": "-",
    "digital": "-.",
    "floor": ":",
}
SCHEME_LABELS = {
    "ideal": "ideal (one copy, written once)",
    "reprogram": "reprogramming, plain rounds",
    "reprogram_best": "reprogramming, best schedule",
    "basisn": "BasisN",
    "digital": "digital lanes, no crossbars",
    "floor": "floor(N)",
}
# The energy terms of basisn.hardware.cost.ENERGY_TERMS, each with a reader's name and one colour
TERM_STYLE = {
    "xbar": ("crossbar reads", OKABE_ITO["blue"]),
    "adc": ("ADCs", OKABE_ITO["orange"]),
    "shift_add": ("shift-add", OKABE_ITO["yellow"]),
    "coef_mac": ("BasisN coefficient MACs", OKABE_ITO["purple"]),
    "mac": ("digital dense MACs", OKABE_ITO["sky_blue"]),
    "write": ("RRAM writes (write-verify)", OKABE_ITO["vermillion"]),
    "memory": ("operand delivery (SRAM/DRAM)", OKABE_ITO["green"]),
    "static": ("leakage", OKABE_ITO["grey"]),
}


def set_style() -> None:
    """The one seaborn style of every figure: sizes for a figure printed at 3.5 or 7 inches wide."""
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font="DejaVu Sans")
    matplotlib.rcParams.update(
        {
            "svg.hashsalt": "basisn",
            "pdf.fonttype": 42,
            "font.family": "DejaVu Sans",
            "font.size": 7,
            "axes.titlesize": 8,
            "axes.labelsize": 7,
            "xtick.labelsize": 6.5,
            "ytick.labelsize": 6.5,
            "legend.fontsize": 6.5,
            "legend.title_fontsize": 7,
            "figure.titlesize": 8,
            "lines.markersize": 4,
            "lines.linewidth": 1.2,
            "figure.dpi": 100,
            "savefig.dpi": SAVE_DPI,
            "savefig.bbox": "tight",
            "savefig.pad_inches": 0.03,
            "figure.figsize": (FULL_WIDTH, 3.0),
        }
    )


LABEL_BOX = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85}


def reference_line(
    ax, value: float, label: str, *, axis: str = "y", color: str = "black", ls: str = "--", at: str = "end"
) -> None:
    """A reference line (axis='y': horizontal at y=value; 'x': vertical) with `label` written beside it, inside
    the axes, so the figure says what the line is without a caption. `at`: 'end' (right / top) or 'start' (left /
    bottom), to keep the labels of two close lines apart."""
    if at not in ("end", "start"):
        raise ValueError(f"at={at!r} is not allowed; use 'end' or 'start'")
    if axis == "y":
        ax.axhline(value, color=color, linestyle=ls, linewidth=0.8, zorder=1)
        ax.annotate(
            label,
            xy=(0.99 if at == "end" else 0.01, value),
            xycoords=("axes fraction", "data"),
            xytext=(0, 1.5),
            textcoords="offset points",
            ha="right" if at == "end" else "left",
            va="bottom",
            fontsize=6,
            color=color,
            bbox=LABEL_BOX,
        )
    elif axis == "x":
        ax.axvline(value, color=color, linestyle=ls, linewidth=0.8, zorder=1)
        ax.annotate(
            label,
            xy=(value, 0.99 if at == "end" else 0.01),
            xycoords=("data", "axes fraction"),
            xytext=(1.5, 0),
            textcoords="offset points",
            ha="left",
            va="top" if at == "end" else "bottom",
            rotation=90,
            fontsize=6,
            color=color,
            bbox=LABEL_BOX,
        )
    else:
        raise ValueError(f"axis={axis!r} is not allowed; use 'x' or 'y'")


def spread_labels(positions: Iterable[float], gap: float) -> list[float]:
    """Label positions, in the order given, moved apart so that sorted neighbours are at least `gap` apart (the
    least total move for a sorted stack: pushed up from the lowest, then the stack recentred on the points)."""
    values = list(positions)
    order = sorted(range(len(values)), key=values.__getitem__)
    placed: list[float] = []
    for i in order:
        placed.append(values[i] if not placed else max(values[i], placed[-1] + gap))
    shift = (sum(values) - sum(placed)) / len(placed) if placed else 0.0
    result = [0.0] * len(values)
    for i, y in zip(order, placed):
        result[i] = y + shift
    return result


def percent_axis(ax, axis: str = "y") -> None:
    """Tick labels of a ratio axis as percent (0.01 -> 1%), the unit the text quotes; linear or log axes."""
    which = ax.yaxis if axis == "y" else ax.xaxis
    which.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.10g}%"))
    which.set_minor_formatter(NullFormatter())  # a short log range would label minor ticks as 4 x 10^0


def save_figure(fig: plt.Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write `stem.pdf` and `stem.png` with no varying metadata; returns the paths."""
    out_dir = Path(out_dir)
    no_stamps = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}
    pdf = atomic_write(out_dir / f"{stem}.pdf", lambda p: fig.savefig(p, format="pdf", metadata=no_stamps))
    png = atomic_write(out_dir / f"{stem}.png", lambda p: fig.savefig(p, format="png", metadata={"Software": None}))
    return [pdf, png]


def save_table(table: pd.DataFrame, out_dir: str | Path, stem: str, float_format: str = "{:.4g}") -> list[Path]:
    """Write `stem.csv` (full precision), `stem.tex` and `stem.md` (rounded for reading); returns the paths."""
    out_dir = Path(out_dir)
    shown = table.copy()
    for column in shown.select_dtypes("float").columns:
        shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else float_format.format(v))
    return [
        atomic_write(out_dir / f"{stem}.csv", lambda p: table.to_csv(p, index=False)),
        atomic_write(out_dir / f"{stem}.tex", lambda p: p.write_text(shown.to_latex(index=False, escape=True))),
        atomic_write(out_dir / f"{stem}.md", lambda p: p.write_text(shown.to_markdown(index=False) + "\n")),
    ]


def load_hw_eval(hardware_dir: str | Path) -> dict:
    """The cost model's hw_eval.json, with a few lines on what it priced (describe_hw_eval), so that every hardware
    figure says where it came from; the whole file stays one click away in the file browser."""
    path = Path(hardware_dir) / "hw_eval.json"
    hw = json.loads(path.read_text())
    print(describe_hw_eval(hw, path))
    return hw


def describe_hw_eval(hw: dict, path: str | Path = "hw_eval.json") -> str:
    """Five lines: preset, crossbar grid, batch, basis, the write cost, the baseline's options, the networks."""
    c, d, p, b = hw["config"], hw["derived"], hw["params"], hw["basis"]
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(p.get("overrides", {}).items())) or "none"
    on = {True: "on", False: "off"}
    return "\n".join(
        [
            f"{path}: preset {hw['preset']!r} (overrides: {overrides}), batch {p['batch']}, N = "
            f"{', '.join(map(str, p['crossbars']))} (report: {', '.join(map(str, p['report_crossbars']))})",
            f"  crossbar {c['rows']}x{c['cols']}, {c['cell_bits']}-bit cells, {c['weight_bits']}-bit weights, "
            f"{c['input_bits']}-bit inputs; {c['digital_lanes']} digital lanes per crossbar",
            f"  row write {d['row_program_cycles']} cycles ({c['verify_iters']} verify iterations x "
            f"{d['write_iter_cycles']}), {c['write_cols']} cells and {c['write_crossbars']} crossbars written at once",
            f"  basis n = {b['n_basis']}, m = {b['segment_len']}, G = {b['groups']}, {b['coef_bits']}-bit "
            f"{b['coef_quant']} coefficients",
            f"  baseline: pipelined rounds {on[bool(c['reprogram_pipeline'])]}, layer rounds with copies "
            f"{on[bool(c['reprogram_replicate'])]}; operand delivery {on[bool(c['operand_delivery'])]}, memory "
            f"traffic {on[bool(c['memory'])]}; compared presets: {', '.join(p['compare_presets']) or 'none'}",
            f"  networks: {', '.join(hw['networks'])}",
        ]
    )


def show(paths: Iterable[Path]) -> None:
    """Display the PNG among `paths` (what save_figure returned) in the running notebook."""
    from IPython.display import Image, display

    for path in paths:
        if path.suffix == ".png":
            display(Image(filename=str(path)))


def order_networks(hw: dict, present: Iterable[str]) -> tuple[list[str], list[str]]:
    """(the paper's networks, all networks) among `present`: hw_eval's params order first, any others sorted after."""
    present = set(present)
    paper = [name for name in hw["params"]["networks"] if name in present]
    return paper, paper + sorted(present - set(paper))


DATASET_DASHES = {"ImageNet": "", "CIFAR-100": (4, 2), "Fashion-MNIST": (1, 1.5), "other": (3, 1, 1, 1)}
DATASET_MARKERS = {"ImageNet": "o", "CIFAR-100": "s", "Fashion-MNIST": "^", "other": "P"}


def network_style(networks: Iterable[str], hw: dict | None = None) -> pd.DataFrame:
    """Per network: `architecture` (the hue: resnet18 and cifar_resnet18 share a colour) and `dataset` (the line
    style: the paper network's dataset, else the one hw_eval.json records for it, e.g. the pipeline's
    Fashion-MNIST model; `other` when none is known), plus `color`.

    Networks differing only in dataset are told apart by line style and marker, never by near-identical hues.
    """
    from basisn.hardware.networks import PAPER_NETWORKS

    recorded = {name: info.get("dataset") for name, info in (hw or {}).get("networks", {}).items()}
    names = list(networks)
    rows = []
    for name in names:
        spec = PAPER_NETWORKS.get(name)
        dataset = spec.dataset if spec is not None else recorded.get(name) or "other"
        if dataset not in DATASET_DASHES:
            dataset = "other"
        rows.append({"network": name, "architecture": name.removeprefix("cifar_"), "dataset": dataset})
    frame = pd.DataFrame(rows, columns=["network", "architecture", "dataset"])
    architectures = list(dict.fromkeys(frame["architecture"]))
    colors = (PALETTE * (len(architectures) // len(PALETTE) + 1))[: len(architectures)]
    frame["color"] = frame["architecture"].map(dict(zip(architectures, colors)))
    return frame
