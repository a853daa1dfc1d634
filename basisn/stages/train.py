"""`train` stage (`basisn train`): the dense baseline; `fit_stage` is shared with the finetune stage.

Training checkpoints every epoch under `checkpoints/<stage>-<hash of its params>/` and resumes from there when
rerun with the same params (`dvc repro` after a kill picks up where it stopped). Multi-GPU:
`torchrun --nproc_per_node=4 -m basisn.cli train --params params.yaml --out outputs/train`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from basisn import params as params_module
from basisn.atomic import atomic_directory, atomic_write_json
from basisn.checkpoints import save_model
from basisn.stages.common import (
    CHECKPOINT_ROOT,
    history_csv,
    load_stage_model,
    loaders,
    one_line_errors,
    parser,
    prepare,
    scalar_summary,
    train_config,
)


@one_line_errors
def main(argv: list[str]) -> int:
    """`train` stage: the dense baseline."""
    args = parser("train", "train the dense baseline", "outputs/train").parse_args(argv)
    p, lock = prepare(args)
    with lock:
        return fit_stage(p, args, "train")


def fit_stage(p: dict, args: argparse.Namespace, stage: str) -> int:
    """train (dense baseline) and finetune (BasisN, distilled from the baseline) share this."""
    from basisn.train import cleanup_distributed, fit, init_distributed

    teacher = model = None
    if stage == "finetune":  # model files first: a bad one is one line before any data is loaded
        model, _ = load_stage_model(Path(args.decomposed), "decompose", basis_mapped=True)
        teacher, _ = load_stage_model(Path(args.teacher), "train", basis_mapped=False)
    rank, world_size, _, device = init_distributed()
    try:
        data = loaders(p, rank, world_size)
        meta = dict(
            model=p["model"]["name"],
            num_classes=data.num_classes,
            in_channels=data.in_channels,
            input_size=list(data.input_size),
            dataset=p["data"]["dataset"],
            profile=p["profile"],
        )
        if stage == "train":
            model = build_dense(p, data)
            config = train_config(p, "train")
            fingerprint_of = (p["data"], p["model"], p["train"], p["seed"])
        else:
            config = train_config(p, "finetune")
            fingerprint_of = (p["data"], p["model"], p["decompose"], p["finetune"], p["seed"], p["train"])
        checkpoints = CHECKPOINT_ROOT / f"{stage}-{params_module.fingerprint(*fingerprint_of)}"
        started = time.perf_counter()
        metrics = fit(model, data.train, data.test, config, checkpoints, teacher=teacher, device=device)
        with atomic_directory(Path(args.out), enabled=rank == 0) as out:
            save_model(model.cpu(), out / "model.pt", meta)
            summary = dict(scalar_summary(metrics), profile=p["profile"], stage_seconds=time.perf_counter() - started)
            atomic_write_json(out / "metrics.json", summary)
            history_csv(metrics, out / "history.csv")
            atomic_write_json(out / "params.json", p)
        if rank == 0:
            print(f"{stage}: test accuracy {summary.get('test_accuracy', float('nan')):.4f} -> {args.out}")
        return 0
    finally:
        cleanup_distributed()


def build_dense(p: dict, data: Any) -> Any:
    """The untrained dense baseline of params `p` for `data` (a Loaders), initialised from p["seed"]: the train
    stage's model, and the tradeoff stage's baselines of its other replicate seeds."""
    from basisn.models import build_model
    from basisn.train import seed_everything

    seed_everything(p["seed"])
    return build_model(p["model"]["name"], data.num_classes, data.in_channels)
