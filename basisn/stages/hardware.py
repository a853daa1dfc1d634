"""`hardware` stage (`basisn hw-eval`): the cost model on the paper's networks (and the pipeline's model), written
for notebooks.

Reads the `hardware:` block of params.yaml (with the selected profile's `hardware:` override merged in; its schema
and validation: basisn.hardware.settings), validates all of it and that `--out` is writable before any work,
evaluates every network for every scheme at every crossbar count, the one-at-a-time sensitivity sweeps, and writes
JSON + CSV into a temporary directory that replaces `--out` only when everything succeeded. File schemas:
docs/hardware.md.
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
from basisn.data import DATASET_NAMES
from basisn.hardware.config import MAX_AS_MEAN, PRESETS, BasisSpec, HardwareConfig
from basisn.hardware.cost import ENERGY_TERMS, SCHEMES, evaluate, min_crossbars, ratios, storage, sweep, total_tiles
from basisn.hardware.fairness import choices_table
from basisn.hardware.networks import NETWORKS, PaperNetwork, paper_shapes
from basisn.hardware.settings import FIELD_SWEEPS, MEMORY_SWEEPS, HwParamsError, resolve_block
from basisn.hardware.shapes import NetworkShapes, load_shapes
from basisn.params import ParamsError, profile_block

OUTPUT_FORMAT = "basisn-hw-eval/1"
# Schemes of the sweep tables: what their ratios need (ideal and the ping-pong option alone are in summary.csv).
SWEEP_SCHEMES = ("reprogram", "reprogram_best", "basisn", "digital")


def load_block(path: Path, profile: str | None = None) -> Any:
    """The `hardware:` block with the selected profile's `hardware:` override merged in (basisn.params)."""
    if not path.is_file():
        raise HwParamsError(f"params: file {str(path)!r} does not exist; pass --params PATH")
    try:
        return profile_block(path, "hardware", profile)
    except ParamsError as error:
        raise HwParamsError(str(error)) from None


def run(p: dict[str, Any], config: HardwareConfig, basis: BasisSpec, networks: dict[str, NetworkShapes]) -> dict:
    """All tables of hw-eval as DataFrames (+ the JSON summary); no file is touched."""
    nets = {name: shapes.with_basis(basis) for name, shapes in networks.items()}
    configs = {p["preset"]: config} | {name: PRESETS[name] for name in p["compare_presets"] if name != p["preset"]}
    grid = sorted(set(p["crossbars"]) | set(p["report_crossbars"]))
    memo: dict = {}  # evaluations shared by the summary and the sweeps
    summary = pd.concat(
        [sweep(nets, cfg, grid, batch=p["batch"], memo=memo).assign(preset=name) for name, cfg in configs.items()],
        ignore_index=True,
    )
    sweep_frame = _sweeps(p, config, configs, nets, grid, memo)
    memory_frame = pd.concat(
        [
            sweep(nets, config.replace(memory=on), p["report_crossbars"], batch=p["batch"], memo=memo)
            for on in (False, True)
        ],
        ignore_index=True,
    ).assign(preset=p["preset"])
    terms = [f"energy_{term}_j" for term in ENERGY_TERMS]
    memory_frame["dominant_term"] = memory_frame[terms].idxmax(axis=1).str[len("energy_") : -len("_j")]
    base = summary[summary["preset"] == p["preset"]]
    report_rows = base[base["n_crossbars"].isin(p["report_crossbars"])]
    shapes_table = pd.concat([s.table().assign(network=name) for name, s in nets.items()], ignore_index=True)
    tables = {
        "summary": summary,
        "ratios": ratios(summary, by=["preset"]),
        "sweep": sweep_frame,
        "sweep_ratios": _sweep_ratios(sweep_frame),
        "layers": _layers_table(p, config, nets),
        "shapes": shapes_table[["network", *[c for c in shapes_table if c != "network"]]],
        "memory": memory_frame,
        "memory_ratios": ratios(memory_frame),
        "storage": _storage_table(p, config, basis, nets, networks),
        # which side each modelling choice favours, at the report crossbar counts (docs/hardware.md section 4)
        "fairness": choices_table(nets, config, p["report_crossbars"], batch=p["batch"], memo=memo),
    }
    report_ratios = ratios(report_rows)
    info = _info(p, config, basis, configs, nets) | {"report_ratios": report_ratios.to_dict(orient="records")}
    return {"tables": tables, "info": info, "report_ratios": report_ratios}


def _sweeps(
    p: dict[str, Any], config: HardwareConfig, configs: dict, nets: dict, grid: list[int], memo: dict
) -> pd.DataFrame:
    """The one-at-a-time sweeps of `hardware.sweep` (sweep.csv)."""
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
    return pd.concat(sweeps, ignore_index=True) if sweeps else pd.DataFrame()


def _layers_table(p: dict[str, Any], config: HardwareConfig, nets: dict) -> pd.DataFrame:
    """Per-layer columns of every scheme at every report crossbar count (layers.csv)."""
    layers = []
    for shapes in nets.values():
        for n in p["report_crossbars"]:
            for scheme in SCHEMES:
                try:
                    layers.append(evaluate(shapes, config, scheme, n, p["batch"]).layer_columns())
                except ValueError:  # a pipeline model whose dense layers leave no room for the basis
                    continue
    return pd.DataFrame({key: _concat([part[key] for part in layers]) for key in layers[0]})


