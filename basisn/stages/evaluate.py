"""`evaluate` stage (`basisn evaluate`): accuracy of the dense baseline, the decomposed model before fine-tuning and
BasisN after it (overall and per class), plain-data tables of the learned basis and coefficients, and the layer
shapes of the BasisN model for the cost model (model_shapes.json, read by the hardware stage)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from basisn.atomic import atomic_directory, atomic_write_json
from basisn.basis import to_dense
from basisn.stages.common import load_stage_model, loaders, one_line_errors, parser, prepare


@one_line_errors
def main(argv: list[str]) -> int:
    """`evaluate` stage: dense vs decomposed-before-fine-tune vs BasisN accuracy, per class too."""
    arguments = parser("evaluate", "accuracy of dense, decomposed and fine-tuned BasisN models", "outputs/evaluate")
    arguments.add_argument("--dense", default="outputs/train/model.pt", help="dense baseline (the train stage's model)")
    arguments.add_argument(
        "--decomposed", default="outputs/decompose/model.pt", help="BasisN model before fine-tuning (decompose stage)"
    )
    arguments.add_argument(
        "--basisn", default="outputs/finetune/model.pt", help="fine-tuned BasisN model (finetune stage)"
    )
    args = arguments.parse_args(argv)
    p, lock = prepare(args)
    models = {
        "dense": load_stage_model(Path(args.dense), "train", basis_mapped=False)[0],
        "decomposed": load_stage_model(Path(args.decomposed), "decompose", basis_mapped=True)[0],
        "basisn": load_stage_model(Path(args.basisn), "finetune", basis_mapped=True)[0],
    }
    with lock:
        return _evaluate(p, args, models)


def _evaluate(p: dict, args: argparse.Namespace, models: dict[str, torch.nn.Module]) -> int:
    from basisn.hardware import layer_shapes, save_shapes
    from basisn.train import evaluate

    models["basisn_folded"] = to_dense(models["basisn"])  # what a deployment runs: must score the same
    data = loaders(p, augment=False)
    results = {name: evaluate(model, data.test, data.num_classes) for name, model in models.items()}
    summary = {f"{name}_accuracy": r["accuracy"] for name, r in results.items()}
    summary.update(
        profile=p["profile"],
        test_samples=results["dense"]["count"],
        basisn_minus_dense_pp=100 * (results["basisn"]["accuracy"] - results["dense"]["accuracy"]),
        decomposed_minus_dense_pp=100 * (results["decomposed"]["accuracy"] - results["dense"]["accuracy"]),
        n_basis=p["decompose"]["n_basis"],
        coef_bits=p["decompose"]["coef_bits"],
    )
    per_class = pd.DataFrame(
        {"class": data.class_names} | {name: results[name]["per_class"] for name in ("dense", "decomposed", "basisn")}
    )
    with atomic_directory(Path(args.out)) as out:
        atomic_write_json(out / "metrics.json", summary)
        per_class.to_csv(out / "per_class.csv", index=False)
        basis_tables(models["decomposed"], models["basisn"], out)
        size = tuple(data.input_size)
        save_shapes(layer_shapes(models["basisn"], (1, data.in_channels, *size)), out / "model_shapes.json")
    print(
        "evaluate: accuracy dense {dense_accuracy:.4f}, decomposed {decomposed_accuracy:.4f}, "
        "BasisN {basisn_accuracy:.4f} ({basisn_minus_dense_pp:+.2f} pp)".format(**summary)
    )
    return 0


def basis_tables(decomposed: torch.nn.Module, finetuned: torch.nn.Module, out: Path) -> None:
    """Plain-data views of the learned basis and coefficients, for notebooks (which never load checkpoints).

    basis.csv: stage, vector, position, value (the quantized basis Q_b(B), n x m).
    coefficients.csv: stage, layer, value, count: the quantized coefficients Q_c(A) of the segments' active basis
    vectors, each divided by its output channel's largest magnitude, so the at most 2^coef_bits quantizer levels
    line up across channels (uniform: k / (2^(bits-1) - 1); pow2: ±2^-j).
    """
    basis_rows, coef_rows = [], []
    with torch.no_grad():
        for stage, model in (("decomposed", decomposed), ("finetuned", finetuned)):
            basis_rows.append(_basis_rows(stage, model.basisn_bank.quantized().cpu()))
            coef_rows += _coefficient_rows(stage, model)
    pd.concat(basis_rows).to_csv(out / "basis.csv", index=False)
    pd.concat(coef_rows).to_csv(out / "coefficients.csv", index=False)


def _basis_rows(stage: str, basis: torch.Tensor) -> pd.DataFrame:
    vectors, positions = torch.meshgrid(torch.arange(basis.shape[0]), torch.arange(basis.shape[1]), indexing="ij")
    return pd.DataFrame(
        dict(
            stage=stage,
            vector=vectors.flatten().numpy(),
            position=positions.flatten().numpy(),
            value=basis.flatten().numpy(),
        )
    )


def _coefficient_rows(stage: str, model: torch.nn.Module) -> list[pd.DataFrame]:
    from basisn.layers import basis_layers

    rows = []
    for name, layer in basis_layers(model):
        coefs = layer.quantized_coefficients().cpu()
        channel_max = coefs.abs().amax(dim=(1, 2), keepdim=True)
        coefs = torch.where(channel_max > 0, coefs / channel_max.clamp_min(1e-30), coefs)
        if layer.segment_group is not None:  # keep only the coefficients a segment may use
            group_of_vector = torch.arange(coefs.shape[-1]) // layer.bank.group_size
            group = layer.segment_group[:, :, None]  # -1: not assigned yet, every vector may be used
            coefs = coefs[(group_of_vector[None, None, :] == group) | (group < 0)]
        values, counts = torch.unique(coefs.flatten().round(decimals=6), return_counts=True)
        rows.append(pd.DataFrame(dict(stage=stage, layer=name, value=values.numpy(), count=counts.numpy())))
    return rows
