"""End to end: the DVC pipeline on a copy of the repository, resume after a kill, 2-process DDP through the CLI.

These are the slow tests. `make test` runs them on the `smoke` profile (a 1024-image subset, 1 epoch: about a
minute or two); `make test-full` (BASISN_FULL_TESTS=1) runs the default profile, which is what `make repro` does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FULL = os.environ.get("BASISN_FULL_TESTS") == "1"
PROFILE = "default" if FULL else "smoke"
RAW = ROOT / "data" / "raw" / "fashion-mnist"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not RAW.is_dir(), reason="needs Fashion-MNIST in data/raw: run `make data`"),
]


def environment() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONUNBUFFERED="1")
    env.pop("BASISN_PROFILE", None)
    return env


def run(args: list[str], cwd: Path, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


# what a clean `dvc repro` of the default profile wrote and git holds as the reference (ARTIFACT.md)
REFERENCE_OUTPUTS = ("dvc.lock", "CLAIMS.md")
REFERENCE_OUTPUT_DIRS = ("outputs/", "paper_figures/")


def repository_copy(tmp_path: Path, profile: str = PROFILE) -> Path:
    """The repository as a fresh clone would have it (tracked + new files, nothing ignored), data copied in, less
    the committed reference outputs of the default profile (REFERENCE_OUTPUTS): the pipeline starts from nothing,
    on `profile`."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    copy = tmp_path / "repo"
    for name in filter(None, listed.split("\0")):
        if name in REFERENCE_OUTPUTS or name.startswith(REFERENCE_OUTPUT_DIRS):
            continue
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    shutil.copytree(ROOT / "data" / "raw", copy / "data" / "raw")
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["profile"] = profile
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy", "--no-verify"]):
        subprocess.run(
            command,
            cwd=copy,
            check=True,
            env=dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                     GIT_COMMITTER_EMAIL="t@t"),
        )  # fmt: skip
    return copy


def test_dvc_repro_runs_everything_then_nothing(tmp_path):
    repo = repository_copy(tmp_path)
    first = run([str(BIN / "dvc"), "repro"], repo, timeout=1800)
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout, f"stage {stage} did not run:\n{first.stdout[-3000:]}"
    metrics = json.loads((repo / "outputs/evaluate/metrics.json").read_text())
    assert {"dense_accuracy", "decomposed_accuracy", "basisn_accuracy"} <= metrics.keys()
    assert metrics["basisn_folded_accuracy"] == pytest.approx(metrics["basisn_accuracy"], abs=2e-3)
    shown = run([str(BIN / "dvc"), "metrics", "show"], repo).stdout
    assert "dense_accuracy" in shown and "basisn_accuracy" in shown
    lock = (repo / "dvc.lock").read_text()
    figures = {p.name: p.read_bytes() for p in (repo / "paper_figures").glob("*") if p.is_file()}

    second = run([str(BIN / "dvc"), "repro"], repo)
    # only `data` reruns (always_changed: it re-checks data/raw against the pin, dvc.yaml says why); its output
    # is the same, so nothing downstream runs and dvc.lock does not change
    assert [line for line in second.stdout.splitlines() if "Running stage" in line] == ["Running stage 'data':"]
    assert (repo / "dvc.lock").read_text() == lock

    # forcing a rerun of notebooks (alone: --single-item) regenerates byte-identical figures and tables; two of
    # them here to keep the suite fast (FULL: all), tests/test_notebooks.py checks each notebook on fixtures
    notebook_stages = [s for s in stages if "notebook" in str(stages[s].get("cmd", ""))]
    if not FULL:
        notebook_stages = [s for s in notebook_stages if s in {"nb_accuracy", "nb_cycles"}]
    if notebook_stages:
        run([str(BIN / "dvc"), "repro", "--force", "--single-item", *notebook_stages], repo)
        again = {p.name: p.read_bytes() for p in (repo / "paper_figures").glob("*") if p.is_file()}
        assert again.keys() == figures.keys()
        assert [name for name in figures if figures[name] != again[name]] == []
    if FULL:  # the accuracy targets of the default profile
        assert metrics["dense_accuracy"] >= 0.90
        assert metrics["basisn_minus_dense_pp"] >= -1.0


