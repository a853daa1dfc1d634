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

from basisn.summary import PAPER_NETWORK_DATASETS, percent, summary_lines

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
    headline = line_with(lines, "BasisN / best reprogramming schedule, paper networks")
    for column, name in (("cycles_ratio_best", "cycles"), ("edp_ratio_best", "EDP")):  # the best baseline
        assert f"{name} {100 * paper[column].min():.3g}-{100 * paper[column].max():.3g}%" in headline
    below = int((paper["edp_ratio_best"] < 0.01).sum())
    assert f"EDP at {below} of {len(paper)}" in line_with(lines, "below the paper's 1%")
    digital = line_with(lines, "BasisN / the dense network on BasisN's digital lanes")
    assert f"cycles {percent(paper['cycles_ratio_digital'])}, EDP {percent(paper['edp_ratio_digital'])}" in digital
    model = main[main["network"] == "pipeline_model"]
    trained = line_with(lines, "BasisN / best reprogramming schedule, the trained model")
    assert f"energy {percent(model['energy_ratio_best'])}" in trained
    assert ("above reprogramming" in trained) == bool((model["energy_ratio_best"] > 1).any())

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


def test_summary_counts_only_the_paper_networks(workspace):
    """vit_b_16 (or the pipeline's model) listed in hardware.networks stays out of the paper-network line."""
    hw_path = workspace / "outputs" / "hardware" / "hw_eval.json"
    hw = json.loads(hw_path.read_text())
    hw["params"]["networks"] += ["vit_b_16", "pipeline_model"]
    hw_path.write_text(json.dumps(hw))
    ratios = pd.read_csv(workspace / "outputs" / "hardware" / "ratios.csv")
    vit = ratios[ratios["network"] == "resnet18"].assign(network="vit_b_16", cycles_ratio_best=50.0)
    pd.concat([ratios, vit]).to_csv(workspace / "outputs" / "hardware" / "ratios.csv", index=False)
    headline = line_with(summary_lines(workspace), "BasisN / best reprogramming schedule, paper networks")
    assert "vit_b_16" not in headline and "pipeline_model" not in headline and "5000%" not in headline


def test_paper_network_names_are_the_cost_models():
    """basisn.summary's torch-free copy agrees with basisn.hardware.networks (which imports torch)."""
    from basisn.hardware.networks import PAPER_NETWORKS

    assert PAPER_NETWORK_DATASETS == {name: spec.dataset for name, spec in PAPER_NETWORKS.items()}
