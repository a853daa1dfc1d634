"""params.yaml: load, apply the selected profile, validate every key before a stage does any work.

params.yaml holds the default (Fashion-MNIST) values at the top level and named `profiles:` that override some of
them (the paper's CIFAR-100 / ImageNet settings, a tiny smoke profile). `profile:` selects one, so a profile is
chosen without editing code: `dvc exp run -S profile=cifar100_resnet18`, or `BASISN_PROFILE=smoke` for a one-off
run of a stage (not inside `dvc repro`, where params.yaml's `profile:` is the only source, as dvc.lock records it).
Blocks that belong to one part of the library (`hardware`: basisn.hardware.settings, `robustness`:
basisn.hardware.robustness) are validated by that part's own parser, for the top level and every profile that
overrides them, whenever a stage loads params.yaml; so every stage refuses a bad block before any work. This module
imports no stage (basisn.stages): the stages call it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from basisn.parallel import check_alternate


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
        f"a finite number {bounds}",
        lambda v: (
            _is_number(v) and math.isfinite(v) and (v > low if low_open else v >= low) and (high is None or v <= high)
        ),
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


def limited(rule: Rule, why: str) -> Rule:
    """`rule` with the reason for its upper bound appended to what it allows."""
    return Rule(f"{rule.describe} ({why})", rule.check)


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

# the cost model's networks (basisn.hardware.networks.NETWORKS), listed here so params load without torch
NETWORK_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "densenet121",
    "cifar_resnet18",
    "cifar_resnet34",
    "cifar_densenet121",
    "vit_b_16",
)
MODEL_NETWORK = "pipeline_model"  # the network name the hardware and tradeoff stages give the pipeline's own model
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit seed
MAX_COUNT = 2**20  # crossbars, batches: far beyond any chip (as basisn.hardware.settings.MAX_COUNT)
MAX_REPLICATES = 100  # tradeoff.seeds: each is a dense training plus every full fine-tune
MAX_SEGMENT_LEN = 8192  # 8 * 8192^2 bytes = 0.5 GiB for the m x m system; 100000 would need 80 GB
# (train images, test images, classes) of the standard splits, for subset checks before any file is read
SPLITS: dict[str, tuple[int, int, int]] = {
    "fashion_mnist": (60000, 10000, 10),
    "cifar100": (50000, 10000, 100),
    "imagenet": (1281167, 50000, 1000),
}
IN_CHANNELS = {"fashion_mnist": 1, "cifar100": 3, "imagenet": 3}
DVC_STAGE_ENV = "DVC_STAGE"  # set by `dvc repro` for every stage command it runs
PROFILE_ENV = "BASISN_PROFILE"

_TRAINING = {
    "epochs": integer(1),
    "lr": number(0.0, low_open=True),
    "momentum": number(0.0, 1.0),
    "nesterov": boolean(),
    "weight_decay": number(0.0),
    "label_smoothing": number(0.0, 1.0),
    "warmup_epochs": integer(0),
    "amp": choice("auto", "on", "off"),
    "channels_last": boolean(),
    "compile": boolean(),
}

SCHEMA: dict[str, Any] = {
    "profile": string(),
    "seed": integer(0, MAX_SEED),
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
        "segment_len": limited(
            integer(1, MAX_SEGMENT_LEN), "the basis is fit from an m x m float64 matrix: 8 * m^2 bytes"
        ),
        "coef_bits": integer(2, 16, optional=True),
        "coef_quant": choice("uniform", "pow2"),
        "coef_scale": choice("channel", "layer"),
        "basis_bits": integer(2, 16, optional=True),
        "groups": integer(1),
        "assignment": choice("fixed", "learned", "dynamic"),
        "exclude": list_of(string(), non_empty=False),
    },
    "finetune": dict(
        _TRAINING,
        kd_alpha=number(0.0, 1.0),
        kd_temperature=number(0.0, low_open=True),
        group_lasso=number(0.0),
        harden_at=number(0.0, 1.0, low_open=True),
        alternate=Rule(
            "null (joint update) or a mapping {coef_steps: k1, basis_steps: k2} of integers >= 1",
            lambda v: check_alternate(v) is None,
        ),
    ),
    "sweep": {
        "n_basis": list_of(integer(1)),
        "coef_bits": list_of(integer(2, 16)),
        "finetune_epochs": integer(0),
        "finetune_subset": integer(1, optional=True),
    },
    "tradeoff": {
        "groups": list_of(integer(1)),
        "coef_bits": list_of(integer(2, 16)),
        "options": Rule(  # each option's overrides: _check_tradeoff
            "a non-empty mapping of option name -> {decompose: ..., finetune: ...} overrides",
            lambda v: isinstance(v, dict) and bool(v) and all(isinstance(k, str) and k for k in v),
        ),
        "best": string(),
        "full": Rule(
            "a mapping of option name -> list of G (the main configurations)",
            lambda v: isinstance(v, dict) and all(isinstance(g, list) for g in v.values()),
        ),
        "finetune_epochs": integer(1),
        "finetune_subset": integer(1, optional=True),
        "seeds": limited(integer(1, MAX_REPLICATES), "replicates of the full fine-tunes and their dense baselines"),
        "workers": limited(integer(1, 64), "processes that train side by side, each with a share of the threads"),
        "networks": list_of(choice(*NETWORK_NAMES)),
        "headline": {"network": string(), "crossbars": integer(1), "preset": string()},
    },
    "claim_region": {
        "networks": list_of(choice(*NETWORK_NAMES[:-1])),
        "row_write_s": list_of(number(1e-9, 1.0)),
        "crossbars": list_of(integer(1, MAX_COUNT)),
        "batches": list_of(integer(1, MAX_COUNT)),
        "groups": list_of(integer(1)),
        "bound": number(0.0, 1.0, low_open=True),
        "sensitivity": {
            "network": choice(*NETWORK_NAMES[:-1]),
            "crossbars": integer(1, MAX_COUNT),
            "batch": integer(1, MAX_COUNT),
            "factors": list_of(number(0.0, 100.0, low_open=True)),
        },
    },
    "hardware": ANY,
    "robustness": ANY,
}


def check_partial(block: str, values: Any, prefix: str) -> None:
    """Validate `values` as a partial `block:` (a training option's overrides): known keys, valid leaves."""
    _walk(SCHEMA[block], values, prefix, partial=True)


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


def merge(base: dict, override: dict) -> dict:
    """`base` with `override` applied, nested mappings merged key by key (a copy; neither input changes)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
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
    selected = select_profile(raw, profile)
    effective = merge(base, profiles[selected] or {})
    effective["profile"] = selected
    _walk(SCHEMA, effective, "", partial=False)
    _check_semantics(effective)
    return effective


def select_profile(raw: dict, profile: str | None = None) -> str:
    """--profile, else $BASISN_PROFILE, else `profile:`; under `dvc repro` only `profile:` (what dvc.lock records).

    A stray BASISN_PROFILE inside `dvc repro` would make a stage's outputs disagree with dvc.lock (which records
    params.yaml's `profile:`), so there it is an error unless it names the same profile.
    """
    from_file = raw.get("profile")
    from_env = os.environ.get(PROFILE_ENV)
    if os.environ.get(DVC_STAGE_ENV) and from_env and from_env != from_file:
        raise ParamsError(
            f"params: {PROFILE_ENV}={from_env} is set inside `dvc repro` (stage {os.environ[DVC_STAGE_ENV]}), "
            f"where the profile is params.yaml's `profile: {from_file}` (recorded in dvc.lock); unset "
            f"{PROFILE_ENV} or run `dvc exp run -S profile={from_env}`"
        )
    selected = profile or from_env or from_file
    profiles = raw.get("profiles") or {}
    if selected not in profiles:
        raise ParamsError(f"params: unknown profile {selected!r}; allowed: {', '.join(map(str, profiles))}")
    return selected


def _check_semantics(p: dict) -> None:
    """Checks that involve more than one key (each leaf is already valid)."""
    n_basis, segment_len, groups = (p["decompose"][k] for k in ("n_basis", "segment_len", "groups"))
    if n_basis > segment_len:
        raise ParamsError(f"params: decompose.n_basis={n_basis} exceeds decompose.segment_len={segment_len}")
    if n_basis % groups:
        raise ParamsError(f"params: decompose.groups={groups} does not divide decompose.n_basis={n_basis}")
    for block in ("train", "finetune"):
        epochs, warmup = p[block]["epochs"], p[block]["warmup_epochs"]
        if warmup > epochs:
            raise ParamsError(
                f"params: {block}.warmup_epochs={warmup} exceeds {block}.epochs={epochs}; allowed: 0..{epochs}"
            )
    sweep_epochs = p["sweep"]["finetune_epochs"]
    if sweep_epochs and p["finetune"]["warmup_epochs"] > sweep_epochs:
        raise ParamsError(
            f"params: finetune.warmup_epochs={p['finetune']['warmup_epochs']} exceeds "
            f"sweep.finetune_epochs={sweep_epochs} (the sweep's fine-tune); allowed: 0..{sweep_epochs}"
        )
    for n in p["sweep"]["n_basis"]:
        if n > segment_len or n % groups:
            raise ParamsError(
                f"params: sweep.n_basis contains {n}; allowed: at most decompose.segment_len={segment_len} and "
                f"a multiple of decompose.groups={groups}"
            )
    dataset = p["data"]["dataset"]
    train_size, test_size, classes = SPLITS[dataset]
    for key, value, size in (
        ("data.subset", p["data"]["subset"], train_size),
        ("data.test_subset", p["data"]["test_subset"], test_size),
        ("sweep.finetune_subset", p["sweep"]["finetune_subset"], train_size),
        ("tradeoff.finetune_subset", p["tradeoff"]["finetune_subset"], train_size),
    ):
        if value is not None and not classes <= value <= size:
            raise ParamsError(
                f"params: {key}={value} is not allowed for {dataset}; allowed: {classes} (one image per class) "
                f"to {size} (the split's size), or null"
            )
    _check_tradeoff(p)


def _check_tradeoff(p: dict) -> None:
    """Semantic checks of `tradeoff:` that involve other blocks (each leaf is validated by SCHEMA); the tradeoff
    stage's grid (basisn.stages.tradeoff.configurations) relies on them."""
    t = p["tradeoff"]
    if p["seed"] + t["seeds"] - 1 > MAX_SEED:
        raise ParamsError(
            f"params: tradeoff.seeds={t['seeds']} with seed={p['seed']} runs past the largest seed {MAX_SEED}; "
            f"allowed: seed + seeds - 1 <= {MAX_SEED}"
        )
    n_basis = p["decompose"]["n_basis"]
    lists = [("tradeoff.groups", t["groups"])] + [(f"tradeoff.full.{name}", gs) for name, gs in t["full"].items()]
    for key, groups in lists:
        for g in groups:
            if isinstance(g, bool) or not isinstance(g, int) or g < 1 or n_basis % g:
                raise ParamsError(
                    f"params: {key} contains {g!r}, which does not divide decompose.n_basis={n_basis}; "
                    "allowed: divisors of n_basis"
                )
    for name in t["full"]:
        if name not in t["options"]:
            raise ParamsError(
                f"params: tradeoff.full.{name} names no option of tradeoff.options; allowed: {', '.join(t['options'])}"
            )
    headline = t["headline"]["network"]
    if headline not in (*t["networks"], MODEL_NETWORK):
        raise ParamsError(
            f"params: tradeoff.headline.network={headline!r} is not priced; allowed: "
            f"{', '.join((*t['networks'], MODEL_NETWORK))}"
        )
    if t["best"] not in t["options"]:
        raise ParamsError(
            f"params: tradeoff.best={t['best']!r} is not one of tradeoff.options; allowed: {', '.join(t['options'])}"
        )
    for name, overrides in t["options"].items():
        where = f"tradeoff.options.{name}"
        if overrides is None:
            continue
        if not isinstance(overrides, dict):
            raise ParamsError(
                f"params: {where}={overrides!r} is not allowed; use a mapping with decompose: and/or finetune:"
            )
        for block in overrides:
            if block not in ("decompose", "finetune"):
                raise ParamsError(f"params: unknown key {where}.{block}; allowed keys here: decompose, finetune")
            if block == "decompose" and {"groups", "coef_bits"} & set(overrides[block] or {}):
                raise ParamsError(
                    f"params: {where}.decompose sets groups/coef_bits, which tradeoff.groups/coef_bits sweep; "
                    "allowed: the other decompose keys"
                )
            check_partial(block, overrides[block] or {}, f"{where}.{block}.")
        merged = merge(p["finetune"], overrides.get("finetune") or {})
        if merged["warmup_epochs"] > merged["epochs"]:
            raise ParamsError(
                f"params: {where}.finetune: warmup_epochs={merged['warmup_epochs']} exceeds epochs={merged['epochs']}; "
                f"allowed: 0..{merged['epochs']} (the short fine-tune clamps the warm-up to its own length)"
            )


def check_layer_names(p: dict) -> None:
    """decompose.exclude must name modules of the params' model: built on the meta device (no memory, no data)."""
    import torch

    from basisn.models import build_model

    exclude = p["decompose"]["exclude"]
    if not exclude:
        return
    dataset = p["data"]["dataset"]
    with torch.device("meta"):
        model = build_model(p["model"]["name"], SPLITS[dataset][2], IN_CHANNELS[dataset])
    names = {name for name, _ in model.named_modules() if name}
    for name in exclude:
        if name not in names:
            top = ", ".join(sorted(n for n in names if "." not in n))
            raise ParamsError(
                f"params: decompose.exclude names {name!r}, which is no module of {p['model']['name']}; "
                f"allowed: module names such as {top}"
            )


def check_subsystem_blocks(raw: dict) -> None:
    """Validate the `hardware:` and `robustness:` blocks of every profile (merged over the top level)."""
    from basisn.hardware.robustness import parse_settings  # the library's own parsers of its blocks
    from basisn.hardware.settings import resolve_block

    for block, validate in (("hardware", resolve_block), ("robustness", parse_settings)):
        checks = [("", raw.get(block) or {})]
        for name, override in raw["profiles"].items():
            if isinstance(override, dict) and override.get(block) is not None:
                merged = merge({"b": raw.get(block) or {}}, {"b": override[block]})["b"]
                checks.append((f"profiles.{name}: ", merged))
        for where, values in checks:
            try:
                validate(values)
            except ValueError as error:
                raise ParamsError(f"params: {where}{str(error).removeprefix('params: ')}") from None


def profile_block(path: str | Path, block: str, profile: str | None = None) -> Any:
    """The `block` (e.g. `hardware`) of a params file with the selected profile's override merged in.

    A file without `profiles:` (a stand-alone hardware params file) gives its top-level block as it is.
    """
    raw = _read(Path(path))
    if not isinstance(raw, dict):
        raise ParamsError(f"params: {path} must hold a mapping with a `{block}:` block")
    if "profiles" not in raw:
        return raw.get(block, {})
    selected = select_profile(raw, profile)
    override = (raw["profiles"][selected] or {}).get(block)
    if override is None:
        return raw.get(block, {})
    return merge({"b": raw.get(block) or {}}, {"b": override})["b"]


def load(path: str | Path = "params.yaml", profile: str | None = None) -> dict:
    """Read and resolve params.yaml; raises ParamsError with one line on any problem."""
    raw = _read(Path(path))
    effective = resolve(raw, profile)
    check_subsystem_blocks(raw)
    return effective


def _read(path: Path) -> Any:
    if not path.is_file():
        raise ParamsError(f"params: file {path} not found; pass --params PATH (the repository has params.yaml)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"params: {path} is not valid YAML: {str(error).splitlines()[0]}") from None


def fingerprint(*parts: Any) -> str:
    """Short stable hash of plain data (used to key resumable checkpoint directories by their params)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
