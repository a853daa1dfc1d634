"""`basisn summary` (the end of `make repro`) on a workspace made of the fixtures: each line's numbers are the
stage outputs' own, and a missing output is named with the stage that writes it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from basisn.summary import summary_lines

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def workspace(tmp_path) -> Path:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "outputs" / "evaluate").mkdir(parents=True)
    shutil.copy(FIXTURES / "pipeline" / "evaluate" / "metrics.json", tmp_path / "outputs" / "evaluate")
    shutil.copytree(FIXTURES / "hardware", tmp_path / "outputs" / "hardware")
    shutil.copytree(FIXTURES / "robustness", tmp_path / "outputs" / "robustness")
    return tmp_path


def line_with(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_summary_quotes_the_stage_outputs(workspace):
    lines = summary_lines(workspace)
    metrics = json.loads((FIXTURES / "pipeline" / "evaluate" / "metrics.json").read_text())
    assert f"{100 * metrics['dense_accuracy']:.2f}%" in line_with(lines, "dense accuracy")
    basisn = line_with(lines, "BasisN accuracy")
    assert (
        f"{100 * metrics['basisn_accuracy']:.2f}%" in basisn and f"{metrics['basisn_minus_dense_pp']:+.2f} pp" in basisn
    )

    hw = json.loads((FIXTURES / "hardware" / "hw_eval.json").read_text())
    ratios = pd.read_csv(FIXTURES / "hardware" / "ratios.csv")
    main = ratios[(ratios["preset"] == hw["preset"]) & ratios["n_crossbars"].isin(hw["params"]["report_crossbars"])]
    paper = main[main["network"].isin(hw["params"]["networks"])]
    headline = line_with(lines, "BasisN / reprogramming, paper networks")
    for column, name in (("cycles_ratio", "cycles"), ("edp_ratio", "EDP")):
        assert f"{name} {paper[column].min():.3g}-{paper[column].max():.3g}" in headline
    below = int((paper["edp_ratio"] < 0.01).sum())
    assert f"EDP at {below} of {len(paper)}" in line_with(lines, "below the paper's 1%")
    model = main[main["network"] == "pipeline_model"]
    trained = line_with(lines, "BasisN / reprogramming, the trained model")
    assert f"energy {model['energy_ratio'].min():.3g}-{model['energy_ratio'].max():.3g}" in trained
    assert ("above reprogramming" in trained) == bool((model["energy_ratio"] > 1).any())

    drops = pd.read_csv(FIXTURES / "robustness" / "summary.csv").groupby("mapping")["accuracy_drop_pp"].max()
    robustness = line_with(lines, "largest accuracy drop")
    assert all(f"{mapping} {drop:.1f} pp" in robustness for mapping, drop in drops.items())
    assert any("paper_figures/" in line and "CLAIMS.md" in line for line in lines)


def test_summary_names_the_stage_of_a_missing_output(workspace):
    shutil.rmtree(workspace / "outputs" / "hardware")
    (workspace / "outputs" / "evaluate" / "metrics.json").unlink()
    lines = summary_lines(workspace)
    assert "run `dvc repro evaluate`" in line_with(lines, "accuracy:")
    assert "run `dvc repro hardware`" in line_with(lines, "hardware:")


def test_summary_command_refuses_a_directory_that_is_not_the_repository(tmp_path):
    args = [sys.executable, "-m", "basisn.cli", "summary", "--root", str(tmp_path)]
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and f"{tmp_path} is not the repository root" in result.stderr
