"""What a PyTorch user of the library hits first (issue 27, the items done so far): bounds checked before work,
no silent no-op, readable outputs for other users, no leftovers, --version and help texts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import basisn
from basisn import atomic, basis, params

ROOT = Path(__file__).resolve().parents[1]


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def test_segment_len_has_a_library_bound_checked_before_any_work(monkeypatch):
    monkeypatch.setattr(basis, "_decompose", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"segment_len=100000 is too large; allowed: 1 <= segment_len <= 8192"):
        basisn.to_basisn(tiny(), n_basis=8, segment_len=100_000)
    assert basis.MAX_SEGMENT_LEN == params.MAX_SEGMENT_LEN


def test_a_conversion_that_needs_more_memory_than_the_machine_is_refused_first(monkeypatch):
    monkeypatch.setattr(basis, "_physical_memory", lambda: 2**20)  # a 1 MiB machine
    monkeypatch.setattr(basis, "_decompose", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"needs about .* GiB for these weights, more than this machine's 0\.0 GiB"):
        basisn.to_basisn(tiny(), n_basis=8, segment_len=512)
    weights = [torch.zeros(10, 144), torch.zeros(4, 1, 3, 3)]  # 10 rows of 2 segments, 4 rows of 1, m = 128
    assert basis.conversion_bytes(weights, 8, 128) == 3 * 8 * 24 * 128 + 4 * 8 * 128**2 + 8 * 24 * 8


def test_rebuild_weights_of_a_model_without_basis_layers_says_so():
    with pytest.raises(ValueError, match="Sequential has no basis-mapped layer; convert it with basisn.to_basisn"):
        basisn.rebuild_weights(tiny())


def test_outputs_are_readable_by_other_users_under_the_usual_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic.atomic_write_json(tmp_path / "a.json", {"x": 1})
        with atomic.atomic_directory(tmp_path / "out") as staging:
            (staging / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    old = os.umask(0o077)  # a stricter umask is respected
    try:
        strict = atomic.atomic_write_json(tmp_path / "b.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(strict.stat().st_mode) == 0o600


def test_no_lock_file_is_left_after_a_run_that_fails_or_finishes(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(tmp_path / "out"):
            assert atomic.lock_path(tmp_path / "out").exists()  # held while writing
            raise RuntimeError("the stage failed")
    with atomic.atomic_directory(tmp_path / "out"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_version_and_help_texts():
    run = subprocess.run([sys.executable, "-m", "basisn.cli", "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"basisn {basisn.__version__}"
    assert (ROOT / "basisn" / "py.typed").is_file()
    for command, phrase in (
        ("finetune", "distillation teacher"),
        ("tradeoff", "dense baseline (the train stage's model)"),
        ("evaluate", "fine-tuned BasisN model"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "basisn.cli", command, "--help"], capture_output=True, text=True, check=True
        )
        assert phrase in " ".join(run.stdout.split()), run.stdout
