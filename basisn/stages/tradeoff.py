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
)
from basisn.stages.hardware import load_block

SCHEMES_PRICED = ("ideal", "reprogram", "reprogram_best", "basisn")
RATIO_BASELINES = {"reprogram_best": "best", "ideal": "ideal"}  # besides plain reprogram (no suffix)
ASSIGNMENT_KNOBS = ("group_lasso", "harden_at")  # finetune keys that only act on a learned group assignment


# --------------------------------------------------------------------------------------------------------------
# The grid.
# --------------------------------------------------------------------------------------------------------------
def configurations(p: dict) -> list[dict]:
    """Every (G, coef_bits, option, fine-tune) the stage trains, with its effective decompose/finetune blocks.

    `short` rows for the whole grid, then `full` rows for the main configurations. Rows whose effective settings
    are identical (an option that only changes the group assignment, at G = 1) share one training: the later ones
    name the first in `same_as`.
    """
    t = p["tradeoff"]
    rows: list[dict] = []
    grid = [(g, b, name, "short") for g in t["groups"] for b in t["coef_bits"] for name in t["options"]]
    grid += [(g, p["decompose"]["coef_bits"], name, "full") for name, groups in t["full"].items() for g in groups]
    seen: dict[str, str] = {}
    for groups, coef_bits, option, schedule in grid:
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
        fingerprint = params_module.fingerprint(
            p["data"], subset, p["model"], p["train"], p["seed"], decompose, finetune
        )
        rows.append(
            dict(
                key=key,
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
    arguments.add_argument("--dense", default="outputs/train/model.pt")
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
    data = {"short": loaders(p, subset=t["finetune_subset"])}
    if any(row["schedule"] == "full" for row in rows):
        data["full"] = loaders(p)
    dense_accuracy = evaluate(dense, data["short"].test, data["short"].num_classes)["accuracy"]
    root = CHECKPOINT_ROOT / f"tradeoff-{params_module.fingerprint(p['data'], p['model'], p['train'], p['seed'])}"
    papers = {name: paper_shapes(name) for name in t["networks"]}
    results, costs, done = [], [], {}
    for index, row in enumerate(rows, 1):
        settings = {k: v for k, v in row.items() if k not in ("decompose", "finetune", "fingerprint")}
        model, report = to_basisn(copy.deepcopy(dense), **row["decompose"], seed=p["seed"])
        result = _configuration_result(row, p, args, model, report, dense, data, root, done)
        done.setdefault(row["key"], result)
        results.append(
            dict(
                settings,
                **result,
                n_basis=row["decompose"]["n_basis"],
                segment_len=row["decompose"]["segment_len"],
                coef_quant=row["decompose"]["coef_quant"],
                dense_accuracy=dense_accuracy,
                accuracy_minus_dense_pp=100 * (result["accuracy"] - dense_accuracy),
            )
        )
        model_shapes = priced_shapes(model, (meta["in_channels"], *meta["input_size"]))
        networks = {MODEL_NETWORK: model_shapes} | papers
        cost = configuration_costs(model_shapes.basis, networks, configs, hw["report_crossbars"], hw["batch"])
        costs.append(cost.assign(key=row["key"]))
        print(
            f"tradeoff {index}/{len(rows)} {row['key']}: accuracy {result['accuracy']:.4f} "
            f"({100 * (result['accuracy'] - dense_accuracy):+.2f} pp vs dense)",
            flush=True,
        )
    with atomic_directory(Path(args.out)) as out:
        pd.DataFrame(results).to_csv(out / "results.csv", index=False)
        pd.concat(costs, ignore_index=True).to_csv(out / "costs.csv", index=False)
        atomic_write_json(
            out / "params.json",
            dict(
                tradeoff=t,
                decompose=p["decompose"],
                finetune=p["finetune"],
                hardware=dict(preset=hw["preset"], presets=list(configs), report_crossbars=hw["report_crossbars"]),
                profile=p["profile"],
                dense_accuracy=dense_accuracy,
            ),
        )
    print(f"tradeoff: {len(rows)} configurations -> {args.out}")
    return 0


def _configuration_result(
    row: dict, p: dict, args: argparse.Namespace, model, report, dense, data: dict, root: Path, done: dict
) -> dict:
    """Accuracy (and reconstruction) of one configuration: shared with an identical earlier row, read back from
    the record of an earlier run, taken from the finetune stage, or trained now (and recorded)."""
    from basisn.train import TrainConfig, evaluate, fit

    record = root / row["fingerprint"] / "row.json"
    if row["same_as"] is not None:
        return dict(done[row["same_as"]])
    if record.exists():
        print(f"tradeoff {row['key']}: finished by an earlier run, read from {record}", flush=True)
        return json.loads(record.read_text())
    test, num_classes = data["short"].test, data["short"].num_classes
    result = dict(
        report_totals(pd.DataFrame(report)),
        decomposed_accuracy=evaluate(model, test, num_classes)["accuracy"],
    )
    reused = _finetune_stage_result(row, p, Path(args.finetune_dir)) if row["schedule"] == "full" else None
    if reused is not None:
        result.update(accuracy=reused["test_accuracy"], trained_by="finetune stage")
    else:
        config = TrainConfig(**row["finetune"], seed=p["seed"])
        metrics = fit(model, data[row["schedule"]].train, test, config, root / row["fingerprint"], teacher=dense)
        result.update(accuracy=metrics["test_accuracy"], trained_by="tradeoff stage")
        result["train_seconds"] = metrics["train_seconds"]
    result["finetune_epochs"] = row["finetune"]["epochs"]
    atomic_write(record, lambda tmp, r=result: tmp.write_text(json.dumps(r, sort_keys=True) + "\n"))
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
