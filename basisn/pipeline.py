"""The pipeline stages that dvc.yaml runs: data -> train -> decompose -> finetune -> evaluate (+ sweep).

Each stage reads params.yaml (validated in full before any work), reads the previous stage's files, and writes its
own output directory atomically: everything goes to a temporary sibling directory that replaces the old one only
when the stage has finished, so a failed or interrupted run never leaves half-written results over good ones.
Training stages checkpoint every epoch under `checkpoints/<stage>-<hash of their params>/` and resume from there
when rerun with the same params (`dvc repro` after a kill picks up where it stopped).

Run one stage by hand: `basisn train --params params.yaml --out outputs/train`; multi-GPU:
`torchrun --nproc_per_node=4 -m basisn.cli train --params params.yaml --out outputs/train`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from basisn import params as params_module
from basisn.atomic import atomic_directory, atomic_write_json
from basisn.basis import to_basisn, to_dense
from basisn.checkpoints import load_model, save_model
from basisn.params import ParamsError

CHECKPOINT_ROOT = Path("checkpoints")


# --------------------------------------------------------------------------------------------------------------
# Plumbing shared by the stages.
# --------------------------------------------------------------------------------------------------------------
def _parser(stage: str, description: str, out: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"basisn {stage}", description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--profile", default=None, help="profile to use (default: `profile:` in the params file)")
    parser.add_argument("--out", default=out, help=f"output directory (default: {out})")
    return parser


def _load_params(args: argparse.Namespace) -> dict | None:
    try:
        return params_module.load(args.params, args.profile)
    except ParamsError as error:
        print(f"basisn: {error}", file=sys.stderr)
        return None


def _require(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise SystemExit(f"basisn: {path} not found; run the {stage} stage first (`dvc repro {stage}`)")
    return path


def _loaders(p: dict, rank: int = 0, world_size: int = 1, augment: bool | None = None, subset: object = "params"):
    from basisn.data import build_loaders

    data = p["data"]
    return build_loaders(
        data["dataset"],
        data["root"],
        data["batch_size"],
        seed=p["seed"],
        workers=data["workers"],
        subset=data["subset"] if subset == "params" else subset,
        test_subset=data["test_subset"],
        augment=data["augment"] if augment is None else augment,
        rank=rank,
        world_size=world_size,
        test_batch_size=data["eval_batch_size"],
    )


def _train_config(p: dict, block: str, **overrides):
    from basisn.train import TrainConfig

    values = dict(p[block], seed=p["seed"], **overrides)
    return TrainConfig(**values)


def _history_csv(metrics: dict, path: Path) -> None:
    history = metrics.get("history") or []
    if history:
        pd.DataFrame(history).to_csv(path, index=False)


def _summary(metrics: dict) -> dict:
    """The scalar part of fit()'s metrics (the history goes to a CSV for plots)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None}


# --------------------------------------------------------------------------------------------------------------
# Stages.
# --------------------------------------------------------------------------------------------------------------
def data_main(argv: list[str]) -> int:
    """`data` stage: verify the raw files against their pinned hashes and describe the dataset."""
    parser = _parser("data-check", "verify data/raw and write a dataset summary", "outputs/data")
    args = parser.parse_args(argv)
    p = _load_params(args)
    if p is None:
        return 2
    loaders = _loaders(p, augment=False)
    train_labels = torch.cat([labels for _, labels in loaders.train])
    test_labels = torch.cat([labels for _, labels in loaders.test])
    summary = dict(
        dataset=p["data"]["dataset"],
        profile=p["profile"],
        train_samples=len(train_labels),
        test_samples=len(test_labels),
        num_classes=loaders.num_classes,
        in_channels=loaders.in_channels,
        input_size=list(loaders.input_size),
        class_names=loaders.class_names,
        train_per_class=torch.bincount(train_labels, minlength=loaders.num_classes).tolist(),
        test_per_class=torch.bincount(test_labels, minlength=loaders.num_classes).tolist(),
    )
    with atomic_directory(Path(args.out)) as out:
        atomic_write_json(out / "summary.json", summary)
    print(f"data: {summary['dataset']} {summary['train_samples']} train / {summary['test_samples']} test images")
    return 0


