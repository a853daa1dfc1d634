"""The pipeline stages that dvc.yaml runs: data -> train -> decompose -> finetune -> evaluate (+ sweep).

Each stage reads params.yaml (validated in full before any work), checks everything else it can without working
(--out writable and not held by another run, dataset files, model files), reads the previous stage's files, and
writes its own output directory atomically: everything goes to a temporary sibling directory that replaces the old
one only when the stage has finished, so a failed or interrupted run never leaves half-written results over good
ones (dvc.yaml marks these outputs `persist: true`, so `dvc repro` does not delete them before the stage runs).
Any input problem is one `basisn: ...` line on stderr and exit code 2.
Training stages checkpoint every epoch under `checkpoints/<stage>-<hash of their params>/` and resume from there
when rerun with the same params (`dvc repro` after a kill picks up where it stopped).

Run one stage by hand: `basisn train --params params.yaml --out outputs/train`; multi-GPU:
`torchrun --nproc_per_node=4 -m basisn.cli train --params params.yaml --out outputs/train`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from basisn import params as params_module
from basisn.atomic import OutputError, atomic_directory, atomic_write_json, check_writable, output_lock
from basisn.basis import to_basisn, to_dense
from basisn.checkpoints import ModelFileError, load_model, save_model
from basisn.data import DataError
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


class StageError(ValueError):
    """A stage input that is missing or unusable (one line, found before any work)."""


ONE_LINE_ERRORS = (ParamsError, OutputError, ModelFileError, DataError, StageError)


def _one_line_errors(main):
    """A stage entry point whose input errors are one `basisn: ...` line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> int:
        try:
            return main(argv)
        except ONE_LINE_ERRORS as error:
            print(f"basisn: {error}", file=sys.stderr)
            return 2

    return wrapped


def _prepare(
    args: argparse.Namespace, *, data: bool = True, layer_names: bool = False
) -> tuple[dict, contextlib.AbstractContextManager]:
    """Every check that needs no work, in one place, before any model is trained or any batch is built.

    Returns the params and the one-writer lock of `--out` (held for the stage's whole run, rank 0 only:
    a second run writing the same directory stops at once with a line naming the first).
    """
    p = params_module.load(args.params, args.profile)
    if layer_names:
        params_module.check_layer_names(p)
    if data:
        from basisn.data import check_dataset_files

        check_dataset_files(p["data"]["dataset"], p["data"]["root"])
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: only rank 0 writes
        return p, contextlib.nullcontext(Path(args.out))
    check_writable(Path(args.out))
    return p, output_lock(Path(args.out))


