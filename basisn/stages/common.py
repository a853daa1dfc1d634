"""What the stages share: the command line, one-line input errors, the checks made before any work, model files,
data loaders and training configurations.

Each stage reads params.yaml (validated in full before any work, basisn.params), checks everything else it can
without working (--out writable and not held by another run, dataset files, model files), reads the previous
stage's files, and writes its own output directory atomically: everything goes to a temporary sibling directory
that replaces the old one only when the stage has finished, so a failed or interrupted run never leaves
half-written results over good ones (dvc.yaml marks these outputs `persist: true`, so `dvc repro` does not delete
them before the stage runs). Any input problem is one `basisn: ...` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from basisn import params as params_module
from basisn.atomic import OutputError, check_writable, output_lock
from basisn.checkpoints import ModelFileError, load_model
from basisn.data import DataError
from basisn.params import ParamsError

CHECKPOINT_ROOT = Path("checkpoints")


def parser(stage: str, description: str, out: str) -> argparse.ArgumentParser:
    """The options every stage takes: --params, --profile, --out."""
    result = argparse.ArgumentParser(prog=f"basisn {stage}", description=description)
    result.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    result.add_argument("--profile", default=None, help="profile to use (default: `profile:` in the params file)")
    result.add_argument("--out", default=out, help=f"output directory (default: {out})")
    return result


class StageError(ValueError):
    """A stage input that is missing or unusable (one line, found before any work)."""


ONE_LINE_ERRORS = (ParamsError, OutputError, ModelFileError, DataError, StageError)


def one_line_errors(main: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
    """A stage entry point whose input errors are one `basisn: ...` line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapped(argv: list[str]) -> int:
        try:
            return main(argv)
        except ONE_LINE_ERRORS as error:
            print(f"basisn: {error}", file=sys.stderr)
            return 2

    return wrapped


def prepare(
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


def require(path: Path, stage: str) -> Path:
    """`path`, which the `stage` stage writes; one line naming the stage to run when it is missing."""
    if not path.is_file():
        raise StageError(f"{path} not found; run the {stage} stage first (`dvc repro {stage}`)")
    return path


def load_stage_model(path: Path, stage: str, basis_mapped: bool | None = None) -> tuple[torch.nn.Module, dict]:
    """load_model with its checks (ModelFileError names the file); basis_mapped: the kind the stage needs."""
    model, meta = load_model(require(path, stage))
    if basis_mapped is not None and hasattr(model, "basisn_bank") != basis_mapped:
        kind = "a BasisN (basis-mapped)" if basis_mapped else "a dense"
        raise StageError(f"{path}: is not {kind} model file, which the {stage} stage writes")
    return model, meta


def loaders(p: dict, rank: int = 0, world_size: int = 1, augment: bool | None = None, subset: object = "params"):
    """build_loaders from the params' `data:` block (`subset`/`augment` override it for one stage)."""
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


def train_config(p: dict, block: str, **overrides):
    """The TrainConfig of a `train:`-like block of the params (with the params' seed)."""
    from basisn.train import TrainConfig

    return TrainConfig(**dict(p[block], seed=p["seed"], **overrides))


def history_csv(metrics: dict, path: Path) -> None:
    """fit()'s per-epoch history as a CSV, for plots."""
    history = metrics.get("history") or []
    if history:
        pd.DataFrame(history).to_csv(path, index=False)


def scalar_summary(metrics: dict) -> dict:
    """The scalar part of fit()'s metrics (the history goes to a CSV for plots)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None}


def report_totals(table: pd.DataFrame) -> dict:
    """Mean and weight-weighted relative error and the coefficient count of a `to_basisn` report."""
    return dict(
        rel_error_mean=float(table["rel_error"].mean()),
        rel_error_weighted=float((table["rel_error"] * table["weights"]).sum() / table["weights"].sum()),
        coefficients=int(table["coefficients"].sum()),
    )