def _fit_stage(p: dict, args: argparse.Namespace, stage: str) -> int:
    """train (dense baseline) and finetune (BasisN, distilled from the baseline) share this."""
    from basisn.models import build_model
    from basisn.train import cleanup_distributed, fit, init_distributed, seed_everything

    rank, world_size, _, device = init_distributed()
    try:
        loaders = _loaders(p, rank, world_size)
        seed_everything(p["seed"])
        meta = dict(
            model=p["model"]["name"],
            num_classes=loaders.num_classes,
            in_channels=loaders.in_channels,
            input_size=list(loaders.input_size),
            dataset=p["data"]["dataset"],
            profile=p["profile"],
        )
        teacher = None
        if stage == "train":
            model = build_model(meta["model"], meta["num_classes"], meta["in_channels"])
            config = _train_config(p, "train")
            fingerprint_of = (p["data"], p["model"], p["train"], p["seed"])
        else:
            model, _ = load_model(_require(Path(args.decomposed), "decompose"))
            teacher, _ = load_model(_require(Path(args.teacher), "train"))
            config = _train_config(p, "finetune")
            fingerprint_of = (p["data"], p["model"], p["decompose"], p["finetune"], p["seed"], p["train"])
        checkpoints = CHECKPOINT_ROOT / f"{stage}-{params_module.fingerprint(*fingerprint_of)}"
        started = time.perf_counter()
        metrics = fit(model, loaders.train, loaders.test, config, checkpoints, teacher=teacher, device=device)
        with atomic_directory(Path(args.out), enabled=rank == 0) as out:
            save_model(model.cpu(), out / "model.pt", meta)
            summary = dict(_summary(metrics), profile=p["profile"], stage_seconds=time.perf_counter() - started)
            atomic_write_json(out / "metrics.json", summary)
            _history_csv(metrics, out / "history.csv")
            atomic_write_json(out / "params.json", p)
        if rank == 0:
            print(f"{stage}: test accuracy {summary.get('test_accuracy', float('nan')):.4f} -> {args.out}")
        return 0
    finally:
        cleanup_distributed()


def train_main(argv: list[str]) -> int:
    """`train` stage: the dense baseline."""
    args = _parser("train", "train the dense baseline", "outputs/train").parse_args(argv)
    p = _load_params(args)
    return 2 if p is None else _fit_stage(p, args, "train")


def finetune_main(argv: list[str]) -> int:
    """`finetune` stage: coefficients, basis and BN with quantization in the loop, distilled from the baseline."""
    parser = _parser("finetune", "fine-tune the decomposed BasisN model", "outputs/finetune")
    parser.add_argument("--decomposed", default="outputs/decompose/model.pt")
    parser.add_argument("--teacher", default="outputs/train/model.pt")
    args = parser.parse_args(argv)
    p = _load_params(args)
    return 2 if p is None else _fit_stage(p, args, "finetune")


def _report_totals(table: pd.DataFrame) -> dict:
    """Mean and weight-weighted relative error and the coefficient count of a `to_basisn` report."""
    return dict(
        rel_error_mean=float(table["rel_error"].mean()),
        rel_error_weighted=float((table["rel_error"] * table["weights"]).sum() / table["weights"].sum()),
        coefficients=int(table["coefficients"].sum()),
    )


