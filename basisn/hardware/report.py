"""`basisn hw-eval`: the cost model on the paper's networks (and the pipeline's model), written for notebooks.

Reads the `hardware:` block of params.yaml, validates all of it before writing anything, evaluates every network
for every scheme at every crossbar count, the one-at-a-time sensitivity sweeps, and writes JSON + CSV into a
temporary directory that replaces `--out` only when everything succeeded. File schemas: docs/hardware.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from basisn.atomic import atomic_directory
from basisn.hardware.config import FIELD_NAMES, PRESETS, BasisSpec, HardwareConfig, preset
from basisn.hardware.cost import SCHEMES, evaluate, min_crossbars, ratios, sweep, total_tiles
from basisn.hardware.networks import NETWORKS, PAPER_NETWORKS, PaperNetwork, paper_shapes
from basisn.hardware.shapes import NetworkShapes, load_shapes

OUTPUT_FORMAT = "basisn-hw-eval/1"
SWEEP_KEYS = ("n_basis", "groups", "batch", "verify_iters")
DEFAULTS: dict[str, Any] = {
    "preset": "default",
    "overrides": {},
    "compare_presets": ["fast_write", "design_prototype"],
    "networks": list(PAPER_NETWORKS),
    "crossbars": [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096],
    "report_crossbars": [16, 64, 256],
    "batch": 1,
    "basis": {"n_basis": 64, "segment_len": 128, "groups": 1},
    "sweep": {
        "n_basis": [16, 32, 64, 128],
        "groups": [1, 2, 4, 8],
        "batch": [1, 4, 16, 64, 256],
        "verify_iters": [1, 2, 5, 10, 20, 50, 100],
    },
}


class HwParamsError(ValueError):
    """A problem in the `hardware:` block; one line naming the key, the value and what is allowed."""


# ----------------------------------------------------------------------------------------------------------------
# params.yaml `hardware:` block.
# ----------------------------------------------------------------------------------------------------------------
def _positive_ints(key: str, value: Any, allow_empty: bool = False) -> list[int]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise HwParamsError(f"params: hardware.{key}={value!r} is not allowed; use a non-empty list of integers >= 1")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise HwParamsError(f"params: hardware.{key} contains {v!r}; allowed: integers >= 1")
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
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise HwParamsError(f"params: hardware.batch={batch!r} is not allowed; use an integer >= 1")
    if not isinstance(p["basis"], dict):
        raise HwParamsError(f"params: hardware.basis={p['basis']!r} is not allowed; use a mapping")
    bad = sorted(set(p["basis"]) - {"n_basis", "segment_len", "groups"})
    if bad:
        raise HwParamsError(f"params: hardware.basis.{bad[0]} is unknown; allowed: n_basis, segment_len, groups")
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
        _positive_ints(f"sweep.{key}", values, allow_empty=True)
    for n_basis in p["sweep"].get("n_basis", []):
        if n_basis > basis.segment_len:
            raise HwParamsError(
                f"params: hardware.sweep.n_basis contains {n_basis}; allowed: at most segment_len={basis.segment_len}"
            )
    p["crossbars"] = crossbars
    return p, config, basis


def load_block(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise HwParamsError(f"params: file {str(path)!r} does not exist; pass --params PATH")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise HwParamsError(f"params: {path} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HwParamsError(f"params: {path} must hold a mapping with a `hardware:` block")
    return data.get("hardware", {})


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
    summary = []
    for name, cfg in configs.items():
        frame = sweep(nets, cfg, grid, batch=p["batch"])
        summary.append(frame.assign(preset=name))
    summary = pd.concat(summary, ignore_index=True)
    sweeps = []
    for key, values in p["sweep"].items():
        if values:
            frame = sweep(nets, config, grid, **({"batch": p["batch"]} | {key: values}))
            sweeps.append(frame.assign(preset=p["preset"], sweep=key))
    sweep_frame = pd.concat(sweeps, ignore_index=True) if sweeps else pd.DataFrame()
    layers = []
    for shapes in nets.values():
        for n in p["report_crossbars"]:
            for scheme in SCHEMES:
                try:
                    layers.append(evaluate(shapes, config, scheme, n, p["batch"]).layers)
                except ValueError:  # a pipeline model whose dense layers leave no room for the basis
                    continue
    shapes_table = pd.concat([s.table().assign(network=name) for name, s in nets.items()], ignore_index=True)
    base = summary[summary["preset"] == p["preset"]]
    report = base[base["n_crossbars"].isin(p["report_crossbars"])]
    tables = {
        "summary": summary,
        "ratios": ratios(summary, by=["preset"]),
        "sweep": sweep_frame,
        "sweep_ratios": ratios(sweep_frame, by=["preset", "sweep"]) if len(sweep_frame) else pd.DataFrame(),
        "layers": pd.concat(layers, ignore_index=True),
        "shapes": shapes_table[["network", *[c for c in shapes_table if c != "network"]]],
    }
    report_ratios = ratios(report)
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


def s_source(name: str) -> str:
    spec: PaperNetwork | None = NETWORKS.get(name)
    return "model shapes file (--model-shapes)" if spec is None else spec.source()


def format_table(report_ratios: pd.DataFrame, crossbars: list[int]) -> str:
    """Network x N table of BasisN/reprogram cycles and EDP ratios, in percent."""
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
            for column in ("cycles_ratio", "edp_ratio")
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
        description="Cost model (DESIGN.md 2): cycles, latency, energy and EDP of ideal, reprogram and basisn on "
        "the paper's networks (and the pipeline's model); writes JSON + CSV (schemas in docs/hardware.md).",
    )
    parser.add_argument("--params", default="params.yaml", help="params file with a `hardware:` block")
    parser.add_argument("--out", default="outputs/hardware", help="output directory (replaced atomically)")
    parser.add_argument("--model-shapes", default=None, help="JSON written by basisn.hardware.save_shapes")
    parser.add_argument("--model-name", default="pipeline_model", help="network name of --model-shapes rows")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        p, config, basis = resolve_block(load_block(Path(args.params)))
        networks: dict[str, NetworkShapes] = {}
        if args.model_shapes is not None:
            if args.model_name in p["networks"]:
                raise HwParamsError(f"--model-name {args.model_name!r} clashes with a paper network; pick another")
            try:
                networks[args.model_name] = load_shapes(args.model_shapes, name=args.model_name)
            except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
                raise HwParamsError(f"--model-shapes {args.model_shapes}: cannot read ({error})") from None
        networks = {name: paper_shapes(name) for name in p["networks"]} | networks
        result = run(p, config, basis, networks)
    except ValueError as error:
        print(f"hw-eval: {error}", file=sys.stderr)
        return 2
    files = write_outputs(Path(args.out), result)
    seconds = time.perf_counter() - started
    print(
        f"hw-eval: preset {p['preset']!r} (N_wv={config.verify_iters}, {config.row_program_cycles} cycles per row "
        f"write, T_in={config.input_steps}, cpw={config.cols_per_weight}), basis n={basis.n_basis} "
        f"m={basis.segment_len} G={basis.groups}, batch {p['batch']}"
    )
    print("BasisN / reprogram (per inference; below 100% means BasisN is better):")
    print(format_table(result["report_ratios"], p["report_crossbars"]))
    grouped = result["tables"]["sweep_ratios"]
    if len(grouped) and max(p["sweep"].get("groups", [1])) > 1:
        g = max(p["sweep"]["groups"])
        rows = grouped[(grouped["sweep"] == "groups") & (grouped["groups"] == g)]
        print(f"The same with group-sparse coefficients, G={g} (sweep.csv / sweep_ratios.csv hold every sweep):")
        print(format_table(rows[rows["n_crossbars"].isin(p["report_crossbars"])], p["report_crossbars"]))
    print(f"hw-eval: {len(networks)} networks in {seconds:.1f}s -> {args.out}/ ({', '.join(files)})")
    return 0
