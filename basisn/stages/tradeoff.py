"""`tradeoff` stage (`basisn tradeoff`): accuracy AND cost of the same trained models, so the headline rests on
one configuration.

The paper's claim has two halves that must hold together: cycles and EDP below 1% of reprogramming, and negligible
accuracy loss. The cost model reaches the first half only with group-sparse coefficients (G > 1), so accuracy must
be measured on exactly those models. For every G in `tradeoff.groups` x coef_bits in `tradeoff.coef_bits` x
training option in `tradeoff.options` (named overrides of the `decompose:` and `finetune:` blocks,
docs/method.md §1.3) this stage

1. decomposes the dense baseline with that configuration (the params' n_basis and segment_len),
2. fine-tunes it: briefly (`tradeoff.finetune_epochs` epochs on a fixed class-balanced subset of
   `tradeoff.finetune_subset` train images: a trend, not a converged number), and, for the main configurations
   (`tradeoff.full`: option -> the G it is run at; the best option and the fixed-mask reference), also with the
   full `finetune:` schedule on every train image,
3. scores it on the test set, and
4. prices exactly that configuration (n, m, G, coef_bits, coef_quant) with the cost model: the trained model's
   own layers and the paper's networks of `tradeoff.networks`, at `hardware.report_crossbars`, under
   `hardware.preset` and every `hardware.compare_presets` preset.

Outputs (docs/figures.md): results.csv (one row per trained configuration), costs.csv (one row per configuration
x network x N x preset: BasisN / reprogram, / the best reprogramming schedule, / ideal), params.json.
`tradeoff.best` names the option the README's answer is about (the notebook reads it from params.json).
Each finished configuration is kept under checkpoints/tradeoff-<hash>/ (and a full fine-tune checkpoints every
epoch), so a killed stage resumes where it stopped; the output directory is replaced only at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from basisn import params as params_module
from basisn.atomic import atomic_directory, atomic_write, atomic_write_json
from basisn.basis import to_basisn
from basisn.hardware import PRESETS, ratios, sweep
from basisn.hardware.networks import paper_shapes
from basisn.hardware.settings import resolve_block
from basisn.params import MODEL_NETWORK
from basisn.stages.common import (
    CHECKPOINT_ROOT,
    load_stage_model,
    loaders,
    one_line_errors,
    parser,
    prepare,
    report_totals,
    train_config,
)
from basisn.stages.hardware import load_block

SCHEMES_PRICED = ("ideal", "reprogram", "reprogram_best", "basisn")
RATIO_BASELINES = {"reprogram_best": "best", "ideal": "ideal"}  # besides plain reprogram (no suffix)
ASSIGNMENT_KNOBS = ("group_lasso", "harden_at")  # finetune keys that only act on a learned group assignment


# --------------------------------------------------------------------------------------------------------------
# The grid.
# --------------------------------------------------------------------------------------------------------------
def seeds(p: dict) -> list[int]:
    """The replicate seeds of the full fine-tunes: `seed`, `seed` + 1, ... (`tradeoff.seeds` of them)."""
    return [p["seed"] + k for k in range(p["tradeoff"]["seeds"])]


def configurations(p: dict) -> list[dict]:
    """Every (G, coef_bits, option, fine-tune, seed) the stage trains, with its effective decompose/finetune blocks.

    `short` rows for the whole grid (at the params' seed only: a trend), then `full` rows for the main
    configurations at every replicate seed (`seeds`; each seed has its own dense baseline, data order,
    decomposition and fine-tune). `key` names the configuration and is the same for all its seeds. Rows whose
    effective settings are identical (an option that only changes the group assignment, at G = 1) share one
    training: the later ones name the first in `same_as`.
    """
    t = p["tradeoff"]
    rows: list[dict] = []
    grid = [(g, b, name, "short", p["seed"]) for g in t["groups"] for b in t["coef_bits"] for name in t["options"]]
    grid += [
        (g, p["decompose"]["coef_bits"], name, "full", seed)
        for seed in seeds(p)
        for name, groups in t["full"].items()
        for g in groups
    ]
    seen: dict[str, str] = {}
    for groups, coef_bits, option, schedule, seed in grid:
        overrides = t["options"][option] or {}
        decompose = params_module.merge(p["decompose"], overrides.get("decompose") or {})
        decompose.update(groups=groups, coef_bits=coef_bits)
        finetune = params_module.merge(p["finetune"], overrides.get("finetune") or {})
        if groups == 1:  # one group: nothing to assign, the assignment's knobs do nothing (one training for all)
            decompose["assignment"] = p["decompose"]["assignment"]
            finetune.update({k: p["finetune"][k] for k in ASSIGNMENT_KNOBS})
        if schedule == "short":
            epochs = t["finetune_epochs"]
            finetune.update(epochs=epochs, warmup_epochs=min(finetune["warmup_epochs"], epochs))
        subset = t["finetune_subset"] if schedule == "short" else p["data"]["subset"]
        key = f"G{groups}-b{coef_bits}-{option}-{schedule}"
        fingerprint = params_module.fingerprint(p["data"], subset, p["model"], p["train"], seed, decompose, finetune)
        rows.append(
            dict(
                key=key,
                seed=seed,
                groups=groups,
                coef_bits=coef_bits,
                option=option,
                schedule=schedule,
                train_images_subset=subset,
                decompose=decompose,
                finetune=finetune,
                fingerprint=fingerprint,
                same_as=seen.get(fingerprint),
            )
        )
        seen.setdefault(fingerprint, key)
    return rows


# --------------------------------------------------------------------------------------------------------------
# Cost of one configuration.
# --------------------------------------------------------------------------------------------------------------
def configuration_costs(
    spec: Any, networks: dict[str, Any], configs: dict[str, Any], crossbars: list[int], batch: int
) -> pd.DataFrame:
    """BasisN / reprogram, / reprogram_best and / ideal (cycles, latency, energy, EDP) of one basis `spec`.

    `networks`: name -> NetworkShapes; a plain network takes `spec`, a basis-mapped one (the trained model) keeps
    its own basis, which is `spec` by construction. One row per network x N x preset (docs/figures.md).
    """
    frames = []
    nets = {name: shapes.with_basis(spec) for name, shapes in networks.items()}
    for preset_name, config in configs.items():
        frame = sweep(nets, config, crossbars, schemes=SCHEMES_PRICED, batch=batch)
        frames.append(ratios(frame, others=RATIO_BASELINES).assign(preset=preset_name))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------------------------
# The stage.
# --------------------------------------------------------------------------------------------------------------
def _finetune_stage_result(row: dict, p: dict, finetune_dir: Path) -> dict | None:
    """The finetune stage's metrics when it trained exactly this configuration (same params), else None."""
    try:
        stage_params = json.loads((finetune_dir / "params.json").read_text())
        metrics = json.loads((finetune_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same = all(stage_params.get(k) == p[k] for k in ("data", "model", "train", "seed"))
    same = same and stage_params.get("decompose") == row["decompose"]
    same = same and stage_params.get("finetune") == row["finetune"]
    return metrics if same and row["train_images_subset"] == p["data"]["subset"] else None


@one_line_errors
def main(argv: list[str]) -> int:
    """`tradeoff` stage entry point: every check before any work, then the grid."""
    arguments = parser(
        "tradeoff", "accuracy and cost of the same models over G x coef_bits x option", "outputs/tradeoff"
    )
    arguments.add_argument("--dense", default="outputs/train/model.pt", help="dense baseline (the train stage's model)")
    arguments.add_argument(
        "--finetune-dir",
        default="outputs/finetune",
        help="the finetune stage's output: a main configuration it trained with the same params is reused",
    )
    args = arguments.parse_args(argv)
    p, lock = prepare(args, layer_names=True)
    hw, config, _ = resolve_block(load_block(Path(args.params), args.profile))
    configs = {hw["preset"]: config} | {name: PRESETS[name] for name in hw["compare_presets"] if name != hw["preset"]}
    dense, meta = load_stage_model(Path(args.dense), "train", basis_mapped=False)
    with lock:
        return _stage(p, args, dense, meta, hw, configs)


def _stage(p: dict, args: argparse.Namespace, dense: torch.nn.Module, meta: dict, hw: dict, configs: dict) -> int:
    from basisn.train import evaluate

    t = p["tradeoff"]
    rows = configurations(p)
    root = CHECKPOINT_ROOT / f"tradeoff-{params_module.fingerprint(p['data'], p['model'], p['train'], p['seed'])}"
    context = dict(p=p, dense=str(args.dense), root=str(root), meta=meta)
    results_of = _run_trainings(rows, p, args, context)
    test_data = _loaders_of(p, "short", p["seed"])  # the test set is the same for every schedule and seed
    baselines = {seed: _dense_of(context, seed) for seed in seeds(p)}
    dense_accuracy = {
        seed: evaluate(model, test_data.test, test_data.num_classes)["accuracy"] for seed, model in baselines.items()
    }
    papers = {name: paper_shapes(name) for name in t["networks"]}
    results, costs = [], []
    for row in rows:
        seed, result = row["seed"], results_of[row["key"], row["seed"]]
        settings = {k: v for k, v in row.items() if k not in ("decompose", "finetune", "fingerprint")}
        results.append(
            dict(
                settings,
                **result,
                n_basis=row["decompose"]["n_basis"],
                segment_len=row["decompose"]["segment_len"],
                coef_quant=row["decompose"]["coef_quant"],
                dense_accuracy=dense_accuracy[seed],
                accuracy_minus_dense_pp=100 * (result["accuracy"] - dense_accuracy[seed]),
            )
        )
        if seed == p["seed"]:  # the cost depends on the configuration, not on the trained values: priced once
            model, _ = to_basisn(copy.deepcopy(dense), **row["decompose"], seed=seed)
            model_shapes = priced_shapes(model, (meta["in_channels"], *meta["input_size"]))
            networks = {MODEL_NETWORK: model_shapes} | papers
            cost = configuration_costs(model_shapes.basis, networks, configs, hw["report_crossbars"], hw["batch"])
            costs.append(cost.assign(key=row["key"]))
    trained_by = {seed: "tradeoff stage" for seed in seeds(p)} | {p["seed"]: "train stage"}
    dense_rows = [dict(seed=s, dense_accuracy=dense_accuracy[s], trained_by=trained_by[s]) for s in seeds(p)]
    with atomic_directory(Path(args.out)) as out:
        pd.DataFrame(results).to_csv(out / "results.csv", index=False)
        pd.DataFrame(dense_rows).to_csv(out / "dense.csv", index=False)
        pd.concat(costs, ignore_index=True).to_csv(out / "costs.csv", index=False)
        atomic_write_json(
            out / "params.json",
            dict(
                tradeoff=t,
                seeds=seeds(p),
                decompose=p["decompose"],
                finetune=p["finetune"],
                hardware=dict(preset=hw["preset"], presets=list(configs), report_crossbars=hw["report_crossbars"]),
                profile=p["profile"],
                dense_accuracy=dense_accuracy[p["seed"]],
            ),
        )
    print(f"tradeoff: {len(rows)} trained configurations (x seed) -> {args.out}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# The trainings, in `tradeoff.workers` processes.
# --------------------------------------------------------------------------------------------------------------
def _run_trainings(rows: list[dict], p: dict, args: argparse.Namespace, context: dict) -> dict:
    """(key, seed) -> result of every row: shared with an identical row, read back from an earlier run's record,
    taken from the finetune stage, or trained, the dense baselines of the other seeds first.

    The trainings are independent, so `tradeoff.workers` processes run them side by side, each with an equal
    share of the torch threads (on the 2-core reference machine this gained nearly nothing, docs/benchmarks.md;
    it is for machines with more cores). A task's result does not depend on which worker runs it or in which
    order; it does depend on the threads a worker has (float sums), recorded as `torch_threads` in the rows.
    """
    results: dict = {}
    todo = []
    for row in rows:
        if row["same_as"] is not None:
            continue
        record = _record_path(row, context)
        reused = None
        if not record.exists() and row["schedule"] == "full" and row["seed"] == p["seed"]:
            reused = _finetune_stage_result(row, p, Path(args.finetune_dir))
        if record.exists():
            print(f"tradeoff {row['key']} seed {row['seed']}: finished by an earlier run, read from {record}")
            results[row["key"], row["seed"]] = json.loads(record.read_text())
        elif reused is not None:
            results[row["key"], row["seed"]] = _reused_result(row, reused, context)
        else:
            todo.append(row)
    dense_tasks = [("dense", seed) for seed in seeds(p)[1:] if not _dense_path(context, seed).exists()]
    workers = p["tradeoff"]["workers"]
    threads = max(1, torch.get_num_threads() // workers)  # per training, however few remain: same numbers
    workers = min(workers, len(todo) + len(dense_tasks))
    done = _in_workers(dense_tasks, [("row", row) for row in todo], context, workers, threads)
    results |= done
    for row in rows:  # identical settings: the first row's result
        if row["same_as"] is not None:
            results[row["key"], row["seed"]] = dict(results[row["same_as"], row["seed"]])
    return results


def _in_workers(dense_tasks: list, row_tasks: list, context: dict, workers: int, threads: int) -> dict:
    """Run the dense baselines, then each row once its seed's baseline exists, with `threads` torch threads each;
    `workers` processes (1: here)."""
    total = len(dense_tasks) + len(row_tasks)
    if workers <= 1:
        results, before = {}, torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for index, task in enumerate(dense_tasks + row_tasks, 1):
                results |= _run_task(task, context)
                _progress(index, total, task)
        finally:
            torch.set_num_threads(before)
        return results
    import concurrent.futures as futures
    import multiprocessing

    pool = futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=(threads,)
    )
    results: dict = {}
    with pool:
        waiting = {seed for _, seed in dense_tasks}
        pending = {pool.submit(_run_task, task, context): task for task in dense_tasks}
        held = [task for task in row_tasks if task[1]["seed"] in waiting]
        pending |= {pool.submit(_run_task, task, context): task for task in row_tasks if task not in held}
        finished = 0
        while pending:
            complete, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            for future in complete:
                task = pending.pop(future)
                results |= future.result()  # a failed training raises here, in the stage
                finished += 1
                _progress(finished, total, task)
                if task[0] == "dense":
                    ready = [t for t in held if t[1]["seed"] == task[1]]
                    held = [t for t in held if t[1]["seed"] != task[1]]
                    pending |= {pool.submit(_run_task, t, context): t for t in ready}
    return results


def _progress(index: int, total: int, task: tuple) -> None:
    what = f"dense baseline seed {task[1]}" if task[0] == "dense" else f"{task[1]['key']} seed {task[1]['seed']}"
    print(f"tradeoff: {index}/{total} trainings done ({what})", flush=True)


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


_CACHE: dict = {}  # per process: loaders, dense baselines and their teacher caches, reused by its later tasks


def _run_task(task: tuple, context: dict) -> dict:
    """One training: a dense baseline of another seed ({} back: it is a file) or a row ((key, seed) -> result)."""
    kind, what = task
    if kind == "dense":
        _train_dense(context, what)
        return {}
    return {(what["key"], what["seed"]): _train_row(what, context)}


def _loaders_of(p: dict, schedule: str, seed: int):
    key = ("loaders", schedule, seed)
    if key not in _CACHE:
        subset = p["tradeoff"]["finetune_subset"] if schedule == "short" else "params"
        _CACHE[key] = loaders(dict(p, seed=seed), subset=subset)
    return _CACHE[key]


def _dense_path(context: dict, seed: int) -> Path:
    return Path(context["root"]) / f"dense-seed{seed}" / "model.pt"


def _dense_of(context: dict, seed: int) -> torch.nn.Module:
    """The dense baseline of `seed`: the train stage's model at the params' seed, else the one trained here."""
    if ("dense", seed) not in _CACHE:
        p = context["p"]
        path = Path(context["dense"]) if seed == p["seed"] else _dense_path(context, seed)
        _CACHE["dense", seed] = load_stage_model(path, "train", basis_mapped=False)[0]
    return _CACHE["dense", seed]


def _train_dense(context: dict, seed: int) -> None:
    """The dense baseline of replicate `seed`, trained exactly as the train stage would with that seed (its
    checkpoints under the stage's root, so a killed stage resumes), saved beside them."""
    from basisn.checkpoints import save_model
    from basisn.stages.train import build_dense
    from basisn.train import fit

    p = dict(context["p"], seed=seed)
    data = _loaders_of(context["p"], "full", seed)
    model = build_dense(p, data)
    path = _dense_path(context, seed)
    fit(model, data.train, data.test, train_config(p, "train"), path.parent, evaluate_each_epoch=False)
    save_model(model.cpu(), path, dict(context["meta"], profile=p["profile"]))


def _train_row(row: dict, context: dict) -> dict:
    """Decompose the row's seed's baseline with its settings, score it, fine-tune it (distilled from that baseline,
    whose logits this process computes once per seed), score it; recorded, so a rerun reads it back."""
    from basisn.train import TeacherCache, TrainConfig, fit

    seed = row["seed"]
    model, result = _decomposed(row, context)
    data = _loaders_of(context["p"], row["schedule"], seed)
    teacher = _CACHE.setdefault(("teacher", seed), TeacherCache(_dense_of(context, seed)))
    config = TrainConfig(**row["finetune"], seed=seed)
    directory = _record_path(row, context).parent
    metrics = fit(model, data.train, data.test, config, directory, teacher=teacher, evaluate_each_epoch=False)
    result.update(
        accuracy=metrics["test_accuracy"],
        trained_by="tradeoff stage",
        train_seconds=metrics["train_seconds"],
        torch_threads=torch.get_num_threads(),
    )
    return _recorded(row, context, result)


def _reused_result(row: dict, reused: dict, context: dict) -> dict:
    """A full row the finetune stage trained with the same params: its accuracy, and the decomposition's scores."""
    _, result = _decomposed(row, context)
    return _recorded(row, context, dict(result, accuracy=reused["test_accuracy"], trained_by="finetune stage"))


def _decomposed(row: dict, context: dict) -> tuple[torch.nn.Module, dict]:
    """The row's seed's baseline decomposed with the row's settings, and its reconstruction and test scores."""
    from basisn.train import evaluate

    seed = row["seed"]
    model, report = to_basisn(copy.deepcopy(_dense_of(context, seed)), **row["decompose"], seed=seed)
    data = _loaders_of(context["p"], row["schedule"], seed)
    scores = dict(
        report_totals(pd.DataFrame(report)),
        decomposed_accuracy=evaluate(model, data.test, data.num_classes)["accuracy"],
        finetune_epochs=row["finetune"]["epochs"],
    )
    return model, scores


def _record_path(row: dict, context: dict) -> Path:
    return Path(context["root"]) / row["fingerprint"] / "row.json"


def _recorded(row: dict, context: dict, result: dict) -> dict:
    """`result`, written to the row's record (atomically) so that a rerun reads it back instead of training."""
    atomic_write(_record_path(row, context), lambda tmp: tmp.write_text(json.dumps(result, sort_keys=True) + "\n"))
    return result


def priced_shapes(model: torch.nn.Module, input_size: tuple[int, ...]) -> Any:
    """The cost model's shapes of a trained configuration, and with them its basis (n, m, G, coefficient bits).

    A model decomposed with a learned or dynamic assignment (read back from a record instead of trained) still has
    unassigned segments, which the cost model refuses; its shapes are those of any hardened copy (the cost does
    not depend on which group a segment uses), so a copy is hardened here.
    """
    from basisn import parallel
    from basisn.hardware import layer_shapes

    if parallel.assignment_pending(model):
        model = copy.deepcopy(model)
        parallel.harden(model)
    return layer_shapes(model, input_size, name=MODEL_NETWORK)