def decompose_main(argv: list[str]) -> int:
    """`decompose` stage: to_basisn on the baseline, with the per-layer reconstruction report."""
    parser = _parser("decompose", "decompose the baseline onto one global basis", "outputs/decompose")
    parser.add_argument("--dense", default="outputs/train/model.pt")
    args = parser.parse_args(argv)
    p = _load_params(args)
    if p is None:
        return 2
    torch.manual_seed(p["seed"])
    model, meta = load_model(_require(Path(args.dense), "train"))
    dense_params = sum(param.numel() for param in model.parameters())
    started = time.perf_counter()
    model, report = to_basisn(model, **p["decompose"], seed=p["seed"])
    seconds = time.perf_counter() - started
    table = pd.DataFrame(report)
    summary = dict(
        profile=p["profile"],
        layers=len(table),
        **_report_totals(table),
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
    return 0


def evaluate_main(argv: list[str]) -> int:
    """`evaluate` stage: dense vs decomposed-before-fine-tune vs BasisN accuracy, per class too."""
    from basisn.hardware import layer_shapes, save_shapes
    from basisn.train import evaluate

    parser = _parser("evaluate", "accuracy of dense, decomposed and fine-tuned BasisN models", "outputs/evaluate")
    parser.add_argument("--dense", default="outputs/train/model.pt")
    parser.add_argument("--decomposed", default="outputs/decompose/model.pt")
    parser.add_argument("--basisn", default="outputs/finetune/model.pt")
    args = parser.parse_args(argv)
    p = _load_params(args)
    if p is None:
        return 2
    models = {
        "dense": load_model(_require(Path(args.dense), "train"))[0],
        "decomposed": load_model(_require(Path(args.decomposed), "decompose"))[0],
        "basisn": load_model(_require(Path(args.basisn), "finetune"))[0],
    }
    models["basisn_folded"] = to_dense(models["basisn"])  # what a deployment runs: must score the same
    loaders = _loaders(p, augment=False)
    results = {name: evaluate(model, loaders.test, loaders.num_classes) for name, model in models.items()}
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
        {"class": loaders.class_names}
        | {name: results[name]["per_class"] for name in ("dense", "decomposed", "basisn")}
    )
    with atomic_directory(Path(args.out)) as out:
        atomic_write_json(out / "metrics.json", summary)
        per_class.to_csv(out / "per_class.csv", index=False)
        basis_tables(models["decomposed"], models["basisn"], out)
        size = tuple(loaders.input_size)
        save_shapes(layer_shapes(models["basisn"], (1, loaders.in_channels, *size)), out / "model_shapes.json")
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
    from basisn.layers import basis_layers

    basis_rows, coef_rows = [], []
    with torch.no_grad():
        for stage, model in (("decomposed", decomposed), ("finetuned", finetuned)):
            basis = model.basisn_bank.quantized().cpu()
            vectors, positions = torch.meshgrid(
                torch.arange(basis.shape[0]), torch.arange(basis.shape[1]), indexing="ij"
            )
            basis_rows.append(
                pd.DataFrame(
                    dict(
                        stage=stage,
                        vector=vectors.flatten().numpy(),
                        position=positions.flatten().numpy(),
                        value=basis.flatten().numpy(),
                    )
                )
            )
            for name, layer in basis_layers(model):
                coefs = layer.quantized_coefficients().cpu()
                channel_max = coefs.abs().amax(dim=(1, 2), keepdim=True)
                coefs = torch.where(channel_max > 0, coefs / channel_max.clamp_min(1e-30), coefs)
                if layer.segment_group is not None:  # keep only the coefficients a segment may use
                    group_of_vector = torch.arange(coefs.shape[-1]) // layer.bank.group_size
                    coefs = coefs[group_of_vector[None, None, :] == layer.segment_group[:, :, None]]
                values, counts = torch.unique(coefs.flatten().round(decimals=6), return_counts=True)
                coef_rows.append(
                    pd.DataFrame(dict(stage=stage, layer=name, value=values.numpy(), count=counts.numpy()))
                )
    pd.concat(basis_rows).to_csv(out / "basis.csv", index=False)
    pd.concat(coef_rows).to_csv(out / "coefficients.csv", index=False)


def sweep_main(argv: list[str]) -> int:
    """`sweep` stage: n_basis x coef_bits, decomposed from the baseline, optionally briefly fine-tuned."""
    from basisn.train import evaluate, fit

    parser = _parser("sweep", "accuracy and reconstruction error over n_basis x coef_bits", "outputs/sweep")
    parser.add_argument("--dense", default="outputs/train/model.pt")
    args = parser.parse_args(argv)
    p = _load_params(args)
    if p is None:
        return 2
    sweep = p["sweep"]
    for n_basis in sweep["n_basis"]:
        if n_basis > p["decompose"]["segment_len"] or n_basis % p["decompose"]["groups"]:
            print(f"basisn: params: sweep.n_basis value {n_basis} is not allowed with decompose", file=sys.stderr)
            return 2
    dense, _ = load_model(_require(Path(args.dense), "train"))
    loaders = _loaders(p, subset=sweep["finetune_subset"])
    rows = []
    grid = [(n, b) for n in sweep["n_basis"] for b in sweep["coef_bits"]]
    with atomic_directory(Path(args.out)) as out:
        for index, (n_basis, coef_bits) in enumerate(grid, 1):
            settings = dict(p["decompose"], n_basis=n_basis, coef_bits=coef_bits)
            model, report = to_basisn(copy.deepcopy(dense), **settings, seed=p["seed"])
            row = dict(
                n_basis=n_basis,
                coef_bits=coef_bits,
                **_report_totals(pd.DataFrame(report)),
                decomposed_accuracy=evaluate(model, loaders.test, loaders.num_classes)["accuracy"],
            )
            if sweep["finetune_epochs"]:
                config = _train_config(p, "finetune", epochs=sweep["finetune_epochs"])
                with tempfile.TemporaryDirectory() as scratch:  # fit scores the test set after its last epoch
                    row["finetuned_accuracy"] = fit(
                        model, loaders.train, loaders.test, config, Path(scratch), teacher=dense
                    )["test_accuracy"]
            rows.append(row)
            print(f"sweep {index}/{len(grid)}: {row}", flush=True)
        pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
        atomic_write_json(out / "params.json", dict(sweep=sweep, decompose=p["decompose"], profile=p["profile"]))
    return 0