def kill_when(command: list[str], cwd: Path, ready, timeout: float = 600) -> None:
    """Run `command` in `cwd` and SIGKILL it as soon as `ready()` is true (it must still be running then)."""
    process = subprocess.Popen(command, cwd=cwd, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not ready() and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _train_metrics(repo: Path) -> dict:
    metrics = json.loads((repo / "outputs/train/metrics.json").read_text())
    timing = {"train_seconds", "images_per_second", "stage_seconds"}
    metrics = {k: v for k, v in metrics.items() if k not in timing}
    history = json.loads((next((repo / "checkpoints").glob("train-*")) / "metrics.json").read_text())["history"]
    metrics["history"] = [{k: v for k, v in h.items() if k not in timing} for h in history]
    return metrics


def test_killed_training_resumes_to_the_same_metrics(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for repo in (reference, interrupted):
        repository_copy(repo)
        params = yaml.safe_load((repo / "repo/params.yaml").read_text())
        params["profiles"]["smoke"]["train"]["epochs"] = 2
        (repo / "repo/params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    reference, interrupted = reference / "repo", interrupted / "repo"
    train = [str(BIN / "basisn"), "train", "--profile", "smoke"]
    run(train, reference)

    # mid epoch 2: epoch 1's checkpoint has just been written
    kill_when(train, interrupted, lambda: list((interrupted / "checkpoints").glob("train-*/checkpoint.pt")))
    assert not (interrupted / "outputs/train/metrics.json").exists()

    resumed = run(train, interrupted)
    assert "resum" in (resumed.stdout + resumed.stderr).lower()
    assert _train_metrics(interrupted) == _train_metrics(reference)


def _tradeoff_results(repo: Path) -> list[dict]:
    import pandas as pd

    frame = pd.read_csv(repo / "outputs/tradeoff/results.csv").drop(columns=["train_seconds"])
    return frame.to_dict(orient="records")


def test_killed_tradeoff_stage_resumes_to_the_same_results(tmp_path):
    """Killed after some finished configurations, the stage resumes from its records to the same table."""
    reference, interrupted = (repository_copy(tmp_path / name) for name in ("reference", "interrupted"))
    tradeoff = [str(BIN / "basisn"), "tradeoff", "--profile", "smoke"]
    for repo in (reference, interrupted):
        run([str(BIN / "basisn"), "train", "--profile", "smoke"], repo)
    run(tradeoff, reference)
    # after 5 records, among them the smoke grid's G = 4 `learned` and `dynamic` rows, which the rerun prices from
    # a fresh (not yet hardened) decomposition
    records = interrupted / "checkpoints"
    kill_when(tradeoff, interrupted, lambda: len(list(records.glob("tradeoff-*/*/row.json"))) >= 5)
    assert not (interrupted / "outputs/tradeoff").exists(), "nothing is written before the stage has finished"
    finished = {p.parent.name for p in (interrupted / "checkpoints").glob("tradeoff-*/*/row.json")}
    rerun = run(tradeoff, interrupted)
    assert _tradeoff_results(interrupted) == _tradeoff_results(reference)
    assert finished and rerun.stdout.count("finished by an earlier run") >= len(finished)


def test_two_process_ddp_training_through_the_cli(tmp_path):
    repo = repository_copy(tmp_path)
    command = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "basisn.cli",
        "train",
        "--profile",
        "smoke",
    ]
    result = run(command, repo, timeout=600)
    metrics = json.loads((repo / "outputs/train/metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["test_samples"] == 512  # every test image counted once across the two ranks
    assert (result.stdout + result.stderr).count("train: test accuracy") == 1  # rank 0 alone reports
