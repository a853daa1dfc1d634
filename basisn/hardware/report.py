"""`basisn hw-eval`: the cost model on the paper's networks (and the pipeline's model), written for notebooks.

Reads the `hardware:` block of params.yaml (with the selected profile's `hardware:` override merged in),
validates all of it and that `--out` is writable before any work, evaluates every network
for every scheme at every crossbar count, the one-at-a-time sensitivity sweeps, and writes JSON + CSV into a
temporary directory that replaces `--out` only when everything succeeded. File schemas: docs/hardware.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from basisn.atomic import atomic_directory, output_lock
from basisn.hardware.config import (
    BASIS_KEYS,
    FIELD_NAMES,
    MAX_AS_MEAN,
    MEMORY_INT_LIMITS,
    PRESETS,
    BasisSpec,
    HardwareConfig,
    preset,
)
from basisn.hardware.cost import ENERGY_TERMS, SCHEMES, evaluate, min_crossbars, ratios, storage, sweep, total_tiles
from basisn.hardware.networks import NETWORKS, PAPER_NETWORKS, PaperNetwork, paper_shapes
from basisn.hardware.shapes import NetworkShapes, load_shapes

OUTPUT_FORMAT = "basisn-hw-eval/1"
BASIS_SWEEPS = ("n_basis", "groups")  # BasisSpec fields
FIELD_SWEEPS = ("digital_lanes", "write_cols", "write_crossbars", "sram_bytes")  # HardwareConfig fields
MEMORY_SWEEPS = ("sram_bytes",)  # swept with memory traffic on (they change nothing with it off)
SWEEP_KEYS = (*BASIS_SWEEPS, "batch", "verify_iters", *FIELD_SWEEPS, "verify_iters_share")
# Schemes of the sweep tables: what their ratios need (ideal and the ping-pong option alone are in summary.csv).
SWEEP_SCHEMES = ("reprogram", "reprogram_best", "basisn", "digital")
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


class HwParamsError(ValueError):
    """A problem in the `hardware:` block; one line naming the key, the value and what is allowed."""


# ----------------------------------------------------------------------------------------------------------------
# params.yaml `hardware:` block.
# ----------------------------------------------------------------------------------------------------------------
MAX_COUNT = 2**20  # crossbars, batch, sweep values: far beyond any chip; crossbars: [10**18] raised OverflowError


def _positive_ints(key: str, value: Any, allow_empty: bool = False) -> list[int]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise HwParamsError(f"params: hardware.{key}={value!r} is not allowed; use a non-empty list of integers >= 1")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_COUNT:
            raise HwParamsError(f"params: hardware.{key} contains {v!r}; allowed: integers in [1, {MAX_COUNT}]")
    if len(set(value)) != len(value):
        raise HwParamsError(f"params: hardware.{key}={value!r} has duplicates; list each value once")
    return list(value)


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
    if p["preset"] not in PRESETS:
        raise HwParamsError(f"params: hardware.preset={p['preset']!r} is unknown; allowed: {', '.join(PRESETS)}")
    if not isinstance(p["overrides"], dict):
        raise HwParamsError(f"params: hardware.overrides={p['overrides']!r} is not allowed; use a mapping")
    bad = sorted(set(p["overrides"]) - set(FIELD_NAMES))
    if bad:
        raise HwParamsError(f"params: hardware.overrides.{bad[0]} is unknown; allowed: {', '.join(FIELD_NAMES)}")
    try:
        config = preset(p["preset"], **p["overrides"])
    except ValueError as error:
        raise HwParamsError(f"params: hardware.overrides: {error}") from None
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
    crossbars = _positive_ints("crossbars", p["crossbars"])
    _positive_ints("report_crossbars", p["report_crossbars"])
    batch = p["batch"]
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= MAX_COUNT:
        raise HwParamsError(f"params: hardware.batch={batch!r} is not allowed; use an integer in [1, {MAX_COUNT}]")
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
    p["basis"] = basis.as_dict()
    needed = -(-basis.n_basis * config.cols_per_weight // config.cols)  # X: crossbars of one basis copy
    for key in ("crossbars", "report_crossbars"):
        too_few = [n for n in p[key] if n < needed]
        if too_few:
            raise HwParamsError(
                f"params: hardware.{key} contains {too_few[0]}; basisn needs at least {needed} crossbars for "
                f"n_basis={basis.n_basis} (one basis copy); allowed: integers >= {needed}"
            )
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
    p["crossbars"] = crossbars
    return p, config, basis


def load_block(path: Path, profile: str | None = None) -> Any:
    """The `hardware:` block with the selected profile's `hardware:` override merged in (basisn.params)."""
    from basisn.params import ParamsError, profile_block

    if not path.is_file():
        raise HwParamsError(f"params: file {str(path)!r} does not exist; pass --params PATH")
    try:
        return profile_block(path, "hardware", profile)
    except ParamsError as error:
        raise HwParamsError(str(error)) from None


