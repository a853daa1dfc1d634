"""Test accuracy of the dense baseline and of BasisN on simulated analog crossbars (the robustness stage's work:
basisn.stages.robustness reads the models and the data and writes the files).

For every sweep of the `robustness:` block of params.yaml (one SimConfig field, or several tied together, varied
around a nominal operating point) and every mapping, the stage programs the crossbars with each seed
(`basisn.hardware.sim.simulate`), runs a fixed class-balanced test subset through them and records the accuracy
and the logits' relative error against the digital model. The cost model (`basisn.hardware.cost.evaluate`)
prices every row at its write-verify iterations, which gives the cost/accuracy picture of the reprogramming
baseline (fewer verify iterations: fewer cycles, less accurate weights) next to BasisN (basis written once).

The stage's outputs (written atomically into --out): robustness.csv (one row per sweep x mapping x value x seed),
summary.csv (mean and spread over seeds, with the cost model's numbers), robustness.json (everything the run
used). docs/simulation.md describes the columns.
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from basisn.hardware.sim import FIELD_NAMES, MAPPINGS, SimConfig, calibrate, simulate, verify_error_std

# The nominal operating point: SimConfig fields not shared with the hardware preset. Sources in docs/simulation.md.
NOMINAL_SIM: dict[str, Any] = {
    "sigma_write": 0.1,  # one write's spread, 10 % of the conductance range: the example value of NeuroSim's
    # `--vari` option (DNN_NeuroSim_V1.4 inference.py: "e.g. 0.1 standard deviation").
    "verify_tolerance": 0.02,  # 2 % acceptance range: IBM aihwkit ReRamCMONoiseModel default.
    "basis_verify_iters": 100,  # our assumption: the basis is written once, so it can afford many iterations.
    "adc_bits": 8,  # ISAAC (ISCA 2016) Table I: 8-bit ADCs.
    "adc_range": "calibrated",
    "on_off_ratio": 10.0,  # NeuroSim DNN_NeuroSim_V1.4 inference.py --onoffratio default.
    "read_noise": 0.0,  # off in the default sweeps (its sampling triples the run time); aihwkit suggests ~0.01.
    "stuck_on": 0.0,
    "stuck_off": 0.0,
}

DEFAULT_SWEEPS: dict[str, dict[str, Any]] = {
    # the spread itself: unverified writes (1 iteration), so the x axis is the conductance error's std
    "variation": {
        "fields": ["sigma_write"],
        "values": [0.0, 0.01, 0.02, 0.05, 0.1],
        "set": {"verify_iters": 1, "basis_verify_iters": 1},
    },
    # the ADC alone: exact devices
    "adc_bits": {"fields": ["adc_bits"], "values": [4, 5, 6, 8, 10], "set": {"sigma_write": 0.0}},
    # write-verify iterations of whatever the mapping programs: dense weights (per round) or the basis (once)
    "verify_iters": {"fields": ["verify_iters", "basis_verify_iters"], "values": [1, 3, 10, 30, 100], "set": {}},
}

DEFAULTS: dict[str, Any] = {
    "mappings": ["dense", "basisn"],
    "seeds": [0, 1, 2],
    "test_images": 192,  # class-balanced test subset (basisn.data.build_loaders test_subset)
    "calibration_images": 64,  # training images for the input and ADC ranges
    "batch_size": 128,
    "threads": 1,  # torch threads; 1 is robust on a shared 2-core machine (null: torch's default)
    "preset": "default",  # basisn.hardware preset: shared SimConfig fields and the cost model
    "crossbars": 16,  # N of the cost model
    "cost_batch": 1,  # B of the cost model
    "sim": {},  # SimConfig overrides of the nominal point (on top of NOMINAL_SIM and the preset)
    "sweeps": DEFAULT_SWEEPS,
}

CSV_COLUMNS = (
    "sweep mapping value seed deterministic accuracy logit_rel_error digital_accuracy sigma_write verify_iters "
    "effective_sigma adc_bits read_noise stuck_on stuck_off test_images"
).split()


class RobustnessParamsError(ValueError):
    """One line naming the robustness key, its value and what is allowed."""


# --------------------------------------------------------------------------------------------------------------
# Parameters.
# --------------------------------------------------------------------------------------------------------------
def _fail(key: str, value: Any, allowed: str) -> None:
    raise RobustnessParamsError(f"params: robustness.{key}={value!r} is not allowed; allowed: {allowed}")


def _int(key: str, value: Any, low: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(key, value, f"an integer >= {low}" + (" or null" if optional else ""))


@dataclass(frozen=True)
class Sweep:
    name: str
    fields: tuple[str, ...]
    values: tuple[Any, ...]
    set: dict[str, Any]

    def configs(self, nominal: SimConfig) -> list[tuple[Any, SimConfig]]:
        base = nominal.replace(**self.set)
        return [(value, base.replace(**dict.fromkeys(self.fields, value))) for value in self.values]


@dataclass(frozen=True)
class Settings:
    """The validated robustness block."""

    raw: dict[str, Any]
    nominal: SimConfig
    sweeps: tuple[Sweep, ...]
    hardware: Any

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]


def parse_settings(block: Any) -> Settings:
    """Validate the `robustness:` block (every key optional; defaults in DEFAULTS) before any work."""
    from basisn.hardware.config import PRESETS, preset

    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise RobustnessParamsError(f"params: robustness must be a mapping, got {block!r}")
    unknown = sorted(set(block) - set(DEFAULTS))
    if unknown:
        raise RobustnessParamsError(
            f"params: unknown key robustness.{unknown[0]}; allowed keys here: {', '.join(DEFAULTS)}"
        )
    raw = copy.deepcopy(DEFAULTS)
    raw.update(copy.deepcopy(block))
    mappings = raw["mappings"]
    if not isinstance(mappings, list) or not mappings or any(m not in MAPPINGS for m in mappings):
        _fail("mappings", mappings, f"a non-empty list of {', '.join(MAPPINGS)}")
    if len(set(mappings)) != len(mappings):
        _fail("mappings", mappings, "each mapping once")
    seeds = raw["seeds"]
    if not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds):
        _fail("seeds", seeds, "a non-empty list of distinct integers >= 0")
    for seed in seeds:
        _int("seeds", seed, 0)
    for key, low in (("test_images", 1), ("calibration_images", 1), ("batch_size", 1), ("crossbars", 1)):
        _int(key, raw[key], low)
    _int("cost_batch", raw["cost_batch"], 1)
    _int("threads", raw["threads"], 1, optional=True)
    if raw["preset"] not in PRESETS:
        _fail("preset", raw["preset"], ", ".join(PRESETS))
    hardware = preset(raw["preset"])
    if not isinstance(raw["sim"], dict):
        _fail("sim", raw["sim"], "a mapping of SimConfig fields")
    for key in raw["sim"]:
        if key not in FIELD_NAMES:
            raise RobustnessParamsError(
                f"params: unknown key robustness.sim.{key}; allowed keys here: {', '.join(FIELD_NAMES)}"
            )
    try:
        nominal = SimConfig.from_hardware(hardware, **dict(NOMINAL_SIM, **raw["sim"]))
    except ValueError as error:
        raise RobustnessParamsError(f"params: robustness.sim: {error}") from None
    sweeps = raw["sweeps"]
    if not isinstance(sweeps, dict):
        _fail("sweeps", sweeps, "a mapping of sweep name -> {fields, values, set}")
    parsed = []
    for name, spec in sweeps.items():
        key = f"sweeps.{name}"
        if not isinstance(spec, dict):
            _fail(key, spec, "a mapping with keys fields, values, set")
        extra = sorted(set(spec) - {"fields", "values", "set"})
        if extra:
            raise RobustnessParamsError(
                f"params: unknown key robustness.{key}.{extra[0]}; allowed: fields, values, set"
            )
        fields, values, overrides = spec.get("fields"), spec.get("values"), spec.get("set", {}) or {}
        if isinstance(fields, str):
            fields = [fields]
        if not isinstance(fields, list) or not fields or any(f not in FIELD_NAMES for f in fields):
            _fail(f"{key}.fields", fields, f"a non-empty list of SimConfig fields ({', '.join(FIELD_NAMES)})")
        if not isinstance(values, list) or not values:
            _fail(f"{key}.values", values, "a non-empty list of values of the swept field(s)")
        if not isinstance(overrides, dict) or any(f not in FIELD_NAMES for f in overrides):
            _fail(f"{key}.set", overrides, f"a mapping of SimConfig fields ({', '.join(FIELD_NAMES)})")
        sweep = Sweep(str(name), tuple(fields), tuple(values), dict(overrides))
        try:
            sweep.configs(nominal)
        except ValueError as error:
            raise RobustnessParamsError(f"params: robustness.{key}: {error}") from None
        parsed.append(sweep)
    if not parsed:
        _fail("sweeps", sweeps, "at least one sweep")
    return Settings(raw, nominal, tuple(parsed), hardware)


# --------------------------------------------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------------------------------------------
def canonical(config: SimConfig, mapping: str, has_dense_layers: bool) -> tuple[SimConfig, bool]:
    """The config with fields that cannot change this mapping's result normalised, and whether seeds matter.

    Configs equal after this give equal results, so each is simulated once per seed (sweeps share points).
    """
    changes: dict[str, Any] = {}
    if config.sigma_write == 0:
        changes.update(verify_iters=1, basis_verify_iters=1, verify_tolerance=0.0)
    if mapping == "dense":
        changes["basis_verify_iters"] = 1
    elif not has_dense_layers:
        changes["verify_iters"] = 1
    if config.adc_bits is None:
        changes["adc_range"] = "calibrated"
    deterministic = config.sigma_write == 0 and config.read_noise == 0 and config.stuck_on == 0 == config.stuck_off
    return config.replace(**changes), deterministic


def _logits(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model(images) for images, _ in batches])


def _score(logits: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    accuracy = float((logits.argmax(1) == labels).float().mean())
    error = float((logits - reference).norm() / reference.norm().clamp_min(1e-30))
    return accuracy, error


def _has_dense_layers(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules())


def _cost(settings: Settings, shapes: dict[str, Any], mapping: str, iters: int, cache: dict) -> dict[str, float]:
    """Cost model totals per inference for this mapping at `iters` write-verify iterations."""
    from basisn.hardware.cost import evaluate

    key = (mapping, iters)
    if key not in cache:
        config = settings.hardware.replace(verify_iters=iters)
        scheme = "reprogram" if mapping == "dense" else "basisn"
        totals = evaluate(shapes[mapping], config, scheme, settings["crossbars"], settings["cost_batch"]).totals
        cache[key] = {
            "cycles": float(totals["cycles"]),
            "energy_j": float(totals["energy_j"]),
            "edp_js": float(totals["edp_js"]),
            "program_once_cycles": float(totals["program_once_cycles"]),
            "fits": bool(totals.get("fits", False)),
        }
    return cache[key]


def run(
    settings: Settings,
    models: dict[str, nn.Module],
    test: list[tuple[torch.Tensor, torch.Tensor]],
    calibration_images: torch.Tensor,
    shapes: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Every sweep x mapping x value x seed; returns (rows, summary over seeds, run facts)."""
    from tqdm.auto import tqdm

    labels = torch.cat([y for _, y in test])
    digital = {mapping: _logits(models[mapping], test) for mapping in settings["mappings"]}
    digital_accuracy = {m: float((digital[m].argmax(1) == labels).float().mean()) for m in digital}
    dense_layers = {m: _has_dense_layers(models[m]) for m in settings["mappings"]}

    plan = []  # (sweep, mapping, value, config, canonical config, deterministic)
    for sweep in settings.sweeps:
        for mapping in settings["mappings"]:
            for value, config in sweep.configs(settings.nominal):
                key, deterministic = canonical(config, mapping, dense_layers[mapping])
                plan.append((sweep.name, mapping, value, config, key, deterministic))
    jobs = {}
    for _, mapping, _, _, key, deterministic in plan:
        for seed in [settings["seeds"][0]] if deterministic else settings["seeds"]:
            jobs.setdefault((mapping, key, seed), None)

    calibrations: dict[tuple, Any] = {}
    started = time.perf_counter()
    bar = tqdm(list(jobs), desc="robustness", unit="run", disable=not progress, file=sys.stdout)
    for mapping, config, seed in bar:
        bar.set_postfix_str(f"{mapping} seed {seed}")
        cal_key = (mapping, config.rows, config.cell_bits, config.weight_bits, config.input_bits)
        cal_key += (config.dac_bits, config.on_off_ratio)
        if config.needs_calibration() and cal_key not in calibrations:
            calibrations[cal_key] = calibrate(models[mapping], config, mapping, calibration_images)
        sim = simulate(models[mapping], config, mapping, seed, calibration=calibrations.get(cal_key))
        jobs[(mapping, config, seed)] = _score(_logits(sim, test), labels, digital[mapping])
    seconds = time.perf_counter() - started

    cost_cache: dict = {}
    table = _rows(settings, plan, jobs, digital_accuracy, len(labels))
    summary = summarize(table)
    if shapes is not None:
        costs = [
            _cost(settings, shapes, m, int(n), cost_cache) for m, n in zip(summary["mapping"], summary["verify_iters"])
        ]
        summary = pd.concat([summary, pd.DataFrame(costs, index=summary.index)], axis=1)
    facts = dict(
        digital_accuracy=digital_accuracy,
        simulations=len(jobs),
        calibrations=len(calibrations),
        simulate_seconds=seconds,
        test_images=len(labels),
    )
    return table, summary, facts


