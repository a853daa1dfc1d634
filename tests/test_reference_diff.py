"""tools/reference_diff.py, which ends `make repro`: what it calls a timing-only change and what a real one, on a
git repository of constructed reference files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import reference_diff  # noqa: E402  (a script of tools/, not a package)

CLAIMS = "| # | claim |\n| 1 | cycles |\n| 9 | training took 75.9 s |\n"
METRICS = {"test_accuracy": 0.9176, "stage_seconds": 129.2, "train_seconds": 122.2, "images_per_second": 3926.9}


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


def reference_repo(tmp_path: Path) -> Path:
    (tmp_path / "outputs/train").mkdir(parents=True)
    (tmp_path / "paper_figures").mkdir()
    (tmp_path / "outputs/train/metrics.json").write_text(json.dumps(METRICS))
    (tmp_path / "CLAIMS.md").write_text(CLAIMS)
    (tmp_path / "paper_figures/headline.csv").write_text("network,ratio\nresnet18,0.0803\n")
    (tmp_path / "paper_figures/accuracy_training_cost.csv").write_text("stage,seconds\ntrain,129.2\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "references")
    return tmp_path


def test_an_unchanged_rerun_reports_none(tmp_path):
    lines = reference_diff.report(reference_repo(tmp_path))
    assert lines[0].endswith(": 0") and "none: the rerun reproduced the reference" in lines[-1]


def test_timing_fields_are_expected_and_everything_else_is_named(tmp_path):
    repo = reference_repo(tmp_path)
    (repo / "outputs/train/metrics.json").write_text(json.dumps(dict(METRICS, stage_seconds=140.0)))
    (repo / "CLAIMS.md").write_text(CLAIMS.replace("75.9 s", "80.1 s"))
    (repo / "paper_figures/accuracy_training_cost.csv").write_text("stage,seconds\ntrain,140.0\n")
    lines = reference_diff.report(repo)
    assert lines[0].endswith(": 3")
    assert "timing fields only" in lines[1] and all(
        name in lines[1] for name in ("metrics.json", "CLAIMS.md", "accuracy_training_cost.csv")
    )
    assert lines[-1].endswith("none: the rerun reproduced the reference")

    (repo / "outputs/train/metrics.json").write_text(json.dumps(dict(METRICS, test_accuracy=0.9181)))
    (repo / "CLAIMS.md").write_text(CLAIMS.replace("cycles", "cycles 1.2%"))
    (repo / "paper_figures/headline.csv").write_text("network,ratio\nresnet18,0.0804\n")
    (repo / "paper_figures/new_table.csv").write_text("x\n1\n")
    beyond = reference_diff.report(repo)[-1]
    for name in ("outputs/train/metrics.json", "CLAIMS.md", "paper_figures/headline.csv"):
        assert name in beyond
    assert "paper_figures/new_table.csv (new, not in the references)" in beyond


def test_outside_a_git_checkout_it_says_so_and_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reference_diff, "ROOT", tmp_path)
    monkeypatch.setattr(reference_diff.report, "__defaults__", (tmp_path,))
    assert reference_diff.main() == 0
    assert "cannot compare with the committed references" in capsys.readouterr().out