def _storage_table(
    p: dict[str, Any], config: HardwareConfig, basis: BasisSpec, nets: dict, networks: dict
) -> pd.DataFrame:
    """Storage of every network (storage.csv): a basis-mapped model has its own basis, the paper's take each G."""
    groups = sorted(g for g in {basis.groups, *p["sweep"].get("groups", [])} if basis.n_basis % g == 0)
    storage_rows = []
    for name, shapes in nets.items():
        own = networks[name].basis is not None
        specs = [shapes.basis] if own else [BasisSpec(**(basis.as_dict() | {"groups": g})) for g in groups]
        storage_rows += [storage(shapes, config, spec) for spec in specs]
    return pd.DataFrame(storage_rows)


def _info(p: dict[str, Any], config: HardwareConfig, basis: BasisSpec, configs: dict, nets: dict) -> dict:
    """hw_eval.json without its report ratios: what the run used, and facts of every network."""
    return {
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
                "dataset": NETWORKS[name].dataset if name in NETWORKS else None,  # the model's: main()
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
    }


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


def main(argv: list[str]) -> int:
    """`hardware` stage entry point: `hw-eval: ...` one-line errors before any work, exit code 2."""
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
        networks = _networks(args, p)
        evaluating = time.perf_counter()
        result = run(p, config, basis, networks)
        evaluation_seconds = time.perf_counter() - evaluating
        if args.model_shapes is not None:  # the figures name the pipeline model's dataset, as the paper networks'
            result["info"]["networks"][args.model_name]["dataset"] = _model_dataset(args)
    except ValueError as error:
        writer.close()
        print(f"hw-eval: {error}", file=sys.stderr)
        return 2
    with writer:
        files = write_outputs(Path(args.out), result)
    seconds = time.perf_counter() - started
    print_report(p, config, basis, result)
    print(
        f"hw-eval: {len(networks)} networks in {seconds:.1f}s ({evaluation_seconds:.2f}s of evaluation, the rest "
        f"building shapes and writing files) -> {args.out}/ ({', '.join(files)})"
    )
    return 0


def _model_dataset(args: argparse.Namespace) -> str | None:
    """The dataset the pipeline's model was trained on: the `data:` block of the params file and profile."""
    try:
        dataset = (profile_block(Path(args.params), "data", args.profile) or {}).get("dataset")
    except ParamsError:
        return None
    return DATASET_NAMES.get(dataset, dataset)


def _networks(args: argparse.Namespace, p: dict[str, Any]) -> dict[str, NetworkShapes]:
    """The paper's networks of `hardware.networks`, then the pipeline's model of --model-shapes (if given)."""
    networks: dict[str, NetworkShapes] = {}
    if args.model_shapes is not None:
        if args.model_name in p["networks"]:
            raise HwParamsError(f"--model-name {args.model_name!r} clashes with a paper network; pick another")
        try:
            networks[args.model_name] = load_shapes(args.model_shapes, name=args.model_name)
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise HwParamsError(f"--model-shapes {args.model_shapes}: cannot read ({error})") from None
    return {name: paper_shapes(name) for name in p["networks"]} | networks


def print_report(p: dict[str, Any], config: HardwareConfig, basis: BasisSpec, result: dict) -> None:
    """The headline tables of a run, in percent, for the terminal."""
    print(
        f"hw-eval: preset {p['preset']!r} (N_wv={config.verify_iters}, {config.row_program_cycles} cycles per row "
        f"write, T_in={config.input_steps}, cpw={config.cols_per_weight}), basis n={basis.n_basis} "
        f"m={basis.segment_len} G={basis.groups}, batch {p['batch']}"
    )
    report = result["report_ratios"]
    print("BasisN / reprogram (per inference; below 100% means BasisN is better):")
    print(format_table(report, p["report_crossbars"]))
    if "cycles_ratio_best" in report:
        print("BasisN / the best baseline schedule (ping-pong, pipelined rounds, rounds of layers with copies):")
        print(format_table(report, p["report_crossbars"], ("cycles_ratio_best", "edp_ratio_best")))
    if "cycles_ratio_digital" in report:
        print("BasisN / digital (the same MAC lanes running the dense network, no crossbars):")
        print(format_table(report, p["report_crossbars"], ("cycles_ratio_digital", "edp_ratio_digital")))
    fair = result["tables"]["fairness"]
    if len(fair):
        n = 64 if 64 in p["report_crossbars"] else p["report_crossbars"][0]
        net = fair["network"].iloc[0]
        rows = fair[(fair["network"] == net) & (fair["n_crossbars"] == n)]
        print(f"Each modelling choice, {net} at N = {n} (fairness.csv): BasisN / best EDP, default -> alternative")
        for row in rows.itertuples():
            best = f"{row.edp_ratio_best:8.2%} -> {row.edp_ratio_best_alt:8.2%}"
            digital = f"{row.edp_ratio_digital:8.2%} -> {row.edp_ratio_digital_alt:8.2%}"
            print(f"  {row.choice:<20} {best}   vs digital {digital}   ({row.alternative})")
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
