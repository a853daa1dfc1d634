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

DENSE_FORMAT = "basisn-dense/1"
META_KEYS = ("model", "num_classes", "in_channels", "input_size", "dataset")


def _check_meta(meta: dict) -> None:
    missing = [key for key in META_KEYS if key not in meta]
    if missing:
        raise ValueError(f"model meta lacks {', '.join(missing)}; required keys: {', '.join(META_KEYS)}")


def save_model(model: nn.Module, path: str | os.PathLike, meta: dict) -> None:
    """Save a dense or basis-mapped model with its meta (plain data), atomically."""
    _check_meta(meta)
    if hasattr(model, "basisn_bank"):
        save_basisn(model, path, extra={"meta": dict(meta)})
    else:
        atomic_torch_save({"format": DENSE_FORMAT, "meta": dict(meta), "state_dict": model.state_dict()}, path)


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the architecture named in the file, load its weights; returns (model in eval mode, meta)."""
    from basisn.models import build_model  # the zoo imports torchvision: only when a model is loaded

    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    fmt = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if fmt == DENSE_FORMAT:
        meta = checkpoint["meta"]
        model = build_model(meta["model"], meta["num_classes"], meta["in_channels"])
        model.load_state_dict(checkpoint["state_dict"])
    elif fmt == CHECKPOINT_FORMAT:
        meta = checkpoint["extra"]["meta"]
        model = build_model(meta["model"], meta["num_classes"], meta["in_channels"])
        load_basisn(model, path, map_location=map_location)
    else:
        expected = f"{DENSE_FORMAT} or {CHECKPOINT_FORMAT}"
        raise ValueError(f"{path}: not a basisn model file (format {fmt!r}; expected {expected})")
    return model.eval(), meta