# ----------------------------------------------------------------------------------------------------------------
# Evaluation.
# ----------------------------------------------------------------------------------------------------------------
def _with_basis(shapes: NetworkShapes, basis: BasisSpec) -> NetworkShapes:
    """The paper's (plain) networks take the params' basis; a basis-mapped model keeps its own."""
    if shapes.basis is not None:
        return shapes
    return NetworkShapes(shapes.name, shapes.input_size, shapes.layers, basis)


def run(p: dict[str, Any], config: HardwareConfig, basis: BasisSpec, networks: dict[str, NetworkShapes]) -> dict:
    """All tables of hw-eval as DataFrames (+ the JSON summary); no file is touched."""
    nets = {name: _with_basis(shapes, basis) for name, shapes in networks.items()}
    configs = {p["preset"]: config} | {name: PRESETS[name] for name in p["compare_presets"] if name != p["preset"]}
    grid = sorted(set(p["crossbars"]) | set(p["report_crossbars"]))
    memo: dict = {}  # evaluations shared by the summary and the sweeps
    summary = []
    for name, cfg in configs.items():
        frame = sweep(nets, cfg, grid, batch=p["batch"], memo=memo)
        summary.append(frame.assign(preset=name))
    summary = pd.concat(summary, ignore_index=True)
    sweeps = []
    for key, values in p["sweep"].items():
        if not values:
            continue
        if key == "verify_iters_share":  # presets whose N_wv is a maximum used as the mean: shares of it
            for name in [n for n in configs if n in MAX_AS_MEAN]:
                cfg = configs[name]
                iters = sorted({max(1, round(share * cfg.verify_iters)) for share in values})
                frame = sweep(nets, cfg, grid, schemes=SWEEP_SCHEMES, batch=p["batch"], verify_iters=iters, memo=memo)
                frame["verify_iters_share"] = frame["verify_iters"] / cfg.verify_iters
                sweeps.append(frame.assign(preset=name, sweep=key))
            continue
        if key in FIELD_SWEEPS:
            options: dict[str, Any] = {"fields": {key: values}}
        else:
            options = {key: values}
        cfg = config.replace(memory=True) if key in MEMORY_SWEEPS else config
        frame = sweep(nets, cfg, grid, schemes=SWEEP_SCHEMES, memo=memo, **({"batch": p["batch"]} | options))
        sweeps.append(frame.assign(preset=p["preset"], sweep=key))
    sweep_frame = pd.concat(sweeps, ignore_index=True) if sweeps else pd.DataFrame()
    layers = []
    for shapes in nets.values():
        for n in p["report_crossbars"]:
            for scheme in SCHEMES:
                try:
                    layers.append(evaluate(shapes, config, scheme, n, p["batch"]).layer_columns())
                except ValueError:  # a pipeline model whose dense layers leave no room for the basis
                    continue
    layers_table = pd.DataFrame({key: _concat([part[key] for part in layers]) for key in layers[0]})
    shapes_table = pd.concat([s.table().assign(network=name) for name, s in nets.items()], ignore_index=True)
    memory_frame = pd.concat(
        [
            sweep(nets, config.replace(memory=on), p["report_crossbars"], batch=p["batch"], memo=memo)
            for on in (False, True)
        ],
        ignore_index=True,
    ).assign(preset=p["preset"])
    terms = [f"energy_{term}_j" for term in ENERGY_TERMS]
    memory_frame["dominant_term"] = memory_frame[terms].idxmax(axis=1).str[len("energy_") : -len("_j")]
    groups = sorted(g for g in {basis.groups, *p["sweep"].get("groups", [])} if basis.n_basis % g == 0)
    storage_rows = []
    for name, shapes in nets.items():  # a basis-mapped model has its own basis; the paper's take each G swept
        own = networks[name].basis is not None
        specs = [shapes.basis] if own else [BasisSpec(**(basis.as_dict() | {"groups": g})) for g in groups]
        storage_rows += [storage(shapes, config, spec) for spec in specs]
    base = summary[summary["preset"] == p["preset"]]
    report_rows = base[base["n_crossbars"].isin(p["report_crossbars"])]
    tables = {
        "summary": summary,
        "ratios": ratios(summary, by=["preset"]),
        "sweep": sweep_frame,
        "sweep_ratios": _sweep_ratios(sweep_frame),
        "layers": layers_table,
        "shapes": shapes_table[["network", *[c for c in shapes_table if c != "network"]]],
        "memory": memory_frame,
        "memory_ratios": ratios(memory_frame),
        "storage": pd.DataFrame(storage_rows),
    }
    report_ratios = ratios(report_rows)
    info = {
        "format": OUTPUT_FORMAT,
        "preset": p["preset"],
        "config": config.as_dict(),
        "derived": {
            "cols_per_weight": config.cols_per_weight,
            "input_steps": config.input_steps,
            "write_iter_cycles": config.write_iter_cycles,
            "row_program_cycles": config.row_program_cycles,
            "e_step_j": config.e_step,
        },
        "compare_presets": {name: cfg.as_dict() for name, cfg in configs.items() if name != p["preset"]},
        "max_as_mean": {name: MAX_AS_MEAN[name] for name in configs if name in MAX_AS_MEAN},
        "basis": basis.as_dict(),
        "params": p,
        "networks": {
            name: {
                "source": s_source(name),
                "input_size": list(s.input_size),
                "layers": len(s.layers),
                "macs": s.macs,
                "weights": s.weights,
                "tiles_total": total_tiles(s, config),
                "min_crossbars_basisn": min_crossbars(s, config),
                "basis": s.basis.as_dict() if s.basis else None,
            }
            for name, s in nets.items()
        },
        "report_ratios": report_ratios.to_dict(orient="records"),
    }
    return {"tables": tables, "info": info, "report_ratios": report_ratios}


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """One column of layers.csv: numeric parts stay numeric; mixed ones (text and NaN) become objects, not 'nan'."""
    if all(np.issubdtype(part.dtype, np.number) or part.dtype == bool for part in parts):
        return np.concatenate(parts)
    return np.concatenate([part.astype(object) for part in parts])


