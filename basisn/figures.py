"""One style and deterministic writers for everything in paper_figures/ (used by the notebooks only).

Determinism: the same data gives byte-identical files. PDF and PNG get no timestamps or version strings in their
metadata, SVG hashes use a fixed salt, fonts are fixed (DejaVu Sans ships with matplotlib), and files are
written atomically (temp file, then rename) so a failing notebook never leaves half a figure behind.
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

from basisn.atomic import atomic_write  # noqa: E402

SCHEME_COLORS = {
    "ideal": "#4c72b0",
    "reprogram": "#c44e52",
    "reprogram_best": "#8c2d04",
    "basisn": "#55a868",
    "digital": "#8172b3",
    "floor": "#8c8c8c",
}
SCHEME_MARKERS = {"ideal": "o", "reprogram": "o", "reprogram_best": "v", "basisn": "s", "digital": "D", "floor": ""}


def set_style() -> None:
    """The one seaborn style of every figure."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font="DejaVu Sans")
    matplotlib.rcParams.update(
        {
            "svg.hashsalt": "basisn",
            "pdf.fonttype": 42,
            "font.family": "DejaVu Sans",
            "figure.dpi": 100,
            "savefig.dpi": 200,
            "savefig.bbox": "tight",
            "figure.figsize": (6.0, 3.6),
        }
    )


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
    """The cost model's hw_eval.json, printed so that every hardware figure shows the parameters it came from."""
    hw = json.loads((Path(hardware_dir) / "hw_eval.json").read_text())
    print(f"hw_eval.json: preset {hw['preset']!r}")
    print(
        json.dumps({"config": hw["config"], "derived": hw["derived"], "params": hw["params"]}, indent=1, sort_keys=True)
    )
    return hw


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


DATASET_DASHES = {"ImageNet": "", "CIFAR-100": (4, 2), "other": (1, 1.5)}  # solid, dashed, dotted
DATASET_MARKERS = {"ImageNet": "o", "CIFAR-100": "s", "other": "^"}


def network_style(networks: Iterable[str]) -> pd.DataFrame:
    """Per network: `architecture` (the hue: resnet18 and cifar_resnet18 share a colour) and `dataset` (the line
    style: ImageNet, CIFAR-100, or `other` for a model that is not one of the paper's networks), plus `color`.

    Networks differing only in dataset are told apart by line style and marker, never by near-identical hues.
    """
    from basisn.hardware.networks import PAPER_NETWORKS

    names = list(networks)
    rows = []
    for name in names:
        spec = PAPER_NETWORKS.get(name)
        dataset = spec.dataset if spec is not None else "other"
        rows.append({"network": name, "architecture": name.removeprefix("cifar_"), "dataset": dataset})
    frame = pd.DataFrame(rows, columns=["network", "architecture", "dataset"])
    architectures = list(dict.fromkeys(frame["architecture"]))
    palette = dict(zip(architectures, sns.color_palette("colorblind", len(architectures))))
    frame["color"] = frame["architecture"].map(palette)
    return frame
