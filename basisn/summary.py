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


def _span(values: pd.Series, digits: int = 3) -> str:
    low, high = float(values.min()), float(values.max())
    return f"{low:.{digits}g}" if low == high else f"{low:.{digits}g}-{high:.{digits}g}"


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
    paper = main[main["network"].isin(hw["params"]["networks"])]
    if not paper.empty:
        below = int((paper["cycles_ratio"] < 0.01).sum()), int((paper["edp_ratio"] < 0.01).sum())
        lines.append(
            f"BasisN / reprogramming, paper networks ({', '.join(hw['params']['networks'])}; N = {crossbars} "
            f"crossbars; preset {hw['preset']}): cycles {_span(paper['cycles_ratio'])}, "
            f"EDP {_span(paper['edp_ratio'])}, energy {_span(paper['energy_ratio'])}"
        )
        lines.append(
            f"below the paper's 1%: cycles at {below[0]} of {len(paper)} points, EDP at {below[1]} of {len(paper)}"
        )
    model = main[main["network"] == MODEL_NETWORK]
    if not model.empty:
        lines.append(
            f"BasisN / reprogramming, the trained model: cycles {_span(model['cycles_ratio'])}, "
            f"EDP {_span(model['edp_ratio'])}, energy {_span(model['energy_ratio'])}"
            + (" (energy above reprogramming's)" if (model["energy_ratio"] > 1).any() else "")
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
