"""`torchrun` launches of the paper's profiles (CIFAR-100, ImageNet) as README documents them, on tiny data files
written in the real formats: 2 processes with gloo on the CPU, the profile's real model and loader settings, only
the sizes shrunk (subset, epochs, batch) so that a launch takes seconds.

What must hold under DDP: each test image is counted once across ranks, only rank 0 logs and writes outputs and
checkpoints, and the BasisN fine-tune (shared basis, teacher, quantization in the loop) runs like the dense one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_data import write_fake_cifar100, write_fake_imagenet

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def shrunk_params(tmp_path: Path, profile: str, data: dict) -> Path:
    """params.yaml with `profile` kept as the repository has it, except for sizes (data/epochs/batch)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = params["profiles"][profile]
    overrides["data"] = dict(overrides["data"], **data)
    overrides["train"] = dict(overrides["train"], epochs=1, warmup_epochs=0)
    overrides["finetune"] = dict(overrides["finetune"], epochs=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def torchrun(stage: str, profile: str, cwd: Path, processes: int = 2) -> str:
    """`torchrun --standalone --nproc_per_node=2 -m basisn.cli STAGE ...` as README shows (processes=1: plain CLI)."""
    launcher = [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={processes}", "-m", "basisn.cli"]
    command = [*(launcher if processes > 1 else [str(BIN / "basisn")]), stage]
    command += ["--params", "params.yaml", "--profile", profile]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1", CI="true")
    env.pop("BASISN_PROFILE", None)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    return output


def check_launch(cwd: Path, stage: str, output: str, test_images: int) -> dict:
    metrics = json.loads((cwd / "outputs" / stage / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["test_samples"] == test_images  # disjoint shards: every test image counted exactly once
    assert output.count(f"{stage}: test accuracy") == 1  # rank 0 alone reports
    assert output.count("epoch 1/1:") == 1  # and logs epochs
    checkpoints = list((cwd / "checkpoints").glob(f"{stage}-*/checkpoint.pt"))
    assert len(checkpoints) == 1  # one checkpoint, from rank 0
    assert not list(cwd.rglob("*.tmp"))  # no temporary file left behind by either rank
    used = json.loads((cwd / "outputs" / stage / "params.json").read_text())  # the resolved params of the run
    return dict(metrics, model=used["model"]["name"], dataset=used["data"]["dataset"])


def test_cifar100_profile_trains_and_finetunes_under_torchrun(tmp_path):
    write_fake_cifar100(tmp_path / "data" / "cifar100", 96, 30)
    shrunk_params(tmp_path, "cifar100_resnet18", {"batch_size": 16, "eval_batch_size": 8})
    train = check_launch(tmp_path, "train", torchrun("train", "cifar100_resnet18", tmp_path), 30)
    assert train["model"] == "cifar_resnet18" and train["dataset"] == "cifar100"
    assert train["global_steps"] == 3  # 96 images / 2 ranks / batch 16, one epoch
    torchrun("decompose", "cifar100_resnet18", tmp_path, processes=1)  # not a training stage: one process
    finetune = check_launch(tmp_path, "finetune", torchrun("finetune", "cifar100_resnet18", tmp_path), 30)
    assert finetune["global_steps"] == 3


def test_imagenet_profile_trains_under_torchrun_with_loader_workers(tmp_path):
    write_fake_imagenet(tmp_path / "data" / "imagenet")  # 14 train images in 3 classes, 5 val images
    shrunk_params(tmp_path, "imagenet_resnet18", {"batch_size": 4, "eval_batch_size": 2, "workers": 2})
    train = check_launch(tmp_path, "train", torchrun("train", "imagenet_resnet18", tmp_path), 5)
    assert train["model"] == "resnet18" and train["dataset"] == "imagenet"
    assert train["global_steps"] == 2  # 14 images padded to 16 / 2 ranks / batch 4, one epoch