def _rows(
    settings: Settings, plan: list[tuple], jobs: dict, digital_accuracy: dict[str, float], test_images: int
) -> pd.DataFrame:
    """One row per sweep x mapping x value x seed (robustness.csv); seeds of a deterministic point share a run."""
    rows = []
    for sweep_name, mapping, value, config, key, deterministic in plan:
        iters = config.verify_iters_for(mapping)
        for seed in settings["seeds"]:
            accuracy, error = jobs[(mapping, key, settings["seeds"][0] if deterministic else seed)]
            rows.append(
                dict(
                    sweep=sweep_name,
                    mapping=mapping,
                    value=value,
                    seed=seed,
                    deterministic=deterministic,
                    accuracy=accuracy,
                    logit_rel_error=error,
                    digital_accuracy=digital_accuracy[mapping],
                    sigma_write=config.sigma_write,
                    verify_iters=iters,
                    effective_sigma=verify_error_std(config.sigma_write, config.verify_tolerance, iters),
                    adc_bits=config.adc_bits,
                    read_noise=config.read_noise,
                    stuck_on=config.stuck_on,
                    stuck_off=config.stuck_off,
                    test_images=test_images,
                )
            )
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds per sweep x mapping x value (std with ddof=1; 0 for deterministic rows)."""
    keys = ["sweep", "mapping", "value"]
    order = {name: index for index, name in enumerate(dict.fromkeys(table["sweep"]))}
    grouped = table.groupby(keys, sort=False, dropna=False)
    summary = grouped.agg(
        accuracy_mean=("accuracy", "mean"),
        accuracy_std=("accuracy", "std"),
        accuracy_min=("accuracy", "min"),
        accuracy_max=("accuracy", "max"),
        seeds=("seed", "count"),
        logit_rel_error_mean=("logit_rel_error", "mean"),
        logit_rel_error_std=("logit_rel_error", "std"),
        digital_accuracy=("digital_accuracy", "first"),
        deterministic=("deterministic", "first"),
        sigma_write=("sigma_write", "first"),
        verify_iters=("verify_iters", "first"),
        effective_sigma=("effective_sigma", "first"),
        adc_bits=("adc_bits", "first"),
        read_noise=("read_noise", "first"),
    ).reset_index()
    for column in ("accuracy_std", "logit_rel_error_std"):
        summary[column] = summary[column].fillna(0.0).where(~summary["deterministic"], 0.0)
    summary["accuracy_drop_pp"] = 100 * (summary["digital_accuracy"] - summary["accuracy_mean"])
    summary["_order"] = summary["sweep"].map(order)
    return summary.sort_values(["_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
