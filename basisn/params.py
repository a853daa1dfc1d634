"""params.yaml: load, apply the selected profile, validate every key before a stage does any work.

params.yaml holds the default (Fashion-MNIST) values at the top level and named `profiles:` that override some of
them (the paper's CIFAR-100 / ImageNet settings, a tiny smoke profile). `profile:` selects one, so a profile is
chosen without editing code: `dvc exp run -S profile=cifar100_resnet18`, or `BASISN_PROFILE=smoke` for a one-off
run of a stage. Blocks that belong to one subsystem (`hardware`, `robustness`) are validated by that subsystem.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """A params.yaml problem; the message is one line naming the key, the value and what is allowed."""


@dataclass(frozen=True)
class Rule:
    """Validator of one leaf value."""

    describe: str
    check: Callable[[Any], bool]

    def __call__(self, key: str, value: Any) -> None:
        if not self.check(value):
            raise ParamsError(f"params: {key}={value!r} is not allowed; allowed: {self.describe}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def integer(low: int = 0, high: int | None = None, optional: bool = False) -> Rule:
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    return Rule(
        f"an integer {bounds}" + (" or null" if optional else ""),
        lambda v: (optional and v is None) or (_is_int(v) and v >= low and (high is None or v <= high)),
    )


def number(low: float = 0.0, high: float | None = None, low_open: bool = False) -> Rule:
    op = ">" if low_open else ">="
    bounds = f"{op} {low}" + ("" if high is None else f" and <= {high}")
    return Rule(
        f"a number {bounds}",
        lambda v: _is_number(v) and (v > low if low_open else v >= low) and (high is None or v <= high),
    )


def choice(*allowed: Any) -> Rule:
    return Rule(", ".join(map(repr, allowed)), lambda v: v in allowed)


def string() -> Rule:
    return Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v))


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def list_of(rule: Rule, non_empty: bool = True) -> Rule:
    return Rule(
        f"a {'non-empty ' if non_empty else ''}list of ({rule.describe})",
        lambda v: isinstance(v, list) and (bool(v) or not non_empty) and all(rule.check(x) for x in v),
    )


ANY = Rule("anything (validated by its subsystem)", lambda v: True)

DATASETS = ("fashion_mnist", "cifar100", "imagenet")
MODELS = (
    "small_resnet",
    "cifar_resnet18",
    "cifar_resnet34",
    "cifar_densenet121",
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
)

_TRAINING = {
    "epochs": integer(1),
    "lr": number(0.0, low_open=True),
    "momentum": number(0.0, 1.0),
    "nesterov": boolean(),
    "weight_decay": number(0.0),
    "label_smoothing": number(0.0, 1.0),
    "warmup_epochs": integer(0),
    "amp": boolean(),
    "channels_last": boolean(),
    "compile": boolean(),
}

SCHEMA: dict[str, Any] = {
    "profile": string(),
    "seed": integer(0),
    "data": {
        "dataset": choice(*DATASETS),
        "root": string(),
        "batch_size": integer(1),
        "eval_batch_size": integer(1),
        "workers": integer(0),
        "subset": integer(1, optional=True),
        "test_subset": integer(1, optional=True),
        "augment": boolean(),
    },
    "model": {"name": choice(*MODELS)},
    "train": dict(_TRAINING),
    "decompose": {
        "n_basis": integer(1),
        "segment_len": integer(1),
        "coef_bits": integer(2, 16, optional=True),
        "coef_quant": choice("uniform", "pow2"),
        "coef_scale": choice("channel", "layer"),
        "basis_bits": integer(2, 16, optional=True),
        "groups": integer(1),
        "exclude": list_of(string(), non_empty=False),
    },
    "finetune": dict(_TRAINING, kd_alpha=number(0.0, 1.0), kd_temperature=number(0.0, low_open=True)),
    "sweep": {
        "n_basis": list_of(integer(1)),
        "coef_bits": list_of(integer(2, 16)),
        "finetune_epochs": integer(0),
        "finetune_subset": integer(1, optional=True),
    },
    "hardware": ANY,
    "robustness": ANY,
}


def _walk(schema: dict, values: Any, prefix: str, partial: bool) -> None:
    if not isinstance(values, dict):
        raise ParamsError(f"params: {prefix.rstrip('.') or 'params.yaml'} must be a mapping, got {values!r}")
    for key in values:
        if key not in schema:
            raise ParamsError(f"params: unknown key {prefix}{key!r}; allowed keys here: {', '.join(map(str, schema))}")
    for key, rule in schema.items():
        if key not in values:
            if partial:
                continue
            raise ParamsError(f"params: missing key {prefix}{key}")
        if isinstance(rule, dict):
            _walk(rule, values[key], f"{prefix}{key}.", partial)
        else:
            rule(f"{prefix}{key}", values[key])


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve(raw: dict, profile: str | None = None) -> dict:
    """Apply the selected profile to the defaults and validate; returns the effective params (no `profiles`)."""
    if not isinstance(raw, dict) or "profiles" not in raw:
        raise ParamsError("params: missing key profiles (a mapping of profile name -> overrides)")
    profiles = raw["profiles"]
    if not isinstance(profiles, dict) or not profiles:
        raise ParamsError("params: profiles must be a non-empty mapping of profile name -> overrides")
    base = {k: v for k, v in raw.items() if k != "profiles"}
    schema = {k: v for k, v in SCHEMA.items() if k != "profile"}
    for name, override in profiles.items():  # every profile is checked, not just the selected one
        _walk(schema, override or {}, f"profiles.{name}.", partial=True)
    selected = profile or os.environ.get("BASISN_PROFILE") or base.get("profile")
    if selected not in profiles:
        raise ParamsError(f"params: unknown profile {selected!r}; allowed: {', '.join(profiles)}")
    effective = _merge(base, profiles[selected] or {})
    effective["profile"] = selected
    _walk(SCHEMA, effective, "", partial=False)
    n_basis, segment_len, groups = (effective["decompose"][k] for k in ("n_basis", "segment_len", "groups"))
    if n_basis > segment_len:
        raise ParamsError(f"params: decompose.n_basis={n_basis} exceeds decompose.segment_len={segment_len}")
    if n_basis % groups:
        raise ParamsError(f"params: decompose.groups={groups} does not divide decompose.n_basis={n_basis}")
    return effective


def load(path: str | Path = "params.yaml", profile: str | None = None) -> dict:
    """Read and resolve params.yaml; raises ParamsError with one line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params: file {path} not found; pass --params PATH (the repository has params.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"params: {path} is not valid YAML: {str(error).splitlines()[0]}") from None
    return resolve(raw, profile)


def fingerprint(*parts: Any) -> str:
    """Short stable hash of plain data (used to key resumable checkpoint directories by their params)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
