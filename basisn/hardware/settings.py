"""The `hardware:` block of params.yaml: its defaults and its validation, for the cost model's users.

`resolve_block(block)` turns a block (any subset of DEFAULTS' keys) into the resolved block, the HardwareConfig
(a preset with overrides) and the BasisSpec, or raises HwParamsError with one line naming the key, the value and
what is allowed. It reads no file and imports no stage: params.yaml's loader (basisn.params) calls it for the top
level and every profile, and the hardware and tradeoff stages use what it returns.
"""

from __future__ import annotations

from typing import Any

from basisn.hardware.config import (
    BASIS_KEYS,
    FIELD_NAMES,
    MEMORY_INT_LIMITS,
    PRESETS,
    BasisSpec,
    HardwareConfig,
    preset,
)
from basisn.hardware.networks import NETWORKS, PAPER_NETWORKS

BASIS_SWEEPS = ("n_basis", "groups")  # BasisSpec fields
FIELD_SWEEPS = ("digital_lanes", "write_cols", "write_crossbars", "sram_bytes")  # HardwareConfig fields
MEMORY_SWEEPS = ("sram_bytes",)  # swept with memory traffic on (they change nothing with it off)
SWEEP_KEYS = (*BASIS_SWEEPS, "batch", "verify_iters", *FIELD_SWEEPS, "verify_iters_share")
DEFAULTS: dict[str, Any] = {
    "preset": "default",
    "overrides": {},
    "compare_presets": ["fast_write", "design_prototype", "neurram", "neurram_cell", "neurosim_v21"],
    "networks": list(PAPER_NETWORKS),
    "crossbars": [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
    "report_crossbars": [16, 64, 256],
    "batch": 1,
    "basis": {"n_basis": 64, "segment_len": 128, "groups": 1, "coef_bits": 4, "coef_quant": "uniform"},
    "sweep": {
        "n_basis": [16, 32, 64, 128],
        "groups": [1, 2, 4, 8],
        "batch": [1, 4, 16, 64, 256],
        "verify_iters": [1, 2, 5, 10, 20, 50, 100],
        "digital_lanes": [32, 64, 128, 256, 512],
        "write_cols": [1, 8, 32, 128],
        "write_crossbars": [1, 4, 16, 64],
        "verify_iters_share": [0.1, 0.25, 0.5, 1.0],
        "sram_bytes": [262144, 1048576, 2097152, 4194304, 8388608, 16777216, 67108864],
    },
}
MAX_COUNT = 2**20  # crossbars, batch, sweep values: far beyond any chip; crossbars: [10**18] raised OverflowError


class HwParamsError(ValueError):
    """A problem in the `hardware:` block; one line naming the key, the value and what is allowed."""


def resolve_block(block: Any) -> tuple[dict[str, Any], HardwareConfig, BasisSpec]:
    """Validate the `hardware:` block (missing keys take DEFAULTS); returns (resolved block, config, basis)."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise HwParamsError(f"params: hardware={block!r} is not allowed; use a mapping (or {{}} for the defaults)")
    unknown = sorted(set(block) - set(DEFAULTS))
    if unknown:
        raise HwParamsError(f"params: hardware.{unknown[0]} is unknown; allowed: {', '.join(DEFAULTS)}")
    p = {k: block.get(k, v) for k, v in DEFAULTS.items()}
    config = _config(p)
    _check_presets_and_networks(p)
    crossbars = _positive_ints("crossbars", p["crossbars"])
    _positive_ints("report_crossbars", p["report_crossbars"])
    batch = p["batch"]
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_COUNT:
        raise HwParamsError(f"params: hardware.batch={batch!r} is not allowed; use an integer in [1, {MAX_COUNT}]")
    basis = _basis(p, config)
    p["basis"] = basis.as_dict()
    _check_sweep(p, config, basis)
    p["crossbars"] = crossbars
    return p, config, basis


def _positive_ints(key: str, value: Any, allow_empty: bool = False) -> list[int]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise HwParamsError(f"params: hardware.{key}={value!r} is not allowed; use a non-empty list of integers >= 1")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_COUNT:
            raise HwParamsError(f"params: hardware.{key} contains {v!r}; allowed: integers in [1, {MAX_COUNT}]")
    if len(set(value)) != len(value):
        raise HwParamsError(f"params: hardware.{key}={value!r} has duplicates; list each value once")
    return list(value)


def _config(p: dict[str, Any]) -> HardwareConfig:
    """The preset with the block's overrides."""
    if p["preset"] not in PRESETS:
        raise HwParamsError(f"params: hardware.preset={p['preset']!r} is unknown; allowed: {', '.join(PRESETS)}")
    if not isinstance(p["overrides"], dict):
        raise HwParamsError(f"params: hardware.overrides={p['overrides']!r} is not allowed; use a mapping")
    bad = sorted(set(p["overrides"]) - set(FIELD_NAMES))
    if bad:
        raise HwParamsError(f"params: hardware.overrides.{bad[0]} is unknown; allowed: {', '.join(FIELD_NAMES)}")
    try:
        return preset(p["preset"], **p["overrides"])
    except ValueError as error:
        raise HwParamsError(f"params: hardware.overrides: {error}") from None


def _check_presets_and_networks(p: dict[str, Any]) -> None:
    compare = p["compare_presets"]
    if not isinstance(compare, list) or any(name not in PRESETS for name in compare):
        raise HwParamsError(
            f"params: hardware.compare_presets={compare!r} is not allowed; use a list of: {', '.join(PRESETS)}"
        )
    networks = p["networks"]
    if not isinstance(networks, list) or not networks:
        raise HwParamsError(f"params: hardware.networks={networks!r} is not allowed; use a non-empty list")
    for name in networks:
        if name not in NETWORKS:
            raise HwParamsError(f"params: hardware.networks contains {name!r}; allowed: {', '.join(NETWORKS)}")
    if len(set(networks)) != len(networks):
        raise HwParamsError(f"params: hardware.networks={networks!r} has duplicates; list each network once")


def _basis(p: dict[str, Any], config: HardwareConfig) -> BasisSpec:
    """The BasisSpec of `hardware.basis`, which must fit the crossbars and the crossbar counts."""
    if not isinstance(p["basis"], dict):
        raise HwParamsError(f"params: hardware.basis={p['basis']!r} is not allowed; use a mapping")
    bad = sorted(set(p["basis"]) - set(BASIS_KEYS))
    if bad:
        raise HwParamsError(f"params: hardware.basis.{bad[0]} is unknown; allowed: {', '.join(BASIS_KEYS)}")
    try:
        basis = BasisSpec(**(DEFAULTS["basis"] | p["basis"]))
        basis.check_fits(config)
    except ValueError as error:
        raise HwParamsError(f"params: hardware.basis: {error}") from None
    needed = -(-basis.n_basis * config.cols_per_weight // config.cols)  # X: crossbars of one basis copy
    for key in ("crossbars", "report_crossbars"):
        too_few = [n for n in p[key] if n < needed]
        if too_few:
            raise HwParamsError(
                f"params: hardware.{key} contains {too_few[0]}; basisn needs at least {needed} crossbars for "
                f"n_basis={basis.n_basis} (one basis copy); allowed: integers >= {needed}"
            )
    return basis


def _check_sweep(p: dict[str, Any], config: HardwareConfig, basis: BasisSpec) -> None:
    if not isinstance(p["sweep"], dict):
        raise HwParamsError(f"params: hardware.sweep={p['sweep']!r} is not allowed; use a mapping")
    bad = sorted(set(p["sweep"]) - set(SWEEP_KEYS))
    if bad:
        raise HwParamsError(f"params: hardware.sweep.{bad[0]} is unknown; allowed: {', '.join(SWEEP_KEYS)}")
    for key, values in p["sweep"].items():
        if key == "verify_iters_share":
            if not isinstance(values, list) or any(
                isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1 for v in values
            ):
                raise HwParamsError(
                    f"params: hardware.sweep.verify_iters_share={values!r} is not allowed; use a list of numbers "
                    "in (0, 1] (shares of a preset's maximum iteration count)"
                )
            continue
        if key == "sram_bytes":
            high = MEMORY_INT_LIMITS["sram_bytes"]
            if not isinstance(values, list) or any(
                isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= high for v in values
            ):
                raise HwParamsError(
                    f"params: hardware.sweep.sram_bytes={values!r} is not allowed; use a list of integers in "
                    f"[0, {high}] (buffer capacities in bytes)"
                )
            continue
        _positive_ints(f"sweep.{key}", values, allow_empty=True)
        for v in values if key in FIELD_SWEEPS else []:
            try:
                config.replace(**{key: v})
            except ValueError as error:
                raise HwParamsError(f"params: hardware.sweep.{key}: {error}") from None
    for n_basis in p["sweep"].get("n_basis", []):
        if n_basis > basis.segment_len:
            raise HwParamsError(
                f"params: hardware.sweep.n_basis contains {n_basis}; allowed: at most segment_len={basis.segment_len}"
            )
