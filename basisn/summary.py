"""`basisn summary`: what `make repro` produced, in a few lines a person reads (one fact per line).

It reads the stage outputs only (outputs/evaluate, outputs/hardware, outputs/robustness), never recomputes
anything, and says for each missing output which `dvc repro` stage writes it. The full tables are in
paper_figures/ and the claim-by-claim verdict in CLAIMS.md (both written by the notebook stages).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

EVALUATE = "outputs/evaluate/metrics.json"
HW_EVAL = "outputs/hardware/hw_eval.json"
RATIOS = "outputs/hardware/ratios.csv"
ROBUSTNESS = "outputs/robustness/summary.csv"
MODEL_NETWORK = "pipeline_model"  # the name the hardware stage gives the pipeline's own model (dvc.yaml)


PAPER_NETWORK_DATASETS: dict[str, str] = {
    # basisn.hardware.networks.PAPER_NETWORKS as name -> dataset, without importing torch (that module builds the
    # models); tests/test_summary.py checks that the two agree.
    "resnet18": "ImageNet",
    "resnet34": "ImageNet",
    "resnet50": "ImageNet",
    "densenet121": "ImageNet",
    "cifar_resnet18": "CIFAR-100",
    "cifar_resnet34": "CIFAR-100",
    "cifar_densenet121": "CIFAR-100",
}
BELOW_BOUND = 0.01  # the abstract's "below 1%" of reprogramming, as a ratio
KEYS = ["network", "n_crossbars"]


def span(values, scale: float = 1.0, unit: str = "", digits: int = 3) -> str:
    """'a' or 'a-b' of values * scale (`digits` significant digits, whole numbers from 10**digits on: never
    '9.08e+03'), then `unit`: one number when both ends print alike, so a range never reads '0.5-0.5'."""
    low, high = float(min(values)) * scale, float(max(values)) * scale
    low_text, high_text = (f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}" for x in (low, high))
    return f"{low_text}{unit}" if low_text == high_text else f"{low_text}-{high_text}{unit}"


def percent(values) -> str:
    """A span of ratios as percentages ('11.9-31.2%'), the unit the abstract's '1%' is in."""
    return span(values, 100, "%")


def paper_networks(hw: dict) -> list[str]:
    """The networks hw-eval evaluated that are the paper's (hw_eval.json's order); a transformer or the pipeline's
    own model listed in hardware.networks is not one and never enters the paper-network verdicts."""
    return [name for name in hw["params"]["networks"] if name in PAPER_NETWORK_DATASETS]


def where(points: pd.DataFrame) -> str:
    """'resnet18 at N = 16, 64; cifar_resnet18 at N = 64' for rows with network and n_crossbars."""
    by_network = points.groupby("network", sort=False)["n_crossbars"]
    return "; ".join(f"{name} at N = {', '.join(map(str, sorted(ns)))}" for name, ns in by_network)


def below_verdict(base: pd.DataFrame, sweeps: pd.DataFrame, column: str, bound: float = BELOW_BOUND) -> str:
    """The verdict on "`column` below `bound`" at the base points (`base`: one row per paper network and report N):

    - "holds": every base point is below;
    - "holds only ...": some base points are below (named), and/or changing one setting of the base point (a sweep
      of `sweeps`, which must hold only the base preset's one-at-a-time sweeps at the same networks and N) puts
      every base point below (named);
    - "not reproduced: ...": neither.
    """
    below = base[base[column] < bound]
    if len(below) == len(base):
        return "holds"
    wanted = set(map(tuple, base[KEYS].to_numpy()))
    settings = []
    for sweep, part in sweeps.groupby("sweep", sort=True):
        for value, points in part.groupby(sweep, sort=True):
            if set(map(tuple, points[KEYS].to_numpy())) >= wanted and (points[column] < bound).all():
                settings.append(f"{sweep} = {value:g}")
    found = []
    if not below.empty:
        found.append(f"for {where(below)} (of {len(base)} base points)")
    if settings:
        found.append("at every base point with one setting changed: " + " or ".join(settings))
    if found:
        return "holds only " + "; and ".join(found)
    return (
        f"not reproduced: no base point is below {100 * bound:g}%, nor is every base point with any one setting changed"
    )


