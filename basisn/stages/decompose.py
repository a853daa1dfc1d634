"""`decompose` stage (`basisn decompose`): to_basisn on the dense baseline, with the per-layer reconstruction
report (report.csv) and its totals (metrics.json)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from basisn.atomic import atomic_directory, atomic_write_json
from basisn.basis import to_basisn
from basisn.checkpoints import save_model
from basisn.stages.common import load_stage_model, one_line_errors, parser, prepare, report_totals


@one_line_errors
def main(argv: list[str]) -> int:
    """`decompose` stage: to_basisn on the baseline, with the per-layer reconstruction report."""
    arguments = parser("decompose", "decompose the baseline onto one global basis", "outputs/decompose")
    arguments.add_argument("--dense", default="outputs/train/model.pt", help="dense baseline (the train stage's model)")
    args = arguments.parse_args(argv)
    p, lock = prepare(args, data=False, layer_names=True)
    model, meta = load_stage_model(Path(args.dense), "train", basis_mapped=False)
    with lock:
        return _decompose(p, args, model, meta)


def _decompose(p: dict, args: argparse.Namespace, model: torch.nn.Module, meta: dict) -> int:
    torch.manual_seed(p["seed"])
    dense_params = sum(param.numel() for param in model.parameters())
    started = time.perf_counter()
    model, report = to_basisn(model, **p["decompose"], seed=p["seed"])
    seconds = time.perf_counter() - started
    table = pd.DataFrame(report)
    summary = dict(
        profile=p["profile"],
        layers=len(table),
        **report_totals(table),
        rel_error_unquantized_mean=float(table["rel_error_unquantized"].mean()),
        weights=int(table["weights"].sum()),
        dense_parameters=int(dense_params),
        decompose_seconds=seconds,
        **{f"decompose_{k}": v for k, v in p["decompose"].items() if k != "exclude"},
    )
    with atomic_directory(Path(args.out)) as out:
        save_model(model, out / "model.pt", dict(meta, decompose=p["decompose"]))
        table.assign(weight_shape=table["weight_shape"].map(lambda s: "x".join(map(str, s)))).to_csv(
            out / "report.csv", index=False
        )
        atomic_write_json(out / "metrics.json", summary)
    print(
        f"decompose: {len(table)} layers onto {p['decompose']['n_basis']} basis vectors, relative error "
        f"{summary['rel_error_mean']:.3f} (mean over layers) in {seconds:.1f}s -> {args.out}"
    )
    for note in report.notes():  # layers to_basisn could not map (e.g. an Embedding), each with its reason
        print(f"decompose: {note}")
    return 0
