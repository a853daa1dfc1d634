"""`sweep` stage (`basisn sweep`): n_basis x coef_bits decomposed from the baseline (reconstruction error and
accuracy), optionally each briefly fine-tuned (`sweep.finetune_epochs`)."""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import pandas as pd
import torch

from basisn.atomic import atomic_directory, atomic_write_json
from basisn.basis import to_basisn
from basisn.stages.common import (
    load_stage_model,
    loaders,
    one_line_errors,
    parser,
    prepare,
    report_totals,
    train_config,
)


@one_line_errors
def main(argv: list[str]) -> int:
    """`sweep` stage: n_basis x coef_bits, decomposed from the baseline, optionally briefly fine-tuned."""
    arguments = parser("sweep", "accuracy and reconstruction error over n_basis x coef_bits", "outputs/sweep")
    arguments.add_argument("--dense", default="outputs/train/model.pt", help="dense baseline (the train stage's model)")
    args = arguments.parse_args(argv)
    p, lock = prepare(args, layer_names=True)  # sweep.n_basis against decompose: in params.resolve
    dense, _ = load_stage_model(Path(args.dense), "train", basis_mapped=False)
    with lock:
        return _sweep(p, args, dense)


def _sweep(p: dict, args: argparse.Namespace, dense: torch.nn.Module) -> int:
    from basisn.train import TeacherCache, evaluate, fit

    sweep = p["sweep"]
    teacher = TeacherCache(dense)  # every short fine-tune sees the same batches: the dense logits once
    data = loaders(p, subset=sweep["finetune_subset"])
    rows = []
    grid = [(n, b) for n in sweep["n_basis"] for b in sweep["coef_bits"]]
    with atomic_directory(Path(args.out)) as out:
        for index, (n_basis, coef_bits) in enumerate(grid, 1):
            settings = dict(p["decompose"], n_basis=n_basis, coef_bits=coef_bits)
            model, report = to_basisn(copy.deepcopy(dense), **settings, seed=p["seed"])
            row = dict(
                n_basis=n_basis,
                coef_bits=coef_bits,
                **report_totals(pd.DataFrame(report)),
                decomposed_accuracy=evaluate(model, data.test, data.num_classes)["accuracy"],
            )
            if sweep["finetune_epochs"]:
                config = train_config(p, "finetune", epochs=sweep["finetune_epochs"])
                with tempfile.TemporaryDirectory() as scratch:  # fit scores the test set after its last epoch
                    metrics = fit(model, data.train, data.test, config, Path(scratch), teacher=teacher)
                    row["finetuned_accuracy"] = metrics["test_accuracy"]
            rows.append(row)
            print(f"sweep {index}/{len(grid)}: {row}", flush=True)
        pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
        atomic_write_json(out / "params.json", dict(sweep=sweep, decompose=p["decompose"], profile=p["profile"]))
    return 0