def beats_verdict(base: pd.DataFrame, columns: dict[str, str], bound: float = 1.0) -> str:
    """The verdict on "every ratio of `columns` (metric name -> column) is below `bound`" at the base points:
    "holds" (every metric, every point), "holds only for ..." (the metrics and points where it is, and the metrics
    where it never is), or "not reproduced: ..." (no metric at any point)."""
    reached, missed = [], []
    for metric, column in columns.items():
        below = base[base[column] < bound]
        if below.empty:
            missed.append(metric)
        else:
            reached.append(
                f"{metric} (every base point)" if len(below) == len(base) else f"{metric} for {where(below)}"
            )
    if not missed and all(part.endswith("(every base point)") for part in reached):
        return "holds"
    if reached:
        return "holds only for " + "; ".join(reached) + (f"; not for {' or '.join(missed)}" if missed else "")
    return f"not reproduced: {' and '.join(missed)} above {bound:g} at every base point"


def accuracy_lines(root: Path) -> list[str]:
    path = root / EVALUATE
    if not path.is_file():
        return [f"accuracy: {EVALUATE} missing: run `dvc repro evaluate`"]
    m = json.loads(path.read_text())
    return [
        f"profile {m['profile']}: {m['test_samples']} test images, basis of {m['n_basis']} vectors, "
        f"{m['coef_bits']}-bit coefficients",
        f"dense accuracy   {100 * m['dense_accuracy']:.2f}%",
        f"BasisN accuracy  {100 * m['basisn_accuracy']:.2f}% ({m['basisn_minus_dense_pp']:+.2f} pp vs dense; "
        f"{100 * m['decomposed_accuracy']:.2f}% before fine-tuning)",
    ]


def ratio_lines(root: Path) -> list[str]:
    if not (root / HW_EVAL).is_file() or not (root / RATIOS).is_file():
        return [f"hardware: {HW_EVAL} or {RATIOS} missing: run `dvc repro hardware`"]
    hw = json.loads((root / HW_EVAL).read_text())
    ratios = pd.read_csv(root / RATIOS)
    report = hw["params"]["report_crossbars"]
    main = ratios[(ratios["preset"] == hw["preset"]) & ratios["n_crossbars"].isin(report)]
    crossbars = ", ".join(map(str, report))
    lines = []
    networks = paper_networks(hw)
    paper = main[main["network"].isin(networks)]
    if not paper.empty:
        below = (
            int((paper["cycles_ratio_best"] < BELOW_BOUND).sum()),
            int((paper["edp_ratio_best"] < BELOW_BOUND).sum()),
        )
        lines.append(
            f"BasisN / best reprogramming schedule, paper networks ({', '.join(networks)}; N = {crossbars} "
            f"crossbars; preset {hw['preset']}): cycles {percent(paper['cycles_ratio_best'])}, "
            f"EDP {percent(paper['edp_ratio_best'])}, energy {percent(paper['energy_ratio_best'])}"
        )
        lines.append(
            f"below the paper's 1% of the best reprogramming schedule: cycles at {below[0]} of {len(paper)} points, "
            f"EDP at {below[1]} of {len(paper)}"
        )
        lines.append(
            f"BasisN / the dense network on BasisN's digital lanes: cycles {percent(paper['cycles_ratio_digital'])}, "
            f"EDP {percent(paper['edp_ratio_digital'])}"
        )
    model = main[main["network"] == MODEL_NETWORK]
    if not model.empty:
        lines.append(
            f"BasisN / best reprogramming schedule, the trained model: cycles {percent(model['cycles_ratio_best'])}, "
            f"EDP {percent(model['edp_ratio_best'])}, energy {percent(model['energy_ratio_best'])}"
            + (" (energy above reprogramming's)" if (model["energy_ratio_best"] > 1).any() else "")
        )
    return lines


def robustness_lines(root: Path) -> list[str]:
    path = root / ROBUSTNESS
    if not path.is_file():
        return [f"robustness: {ROBUSTNESS} missing: run `dvc repro robustness`"]
    summary = pd.read_csv(path)
    worst = summary.groupby("mapping")["accuracy_drop_pp"].max()
    return ["largest accuracy drop on simulated crossbars: " + ", ".join(f"{k} {v:.1f} pp" for k, v in worst.items())]


def summary_lines(root: Path) -> list[str]:
    lines = accuracy_lines(root) + ratio_lines(root) + robustness_lines(root)
    lines.append("figures and tables: paper_figures/ (listed in docs/figures.md); claim by claim: CLAIMS.md")
    lines.append("executed notebooks: runs/; all metrics: `dvc metrics show`; compare with the reference: ARTIFACT.md")
    return lines


def summary_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="basisn summary", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (where outputs/ is)")
    args = parser.parse_args(argv)
    if not (args.root / "dvc.yaml").is_file():
        print(f"basisn summary: {args.root} is not the repository root (no dvc.yaml there)", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(args.root)))
    return 0