def _require(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise StageError(f"{path} not found; run the {stage} stage first (`dvc repro {stage}`)")
    return path


def _load(path: Path, stage: str, basis_mapped: bool | None = None) -> tuple[torch.nn.Module, dict]:
    """load_model with its checks (ModelFileError names the file); basis_mapped: the kind the stage needs."""
    model, meta = load_model(_require(path, stage))
    if basis_mapped is not None and hasattr(model, "basisn_bank") != basis_mapped:
        kind = "a BasisN (basis-mapped)" if basis_mapped else "a dense"
        raise StageError(f"{path}: is not {kind} model file, which the {stage} stage writes")
    return model, meta


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
@_one_line_errors
def data_main(argv: list[str]) -> int:
    """`data` stage: verify the raw files against their pinned hashes and describe the dataset."""
    parser = _parser("data-check", "verify data/raw and write a dataset summary", "outputs/data")
    args = parser.parse_args(argv)
    p, lock = _prepare(args)
    with lock:
        return _data_stage(p, args)


def _data_stage(p: dict, args: argparse.Namespace) -> int:
    loaders = _loaders(p, augment=False)
    train_labels, test_labels = loaders.train.sample_labels(), loaders.test.sample_labels()
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


def _fit_stage(p: dict, args: argparse.Namespace, stage: str) -> int:
    """train (dense baseline) and finetune (BasisN, distilled from the baseline) share this."""
    from basisn.models import build_model
    from basisn.train import cleanup_distributed, fit, init_distributed, seed_everything

    teacher = model = None
    if stage == "finetune":  # model files first: a bad one is one line before any data is loaded
        model, _ = _load(Path(args.decomposed), "decompose", basis_mapped=True)
        teacher, _ = _load(Path(args.teacher), "train", basis_mapped=False)
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
        if stage == "train":
            model = build_model(meta["model"], meta["num_classes"], meta["in_channels"])
            config = _train_config(p, "train")
            fingerprint_of = (p["data"], p["model"], p["train"], p["seed"])
        else:
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


@_one_line_errors
def train_main(argv: list[str]) -> int:
    """`train` stage: the dense baseline."""
    args = _parser("train", "train the dense baseline", "outputs/train").parse_args(argv)
    p, lock = _prepare(args)
    with lock:
        return _fit_stage(p, args, "train")


@_one_line_errors
def finetune_main(argv: list[str]) -> int:
    """`finetune` stage: coefficients, basis and BN with quantization in the loop, distilled from the baseline."""
    parser = _parser("finetune", "fine-tune the decomposed BasisN model", "outputs/finetune")
    parser.add_argument("--decomposed", default="outputs/decompose/model.pt")
    parser.add_argument("--teacher", default="outputs/train/model.pt")
    args = parser.parse_args(argv)
    p, lock = _prepare(args)
    with lock:
        return _fit_stage(p, args, "finetune")


def _report_totals(table: pd.DataFrame) -> dict:
    """Mean and weight-weighted relative error and the coefficient count of a `to_basisn` report."""
    return dict(
        rel_error_mean=float(table["rel_error"].mean()),
        rel_error_weighted=float((table["rel_error"] * table["weights"]).sum() / table["weights"].sum()),
        coefficients=int(table["coefficients"].sum()),
    )


@_one_line_errors
def decompose_main(argv: list[str]) -> int:
    """`decompose` stage: to_basisn on the baseline, with the per-layer reconstruction report."""
    parser = _parser("decompose", "decompose the baseline onto one global basis", "outputs/decompose")
    parser.add_argument("--dense", default="outputs/train/model.pt")
    args = parser.parse_args(argv)
    p, lock = _prepare(args, data=False, layer_names=True)
    model, meta = _load(Path(args.dense), "train", basis_mapped=False)
    with lock:
        return _decompose_stage(p, args, model, meta)


def _decompose_stage(p: dict, args: argparse.Namespace, model: torch.nn.Module, meta: dict) -> int:
    torch.manual_seed(p["seed"])
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
    for note in report.notes():  # layers to_basisn could not map (e.g. an Embedding), each with its reason
        print(f"decompose: {note}")
    return 0


@_one_line_errors
def evaluate_main(argv: list[str]) -> int:
    """`evaluate` stage: dense vs decomposed-before-fine-tune vs BasisN accuracy, per class too."""
    parser = _parser("evaluate", "accuracy of dense, decomposed and fine-tuned BasisN models", "outputs/evaluate")
    parser.add_argument("--dense", default="outputs/train/model.pt")
    parser.add_argument("--decomposed", default="outputs/decompose/model.pt")
    parser.add_argument("--basisn", default="outputs/finetune/model.pt")
    args = parser.parse_args(argv)
    p, lock = _prepare(args)
    models = {
        "dense": _load(Path(args.dense), "train", basis_mapped=False)[0],
        "decomposed": _load(Path(args.decomposed), "decompose", basis_mapped=True)[0],
        "basisn": _load(Path(args.basisn), "finetune", basis_mapped=True)[0],
    }
    with lock:
        return _evaluate_stage(p, args, models)


def _evaluate_stage(p: dict, args: argparse.Namespace, models: dict[str, torch.nn.Module]) -> int:
    from basisn.hardware import layer_shapes, save_shapes
    from basisn.train import evaluate

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
                    group = layer.segment_group[:, :, None]  # -1: not assigned yet, every vector may be used
                    coefs = coefs[(group_of_vector[None, None, :] == group) | (group < 0)]
                values, counts = torch.unique(coefs.flatten().round(decimals=6), return_counts=True)
                coef_rows.append(
                    pd.DataFrame(dict(stage=stage, layer=name, value=values.numpy(), count=counts.numpy()))
                )
    pd.concat(basis_rows).to_csv(out / "basis.csv", index=False)
    pd.concat(coef_rows).to_csv(out / "coefficients.csv", index=False)


@_one_line_errors
def sweep_main(argv: list[str]) -> int:
    """`sweep` stage: n_basis x coef_bits, decomposed from the baseline, optionally briefly fine-tuned."""
    parser = _parser("sweep", "accuracy and reconstruction error over n_basis x coef_bits", "outputs/sweep")
    parser.add_argument("--dense", default="outputs/train/model.pt")
    args = parser.parse_args(argv)
    p, lock = _prepare(args, layer_names=True)  # sweep.n_basis against decompose: in params.resolve
    dense, _ = _load(Path(args.dense), "train", basis_mapped=False)
    with lock:
        return _sweep_stage(p, args, dense)


def _sweep_stage(p: dict, args: argparse.Namespace, dense: torch.nn.Module) -> int:
    from basisn.train import evaluate, fit

    sweep = p["sweep"]
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