def _sweep_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """ratios() of the sweep rows, with the verify_iters_share column carried over."""
    if not len(frame):
        return pd.DataFrame()
    result = ratios(frame, by=["preset", "sweep"])
    if "verify_iters_share" in frame:
        shares = frame[["preset", "sweep", "network", "verify_iters", "verify_iters_share"]].drop_duplicates()
        result = result.merge(shares, on=["preset", "sweep", "network", "verify_iters"], how="left")
    return result


def s_source(name: str) -> str:
    spec: PaperNetwork | None = NETWORKS.get(name)
    return "model shapes file (--model-shapes)" if spec is None else spec.source()


def format_table(
    report_ratios: pd.DataFrame, crossbars: list[int], columns: tuple[str, str] = ("cycles_ratio", "edp_ratio")
) -> str:
    """Network x N table of two ratio columns (default BasisN/reprogram cycles and EDP), in percent."""
    lines = []
    header = (
        f"{'network':<20}"
        + "".join(f"{'cycles N=' + str(n):>14}" for n in crossbars)
        + "".join(f"{'EDP N=' + str(n):>14}" for n in crossbars)
    )
    lines += [header, "-" * len(header)]
    for network, rows in report_ratios.groupby("network", sort=False):
        by_n = rows.set_index("n_crossbars")
        cells = [
            f"{100 * by_n.loc[n, column]:>13.3g}%" if n in by_n.index else f"{'n/a':>14}"
            for column in columns
            for n in crossbars
        ]
        lines.append(f"{network:<20}" + "".join(cells))
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _clean(value: Any) -> Any:
    """NaN/inf -> None so that the JSON is standard."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(out: Path, result: dict) -> list[str]:
    files = []
    with atomic_directory(out) as staging:
        for name, table in result["tables"].items():
            table.to_csv(staging / f"{name}.csv", index=False)
            files.append(f"{name}.csv")
        info = result["info"] | {"files": [*files, "hw_eval.json"]}
        text = json.dumps(_clean(json.loads(json.dumps(info, default=_json_default))), indent=1, sort_keys=True)
        (staging / "hw_eval.json").write_text(text + "\n")
    return [*files, "hw_eval.json"]


def hw_eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="basisn hw-eval",
        description="Cost model (docs/method.md §2): cycles, latency, energy and EDP of ideal, the reprogramming "
        "baseline's schedules, basisn and the digital baseline on the paper's networks (and the pipeline's model); "
        "writes JSON + CSV (schemas in docs/hardware.md).",
    )
    parser.add_argument("--params", default="params.yaml", help="params file with a `hardware:` block")
    parser.add_argument("--profile", default=None, help="profile (default: `profile:` in the params file)")
    parser.add_argument("--out", default="outputs/hardware", help="output directory (replaced atomically)")
    parser.add_argument("--model-shapes", default=None, help="JSON written by basisn.hardware.save_shapes")
    parser.add_argument("--model-name", default="pipeline_model", help="network name of --model-shapes rows")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    writer = contextlib.ExitStack()
    try:
        p, config, basis = resolve_block(load_block(Path(args.params), args.profile))
        # before any work: --out writable and no other run writing it (one line naming that run), held to the end
        writer.enter_context(output_lock(Path(args.out)))
        networks: dict[str, NetworkShapes] = {}
        if args.model_shapes is not None:
            if args.model_name in p["networks"]:
                raise HwParamsError(f"--model-name {args.model_name!r} clashes with a paper network; pick another")
            try:
                networks[args.model_name] = load_shapes(args.model_shapes, name=args.model_name)
            except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
                raise HwParamsError(f"--model-shapes {args.model_shapes}: cannot read ({error})") from None
        networks = {name: paper_shapes(name) for name in p["networks"]} | networks
        evaluating = time.perf_counter()
        result = run(p, config, basis, networks)
        evaluation_seconds = time.perf_counter() - evaluating
    except ValueError as error:
        writer.close()
        print(f"hw-eval: {error}", file=sys.stderr)
        return 2
    with writer:
        files = write_outputs(Path(args.out), result)
    seconds = time.perf_counter() - started
    print(
        f"hw-eval: preset {p['preset']!r} (N_wv={config.verify_iters}, {config.row_program_cycles} cycles per row "
        f"write, T_in={config.input_steps}, cpw={config.cols_per_weight}), basis n={basis.n_basis} "
        f"m={basis.segment_len} G={basis.groups}, batch {p['batch']}"
    )
    report = result["report_ratios"]
    print("BasisN / reprogram (per inference; below 100% means BasisN is better):")
    print(format_table(report, p["report_crossbars"]))
    if "cycles_ratio_best" in report:
        print("BasisN / the best baseline option (ping-pong writes, replicas when everything fits):")
        print(format_table(report, p["report_crossbars"], ("cycles_ratio_best", "edp_ratio_best")))
    if "cycles_ratio_digital" in report:
        print("BasisN / digital (the same MAC lanes running the dense network, no crossbars):")
        print(format_table(report, p["report_crossbars"], ("cycles_ratio_digital", "edp_ratio_digital")))
    memory = result["tables"]["memory_ratios"]
    on = memory[memory["memory"].astype(bool)]
    print(
        f"With memory traffic (SRAM {config.sram_bytes} bytes, memory.csv / memory_ratios.csv; the tables above "
        f"{'include it' if config.memory else 'leave it out'}): BasisN / reprogram"
    )
    print(format_table(on, p["report_crossbars"]))
    capacities = sorted(p["sweep"].get("sram_bytes", []))
    if capacities:
        fits = []
        for row in result["tables"]["storage"].itertuples():
            if row.groups == basis.groups or row.network not in p["networks"]:
                smallest = next((c for c in capacities if row.coef_bytes <= c), None)
                fits.append(f"{row.network} {row.coef_bytes / 1e6:.3g} MB -> {smallest or 'none swept'}")
        print(f"BasisN coefficients (G={basis.groups}) and the smallest swept SRAM bytes they fit: " + "; ".join(fits))
    grouped = result["tables"]["sweep_ratios"]
    if len(grouped) and max(p["sweep"].get("groups", [1])) > 1:
        g = max(p["sweep"]["groups"])
        rows = grouped[(grouped["sweep"] == "groups") & (grouped["groups"] == g)]
        print(f"The same with group-sparse coefficients, G={g} (sweep.csv / sweep_ratios.csv hold every sweep):")
        print(format_table(rows[rows["n_crossbars"].isin(p["report_crossbars"])], p["report_crossbars"]))
    print(
        f"hw-eval: {len(networks)} networks in {seconds:.1f}s ({evaluation_seconds:.2f}s of evaluation, the rest "
        f"building shapes and writing files) -> {args.out}/ ({', '.join(files)})"
    )
    return 0
