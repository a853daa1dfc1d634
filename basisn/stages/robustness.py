"""`robustness` stage (`basisn robustness`): test accuracy of the dense baseline and of BasisN on simulated analog
crossbars, over the sweeps of the `robustness:` block (the work itself: basisn.hardware.robustness.run).

Outputs (written atomically into --out): robustness.csv (one row per sweep x mapping x value x seed),
summary.csv (mean and spread over seeds, with the cost model's numbers), robustness.json (everything the run
used). docs/simulation.md describes the columns.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from basisn import params as params_module
from basisn.atomic import OutputError, atomic_directory, atomic_write_json, check_writable, output_lock
from basisn.checkpoints import ModelFileError, load_model
from basisn.data import DataError
from basisn.hardware.robustness import Settings, parse_settings, run
from basisn.hardware.shapes import layer_shapes

DESCRIPTION = "test accuracy of the dense baseline and of BasisN on simulated analog crossbars"


# --------------------------------------------------------------------------------------------------------------
def _batches(loader: Any, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches, count = [], 0
    for images, labels in loader:
        if limit is not None and count + len(images) > limit:
            images, labels = images[: limit - count], labels[: limit - count]
        batches.append((images, labels))
        count += len(images)
        if limit is not None and count >= limit:
            break
    return batches


def main(argv: list[str]) -> int:
    """`basisn robustness`: accuracy vs. variation, ADC bits and write-verify iterations on simulated crossbars."""
    parser = argparse.ArgumentParser(prog="basisn robustness", description=DESCRIPTION)
    parser.add_argument("--params", default="params.yaml", help="params file with a robustness: block")
    parser.add_argument("--profile", default=None, help="profile (default: `profile:` in the params file)")
    parser.add_argument("--dense", default="outputs/train/model.pt", help="dense baseline (save_model file)")
    parser.add_argument("--basisn", default="outputs/finetune/model.pt", help="fine-tuned BasisN model file")
    parser.add_argument("--data-root", default="data/raw", help="dataset root (basisn.data.build_loaders)")
    parser.add_argument("--out", default="outputs/robustness", help="output directory (replaced atomically)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    try:
        params = params_module.load(args.params, args.profile)
        settings = parse_settings(params.get("robustness"))
        check_writable(Path(args.out))  # before minutes of simulation, not after
    except ValueError as error:  # ParamsError, RobustnessParamsError, OutputError
        print(f"basisn: {error}", file=sys.stderr)
        return 2
    try:
        with output_lock(Path(args.out)):  # one writer of --out at a time; a second run stops here
            return _robustness_run(args, params, settings)
    except (OutputError, ModelFileError, DataError) as error:  # held by another run; bad model file; no data
        print(f"basisn: {error}", file=sys.stderr)
        return 2


def _robustness_run(args: argparse.Namespace, params: dict, settings: Settings) -> int:
    paths = {"dense": Path(args.dense), "basisn": Path(args.basisn)}
    for mapping in settings["mappings"]:
        if not paths[mapping].is_file():
            print(f"basisn: --{mapping} {paths[mapping]} not found; run the pipeline first", file=sys.stderr)
            return 2
    if settings["threads"] is not None:
        torch.set_num_threads(settings["threads"])
    started = time.perf_counter()
    from basisn.data import build_loaders, check_dataset_files  # at run time: tests trap the loaders

    models, metas = {}, {}
    for mapping in settings["mappings"]:
        models[mapping], metas[mapping] = load_model(paths[mapping])
        if mapping == "basisn" and not hasattr(models[mapping], "basisn_bank"):
            print(f"basisn: --basisn {paths[mapping]} is not a BasisN model file", file=sys.stderr)
            return 2
    datasets = {meta["dataset"] for meta in metas.values()}
    if len(datasets) != 1:
        print(f"basisn: the model files were trained on different datasets: {sorted(datasets)}", file=sys.stderr)
        return 2
    dataset = datasets.pop()
    check_dataset_files(dataset, args.data_root)
    loaders = build_loaders(
        dataset,
        args.data_root,
        settings["batch_size"],
        seed=0,
        subset=settings["calibration_images"],
        test_subset=settings["test_images"],
        augment=False,
    )
    test = _batches(loaders.test)
    calibration_images = torch.cat([x for x, _ in _batches(loaders.train, settings["calibration_images"])])
    size = (1, loaders.in_channels, *loaders.input_size)
    shapes = {mapping: layer_shapes(models[mapping], size) for mapping in settings["mappings"]}
    load_seconds = time.perf_counter() - started

    table, summary, facts = run(settings, models, test, calibration_images, shapes, progress=not args.quiet)
    facts.update(
        load_seconds=load_seconds,
        stage_seconds=time.perf_counter() - started,
        dataset=dataset,
        profile=params["profile"],
        models={m: dict(path=str(paths[m]), meta=metas[m]) for m in settings["mappings"]},
        calibration_images=len(calibration_images),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        settings=settings.raw,
        nominal_sim=settings.nominal.as_dict(),
        hardware=settings.hardware.as_dict(),
        cost_model=dict(preset=settings["preset"], crossbars=settings["crossbars"], batch=settings["cost_batch"]),
    )
    with atomic_directory(Path(args.out)) as out:
        table.to_csv(out / "robustness.csv", index=False)
        summary.to_csv(out / "summary.csv", index=False)
        atomic_write_json(out / "robustness.json", _plain(facts))
    print(
        f"robustness: {facts['simulations']} simulations of {facts['test_images']} test images in "
        f"{facts['stage_seconds']:.0f}s; digital accuracy "
        + ", ".join(f"{m} {a:.4f}" for m, a in facts["digital_accuracy"].items())
        + f" -> {args.out}"
    )
    return 0


def _plain(value: Any) -> Any:
    """JSON-safe copy (tuples to lists, non-finite floats to None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.loads(json.dumps(value, default=str))
