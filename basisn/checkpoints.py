"""Model files the pipeline stages hand to each other: a dense baseline or a BasisN model, plus what built it.

Both formats carry `meta` (model name, num_classes, in_channels, input_size, dataset, ...) so that any later
stage, notebook or user can rebuild the architecture with `basisn.models.build_model` and load the weights with
`torch.load(..., weights_only=True)` (a checkpoint can never run code).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from basisn.atomic import atomic_torch_save
from basisn.basis import CHECKPOINT_FORMAT, load_basisn, save_basisn
from basisn.packing import PACKED_FORMAT, unpack_checkpoint

DENSE_FORMAT = "basisn-dense/1"
META_KEYS = ("model", "num_classes", "in_channels", "input_size", "dataset")


def _check_meta(meta: dict) -> None:
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise ValueError(f"model meta lacks {', '.join(missing)}; required keys: {', '.join(META_KEYS)}")


def save_model(model: nn.Module, path: str | os.PathLike, meta: dict) -> None:
    """Save a dense or basis-mapped model with its meta (plain data), atomically.

    A basis-mapped model keeps its float latent coefficients (save_basisn's pack=False): the stages hand models to
    each other to train further (decompose -> finetune), and a float file keeps every stage's results as they were.
    """
    _check_meta(meta)
    if hasattr(model, "basisn_bank"):
        save_basisn(model, path, extra={"meta": dict(meta)}, pack=False)
    else:
        atomic_torch_save({"format": DENSE_FORMAT, "meta": dict(meta), "state_dict": model.state_dict()}, path)


class ModelFileError(ValueError):
    """A model file that is unreadable, not a basisn model file, inconsistent with its meta, or not finite."""


MAX_CLASSES = 100_000  # far above ImageNet's 1000; a tampered meta must not make build_model allocate gigabytes


def _read_checkpoint(path: str | os.PathLike, map_location: str | torch.device) -> tuple[dict, str, dict]:
    """(checkpoint, format, meta), or ModelFileError: one line that names the file."""
    expected = f"{DENSE_FORMAT}, {CHECKPOINT_FORMAT} or {PACKED_FORMAT}"
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - garbage, truncated or tampered files fail in many ways
        # torch's own message may suggest weights_only=False, which would let the file run code: not repeated
        raise ModelFileError(
            f"{path}: not a basisn model file (unreadable as a weights-only torch file: {type(error).__name__}); "
            f"expected a file written by a basisn stage ({expected})"
        ) from None
    fmt = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if fmt not in (DENSE_FORMAT, CHECKPOINT_FORMAT, PACKED_FORMAT):
        raise ModelFileError(f"{path}: not a basisn model file (format {fmt!r}; expected {expected})")
    if fmt == PACKED_FORMAT:  # save_basisn's default: decoded here so that every check sees the full tensors
        try:
            checkpoint = unpack_checkpoint(checkpoint)
        except ValueError as error:
            raise ModelFileError(f"{path}: {error}") from None
    meta = checkpoint.get("meta") if fmt == DENSE_FORMAT else (checkpoint.get("extra") or {}).get("meta")
    state = checkpoint.get("state_dict")
    if not isinstance(meta, dict) or not isinstance(state, dict):
        raise ModelFileError(f"{path}: not a basisn model file (no meta or state_dict); expected {expected}")
    return checkpoint, fmt, meta


def _check_meta_values(path: str | os.PathLike, meta: dict) -> None:
    from basisn.models import MODELS

    try:
        _check_meta(meta)
    except ValueError as error:
        raise ModelFileError(f"{path}: {error}") from None
    if meta["model"] not in MODELS:
        raise ModelFileError(f"{path}: meta model={meta['model']!r} is unknown; allowed: {', '.join(MODELS)}")
    for key, high in (("num_classes", MAX_CLASSES), ("in_channels", 4)):
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ModelFileError(f"{path}: meta {key}={value!r} is not allowed; allowed: an integer in [1, {high}]")


def _check_against_architecture(path: str | os.PathLike, meta: dict, fmt: str, state: dict) -> None:
    """Compare the file's tensors with the architecture its meta names, built on the meta device (no memory)."""
    from basisn.models import build_model

    with torch.device("meta"):
        reference = build_model(meta["model"], meta["num_classes"], meta["in_channels"]).state_dict()
    what = f"architecture {meta['model']} (num_classes={meta['num_classes']}, in_channels={meta['in_channels']})"
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise ModelFileError(f"{path}: state_dict entry {key!r} is not a tensor; not a basisn model file")
        if key in reference and tuple(tensor.shape) != tuple(reference[key].shape):
            raise ModelFileError(
                f"{path}: {key} has shape {tuple(tensor.shape)} but the {what} named in its meta needs "
                f"{tuple(reference[key].shape)}; the file and its meta disagree"
            )
        if key.endswith(".coef") and f"{key[:-5]}.weight" in reference:  # a mapped layer: out channels first
            out = reference[f"{key[:-5]}.weight"].shape[0]
            if tensor.ndim == 0 or tensor.shape[0] != out:
                raise ModelFileError(
                    f"{path}: {key} has shape {tuple(tensor.shape)} but the {what} named in its meta has {out} "
                    f"output channels there; the file and its meta disagree"
                )
    converted = {key[: -len("coef")] + "weight" for key in state if key.endswith(".coef")}
    missing = [key for key in reference if key not in state and key not in converted]
    unexpected = [k for k in state if k not in reference and not k.endswith((".coef", ".scale"))]
    unexpected = [k for k in unexpected if not k.startswith("basisn_bank.") and not k.endswith("segment_group")]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelFileError(f"{path}: its tensors do not fit the {what} named in its meta ({detail})")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelFileError(
                f"{path}: {key} holds {bad} NaN/Inf values; not a usable model (retrain it or restore the file)"
            )


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the architecture named in the file, load its weights; returns (model in eval mode, meta).

    Everything is checked before the real model is built: the file is a basisn model file, its meta is sane,
    its tensors fit the architecture the meta names and are finite. Any problem is a ModelFileError (one line
    naming the file).
    """
    from basisn.models import build_model  # the zoo imports torchvision: only when a model is loaded

    checkpoint, fmt, meta = _read_checkpoint(path, map_location)
    _check_meta_values(path, meta)
    _check_against_architecture(path, meta, fmt, checkpoint["state_dict"])
    model = build_model(meta["model"], meta["num_classes"], meta["in_channels"])
    try:
        if fmt == DENSE_FORMAT:
            model.load_state_dict(checkpoint["state_dict"])
        else:
            load_basisn(model, path, map_location=map_location)
    except (RuntimeError, ValueError, TypeError, KeyError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"{path}: does not load into the {meta['model']} its meta names ({first})") from None
    return model.eval(), meta
