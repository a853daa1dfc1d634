"""`data` stage (`basisn data-check`): verify data/raw against the pinned hashes and describe the dataset.

Every stage that reads data/raw depends on this stage's summary.json (dvc.yaml), so a corrupt byte in the raw files
fails the pipeline here, with one line, on every `dvc repro`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from basisn.atomic import atomic_directory, atomic_write_json
from basisn.stages.common import loaders, one_line_errors, parser, prepare


@one_line_errors
def main(argv: list[str]) -> int:
    """`data` stage: verify the raw files against their pinned hashes and describe the dataset."""
    args = parser("data-check", "verify data/raw and write a dataset summary", "outputs/data").parse_args(argv)
    p, lock = prepare(args)
    with lock:
        return _write_summary(p, args)


def _write_summary(p: dict, args: argparse.Namespace) -> int:
    data = loaders(p, augment=False)
    train_labels, test_labels = data.train.sample_labels(), data.test.sample_labels()
    summary = dict(
        dataset=p["data"]["dataset"],
        profile=p["profile"],
        train_samples=len(train_labels),
        test_samples=len(test_labels),
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        input_size=list(data.input_size),
        class_names=data.class_names,
        train_per_class=torch.bincount(train_labels, minlength=data.num_classes).tolist(),
        test_per_class=torch.bincount(test_labels, minlength=data.num_classes).tolist(),
        files_md5=_verified_md5s(p),
    )
    with atomic_directory(Path(args.out)) as out:
        atomic_write_json(out / "summary.json", summary)
    print(f"data: {summary['dataset']} {summary['train_samples']} train / {summary['test_samples']} test images")
    return 0


def _verified_md5s(p: dict) -> dict[str, str]:
    """MD5 of each raw file (what the stages reading data/raw depend on, through summary.json; see dvc.yaml)."""
    from basisn.data import FASHION_MNIST_MD5, md5_of

    if p["data"]["dataset"] == "fashion_mnist":  # check_dataset_files has just checked each against this pin
        return dict(FASHION_MNIST_MD5)
    if p["data"]["dataset"] == "cifar100":
        folder = Path(p["data"]["root"]) / "cifar-100-python"
        return {name: md5_of(folder / name) for name in ("train", "test", "meta")}
    return {}  # an ImageNet folder: too many files to hash on every run
