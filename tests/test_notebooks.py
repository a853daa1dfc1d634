"""The notebooks that write paper_figures/: each runs on the shipped fixtures, passed as parameters.

A notebook's defaults read the real stage outputs (outputs/...), like its DVC stage; the tests pass the stage's
`-p` paths with outputs/ replaced by the fixture directory (fixture_parameters). Every notebook is executed once,
the way its DVC stage runs it (`basisn notebook`, jupytext -> papermill, kernel
`basisn`), into a temporary --out; the tests then check the files each one writes (names, columns, rows), that a
second execution gives byte-identical files, that a failing notebook fails with its error shown and leaves the
previous files in place, that dvc.yaml declares exactly these files, and that the committed notebooks hold no
outputs. The executions run a few at a time (each is mostly kernel start-up and imports).

Fixtures: tests/fixtures/pipeline/ and tests/fixtures/hardware/ are small copies of real stage outputs, rebuilt by
tests/fixtures/make_fixtures.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jupytext
import pandas as pd
import pytest
import yaml

from basisn.hardware.cost import FITTING_OPTIONS, ROUND_OPTIONS
from basisn.hardware.fairness import CHOICES, favours

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
KERNEL = "basisn"
WORKERS = int(os.environ.get("BASISN_NOTEBOOK_WORKERS", "4"))
FIGURE, TABLE = ("pdf", "png"), ("csv", "tex", "md")

BEST_DIGITAL = ["cycles_ratio_best", "edp_ratio_best", "cycles_ratio_digital", "edp_ratio_digital"]
# notebook -> figures (stems) and tables (stem -> columns that must be there)
NOTEBOOKS: dict[str, dict] = {
    "overhead": {
        "figures": ["overhead_crossbars", "overhead_write_share"],
        "tables": {
            "overhead_crossbars": ["network", "input_size", "layers", "weights", "macs", "crossbars_needed"],
            "overhead_write_share": [
                "network",
                "n_crossbars",
                "fits",
                "write_time_share",
                "write_energy_share",
                "reprogram_over_ideal",
            ],
        },
    },
    "accuracy": {
        "figures": ["accuracy_profiles", "accuracy_per_class"],
        "tables": {
            "accuracy_profiles": [
                "profile",
                "dataset",
                "model",
                "status",
                "paper_setting",
                "test_samples",
                "dense_accuracy",
                "decomposed_accuracy",
                "basisn_accuracy",
                "basisn_folded_accuracy",
                "decomposed_minus_dense_pp",
                "basisn_minus_dense_pp",
                "paper_claim",
            ],
            "accuracy_training_cost": [
                "profile",
                "train_epochs",
                "train_seconds",
                "finetune_epochs",
                "finetune_seconds",
            ],
        },
    },
    "cycles": {
        "figures": ["cycles_vs_crossbars"],
        "tables": {
            "cycles_vs_crossbars": [
                "network",
                "n_crossbars",
                "ideal",
                "reprogram",
                "reprogram_best",
                "basisn",
                "digital",
                "floor_cycles",
                "basisn_over_reprogram",
                "basisn_over_best",
                "basisn_over_digital",
                "basisn_over_ideal",
            ],
        },
    },
    "headline": {
        "figures": ["headline_ratios", "headline_groups"],
        "tables": {
            "headline_ratios": [
                "network",
                "n_crossbars",
                "cycles_vs_reprogram",
                "edp_vs_reprogram",
                "cycles_vs_best",
                "edp_vs_best",
                "best_option",
                "cycles_vs_digital",
                "edp_vs_digital",
                "beats_digital_edp",
                "cycles_vs_ideal",
                "edp_vs_ideal",
            ],
            "headline_groups": ["network", "n_crossbars", "groups", "cycles_ratio", "edp_ratio", *BEST_DIGITAL],
            "headline_presets": ["preset", "network", "n_crossbars", "cycles_ratio", "edp_ratio", *BEST_DIGITAL],
        },
    },
    "energy": {
        "figures": ["energy_breakdown"],
        "tables": {
            "energy_breakdown": ["network", "n_crossbars", "scheme", "term", "energy_j", "share"],
            "energy_breakdown_memory": ["network", "n_crossbars", "scheme", "source", "term", "energy_j", "share"],
            "cost_model_choices": [
                "choice",
                "default",
                "alternative",
                "network",
                "n_crossbars",
                "edp_vs_best",
                "edp_vs_best_alternative",
                "favours_vs_best",
                "edp_vs_digital",
                "edp_vs_digital_alternative",
                "favours_vs_digital",
            ],
            "memory_headline": [
                "network",
                "n_crossbars",
                "memory",
                "cycles_vs_reprogram",
                "edp_vs_reprogram",
                "edp_vs_digital",
                "dominant_reprogram",
                "dominant_basisn",
                "dominant_digital",
            ],
            "storage": [
                "network",
                "groups",
                "dense_weight_bytes",
                "coef_bytes",
                "basis_bytes",
                "compression_ratio",
                "dense_fits_sram",
                "coef_fits_sram",
            ],
        },
    },
    "sensitivity": {
        "figures": ["sensitivity_accuracy", "sensitivity_hardware"],
        "tables": {
            "sensitivity_accuracy": [
                "n_basis",
                "coef_bits",
                "rel_error_mean",
                "decomposed_accuracy",
                "finetuned_accuracy",
                "basisn_cycles",
            ],
            "sensitivity_hardware": ["sweep", "value", "network", "n_crossbars", "cycles_ratio", "edp_ratio"],
        },
    },
    "tradeoff": {
        "figures": ["headline_tradeoff"],
        "tables": {
            "headline_tradeoff": [
                "key",
                "groups",
                "coef_bits",
                "option",
                "schedule",
                "seeds",
                "accuracy",
                "accuracy_sd",
                "dense_accuracy",
                "accuracy_loss_pp",
                "accuracy_loss_pp_sd",
                "accuracy_verdict",
                "vs_fixed",
                "cycles_vs_best",
                "edp_vs_best",
                "cycles_vs_reprogram",
                "edp_vs_reprogram",
                "cycles_vs_ideal",
                "edp_vs_ideal",
                "meets_both",
                "pareto_edp",
                "pareto_cycles",
            ],
            "headline_tradeoff_targets": [
                "groups",
                "option",
                "seeds",
                "accuracy_loss_pp",
                "accuracy_loss_pp_sd",
                "target_loss_pp",
                "miss_pp",
                "verdict",
            ],
            "headline_tradeoff_dense": ["seed", "dense_accuracy", "trained_by"],
        },
    },
    "learned_basis": {
        "figures": ["learned_basis_vectors", "learned_basis_coefficients"],
        "tables": {
            "learned_basis_coefficients": ["stage", "value", "count", "share"],
            "learned_basis_layers": ["name", "kind", "rel_error", "zero_share", "levels_used"],
        },
    },
    "claim_region": {
        "figures": ["claim_region_cycles", "claim_region_edp", "claim_region_digital", "sensitivity_tornado"],
        "tables": {
            "claim_region_min_write": [
                "network",
                "groups",
                "n_crossbars",
                "cycles_below_1pct_from_s",
                "edp_below_1pct_from_s",
            ],
            "sensitivity_tornado": ["field", "factor", "value", "cycles_ratio_change", "edp_ratio_change"],
            "cost_model_validation": ["name", "source", "published", "ours", "ratio", "in_band"],
        },
    },
}
REPEATED = "headline"  # executed twice to check byte-identical output (one is enough to keep the suite fast)
ABSENT = "outputs/hardware/absent-for-the-test"  # under the hardware stage's output directory, never written


def expected_files(name: str) -> set[str]:
    spec = NOTEBOOKS[name]
    files = {f"{stem}.{ext}" for stem in spec["figures"] for ext in FIGURE}
    return files | {f"{stem}.{ext}" for stem in spec["tables"] for ext in TABLE}


def fixture_path(stage_path: str) -> str:
    """The fixture that stands in for a stage output: outputs/hardware|robustness/... or outputs/<stage>/..."""
    for directory in ("hardware", "robustness"):
        if stage_path == f"outputs/{directory}" or stage_path.startswith(f"outputs/{directory}/"):
            return "tests/fixtures/" + stage_path.removeprefix("outputs/")
    if stage_path.startswith("outputs/"):
        return "tests/fixtures/pipeline/" + stage_path.removeprefix("outputs/")
    return stage_path


def fixture_parameters(name: str) -> list[str]:
    """The `-p KEY=VALUE` of the notebook's DVC stage, with every stage output replaced by its fixture."""
    _, stage = notebook_stages()[name]
    return [f"{key}={fixture_path(value)}" for key, value in re.findall(r"-p (\w+)=(\S+)", stage["cmd"])]


def run_notebook(name: str, out: Path, runs: Path, *parameters: str) -> subprocess.CompletedProcess:
    """`basisn notebook notebooks/NAME.py` (basisn.stages.notebook.main) in a process of its own."""
    args = [sys.executable, "-m", "basisn.cli", "notebook", f"notebooks/{name}.py", "--out", str(out)]
    args += ["--runs", str(runs), "-k", KERNEL]
    for parameter in parameters:
        args += ["-p", parameter]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="session")
def executed(tmp_path_factory) -> dict:
    """Every notebook once on the fixtures, one of them twice, and one failing run; in parallel."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        pytest.fail(f"jupyter kernel {KERNEL!r} is not installed: run `make venv` (it installs it into .venv)")
    base = tmp_path_factory.mktemp("notebooks")
    failing_out = base / "failing"
    failing_out.mkdir()
    (failing_out / "overhead_crossbars.png").write_bytes(b"previous figure")
    jobs = {name: (name, base / name, base / "runs" / name, *fixture_parameters(name)) for name in NOTEBOOKS}
    jobs["repeat"] = (REPEATED, base / "repeat", base / "runs" / "repeat", *fixture_parameters(REPEATED))
    jobs["failing"] = ("overhead", failing_out, base / "runs" / "failing", "hardware_dir=tests/fixtures/missing")
    # the reader's parameter cell: another network, N, preset, G and batch, recomputed from the cost model
    jobs["headline_reader"] = (
        "headline",
        base / "headline_reader",
        base / "runs" / "headline_reader",
        *fixture_parameters("headline"),
        *READER_PARAMETERS,
    )
    # a notebook run before `make repro`: its stage input is absent, and it says which stage to run
    jobs["before_repro"] = ("overhead", base / "before_repro", base / "runs" / "before_repro", f"hardware_dir={ABSENT}")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {key: pool.submit(run_notebook, *job) for key, job in jobs.items()}
        results = {key: future.result() for key, future in futures.items()}
    return {"results": results, "dirs": {key: job[1] for key, job in jobs.items()}, "runs": base / "runs"}


READER_PARAMETERS = [
    "compare_network=cifar_densenet121",
    "compare_crossbars=256",
    "compare_preset=neurram",
    "compare_groups=4",
    "compare_batch=16",
]


def output_of(executed: dict, key: str) -> Path:
    result = executed["results"][key]
    assert result.returncode == 0, f"notebook {key} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return executed["dirs"][key]


def table(executed: dict, notebook: str, stem: str) -> pd.DataFrame:
    return pd.read_csv(output_of(executed, notebook) / f"{stem}.csv")


@pytest.fixture(scope="session")
def hw() -> dict:
    return json.loads((FIXTURES / "hardware" / "hw_eval.json").read_text())


# ----------------------------------------------------------------------------------------------------------------
# Every notebook: the files it writes.
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_writes_its_files(executed, name):
    out = output_of(executed, name)
    assert {p.name for p in out.iterdir()} == expected_files(name)  # nothing else, no staging directory left
    executed_copy = executed["runs"] / name / f"{name}.ipynb"
    assert executed_copy.is_file(), "the executed copy goes to --runs"
    for stem in NOTEBOOKS[name]["figures"]:
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF-")
        assert (out / f"{stem}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    for stem, columns in NOTEBOOKS[name]["tables"].items():
        frame = pd.read_csv(out / f"{stem}.csv")
        assert len(frame) > 0, stem
        missing = set(columns) - set(frame.columns)
        assert not missing, f"{stem}.csv lacks {sorted(missing)}"
        markdown = (out / f"{stem}.md").read_text().splitlines()
        assert len(markdown) == len(frame) + 2, f"{stem}.md: header + separator + one line per row"
        assert markdown[0].startswith("|") and all(c.strip() in markdown[0] for c in frame.columns)
        latex = (out / f"{stem}.tex").read_text()
        assert "\\begin{tabular}" in latex and latex.count("\\\\") == len(frame) + 1


def test_notebook_prints_its_parameters(executed):
    import nbformat

    for name in NOTEBOOKS:
        output_of(executed, name)
        notebook = nbformat.read(executed["runs"] / name / f"{name}.ipynb", as_version=4)
        text = "".join(
            output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
        )
        assert "notebook parameters:" in text, name


# ----------------------------------------------------------------------------------------------------------------
# Rows: what each table must hold for the fixtures.
# ----------------------------------------------------------------------------------------------------------------
def test_overhead_rows(executed, hw):
    networks, crossbars = list(hw["networks"]), hw["params"]["crossbars"]
    needed = table(executed, "overhead", "overhead_crossbars")
    assert sorted(needed["network"]) == sorted(networks)
    assert {f"rounds_N{n}" for n in crossbars} <= set(needed.columns)
    for row in needed.itertuples():
        assert row.crossbars_needed == hw["networks"][row.network]["tiles_total"]
    share = table(executed, "overhead", "overhead_write_share")
    assert len(share) == len(networks) * len(hw["params"]["report_crossbars"])
    assert share["write_time_share"].between(0, 1).all() and share["write_energy_share"].between(0, 1).all()
    assert (share.loc[share["fits"], "write_time_share"] == 0).all()
    assert (share.loc[~share["fits"], "write_time_share"] > 0).all()


def test_accuracy_rows(executed):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    metrics = json.loads((FIXTURES / "pipeline" / "evaluate" / "metrics.json").read_text())
    profiles = table(executed, "accuracy", "accuracy_profiles")
    assert list(profiles["profile"]) == list(params["profiles"])  # every profile, in params.yaml's order
    run = profiles[profiles["status"] == "run"]
    assert list(run["profile"]) == [metrics["profile"]]
    for key in ("dense_accuracy", "decomposed_accuracy", "basisn_accuracy", "basisn_minus_dense_pp"):
        assert run[key].iloc[0] == pytest.approx(metrics[key])
    not_run = profiles[profiles["status"] == "not run"]
    assert len(not_run) == len(params["profiles"]) - 1
    numbers = ["dense_accuracy", "decomposed_accuracy", "basisn_accuracy", "basisn_minus_dense_pp", "test_samples"]
    assert not_run[numbers].isna().all().all(), "profiles not run must not show numbers"
    assert profiles["paper_claim"].str.len().gt(0).all()
    assert set(profiles.loc[profiles["paper_setting"], "dataset"]) <= {"cifar100", "imagenet"}
    cost = table(executed, "accuracy", "accuracy_training_cost")
    assert list(cost["profile"]) == [metrics["profile"]] and cost["finetune_epochs"].iloc[0] >= 1


def test_cycles_rows(executed, hw):
    cycles = table(executed, "cycles", "cycles_vs_crossbars")
    assert len(cycles) == len(hw["networks"]) * len(hw["params"]["crossbars"])
    assert (cycles.groupby("network")["ideal"].nunique() == 1).all(), "ideal does not depend on N"
    assert (cycles["reprogram"] >= cycles["floor_cycles"]).all()
    ratio = (cycles["basisn"] / cycles["reprogram"]).to_numpy()
    assert cycles["basisn_over_reprogram"].to_numpy() == pytest.approx(ratio)
    assert (cycles["reprogram_best"] <= cycles["reprogram"]).all(), "the best baseline is never slower"
    assert cycles["basisn_over_digital"].to_numpy() == pytest.approx((cycles["basisn"] / cycles["digital"]).to_numpy())
    assert {f"reprogram_{p}" for p in hw["params"]["compare_presets"]} <= set(cycles.columns)


def test_headline_rows(executed, hw):
    networks, report = len(hw["networks"]), len(hw["params"]["report_crossbars"])
    ratios = pd.read_csv(FIXTURES / "hardware" / "ratios.csv")
    headline = table(executed, "headline", "headline_ratios")
    assert len(headline) == networks * report
    merged = headline.merge(ratios[ratios["preset"] == hw["preset"]], on=["network", "n_crossbars"])
    assert len(merged) == len(headline)
    assert merged["cycles_vs_reprogram"].to_numpy() == pytest.approx(merged["cycles_ratio"].to_numpy())
    assert merged["edp_vs_reprogram"].to_numpy() == pytest.approx(merged["edp_ratio"].to_numpy())
    for mine, theirs in [("vs_best", "ratio_best"), ("vs_digital", "ratio_digital")]:
        for metric in ("cycles", "energy", "edp"):
            assert merged[f"{metric}_{mine}"].to_numpy() == pytest.approx(merged[f"{metric}_{theirs}"].to_numpy())
    assert (headline["cycles_vs_best"] >= headline["cycles_vs_reprogram"] * (1 - 1e-12)).all()
    assert (headline["edp_below_1pct"] == (headline["edp_vs_best"] < 0.01)).all(), "judged against the best baseline"
    assert (headline["beats_digital_edp"] == (headline["edp_vs_digital"] < 1)).all()
    assert set(headline["best_option"]) <= set(ROUND_OPTIONS) | set(FITTING_OPTIONS)
    groups = table(executed, "headline", "headline_groups")
    assert len(groups) == networks * report * len(hw["params"]["sweep"]["groups"])
    presets = table(executed, "headline", "headline_presets")
    assert set(presets["preset"]) == {hw["preset"], *hw["params"]["compare_presets"]}
    assert len(presets) == networks * report * (1 + len(hw["params"]["compare_presets"]))


def stage_json() -> dict:
    return json.loads((FIXTURES / "pipeline" / "tradeoff" / "params.json").read_text())


def stage_params_seeds(stage: dict) -> list[int]:
    return stage["seeds"]


def test_tradeoff_rows_are_the_trained_configurations_priced_by_the_cost_model(executed):
    from basisn.hardware import PRESETS, BasisSpec, NetworkShapes, evaluate
    from basisn.hardware.networks import paper_shapes

    stage = json.loads((FIXTURES / "pipeline" / "tradeoff" / "params.json").read_text())
    results = pd.read_csv(FIXTURES / "pipeline" / "tradeoff" / "results.csv")
    point = stage["tradeoff"]["headline"]
    frame = table(executed, "tradeoff", "headline_tradeoff")
    assert sorted(frame["key"]) == sorted(results["key"].unique()), "one row per trained configuration"
    by_key = results.groupby("key")
    stage = pd.DataFrame(
        dict(accuracy_stage=by_key["accuracy"].mean(), seeds_stage=by_key["seed"].nunique(),
             loss_sd_stage=by_key["accuracy_minus_dense_pp"].std(ddof=1))
    )  # fmt: skip
    merged = frame.merge(stage, left_on="key", right_index=True)
    assert merged["accuracy"].to_numpy() == pytest.approx(merged["accuracy_stage"].to_numpy())
    assert (merged["seeds"] == merged["seeds_stage"]).all()
    assert merged["accuracy_loss_pp_sd"].to_numpy() == pytest.approx(merged["loss_sd_stage"].to_numpy(), nan_ok=True)
    full = merged[merged["schedule"] == "full"]
    assert (full["seeds"] == len(stage_json()["seeds"])).all() and (full["seeds"] >= 2).all()
    short = merged[merged["schedule"] == "short"]
    assert (short["seeds"] == 1).all() and short["accuracy_loss_pp_sd"].isna().all()
    shapes = paper_shapes(point["network"])
    config = PRESETS[point["preset"]]
    for row in merged.itertuples():
        spec = BasisSpec(int(row.n_basis), int(row.segment_len), int(row.groups), int(row.coef_bits), row.coef_quant)
        ours = evaluate(NetworkShapes(shapes.name, shapes.input_size, shapes.layers, spec), config, "basisn",
                        point["crossbars"], 1).totals  # fmt: skip
        for scheme, column in (("reprogram_best", "best"), ("reprogram", "reprogram"), ("ideal", "ideal")):
            theirs = evaluate(shapes, config, scheme, point["crossbars"], 1).totals
            assert getattr(row, f"cycles_vs_{column}") == pytest.approx(ours["cycles"] / theirs["cycles"])
            assert getattr(row, f"edp_vs_{column}") == pytest.approx(ours["edp_js"] / theirs["edp_js"])
    loss, spread = frame["accuracy_loss_pp"], frame["accuracy_loss_pp_sd"].fillna(0.0)
    assert (frame["meets_accuracy"] == (loss + spread <= 1)).all()  # met with its spread
    assert (
        frame["meets_both"] == ((loss + spread <= 1) & (frame["edp_vs_best"] < 0.01) & (frame["cycles_vs_best"] < 0.01))
    ).all()
    for front, cost in (("pareto_edp", "edp_vs_best"), ("pareto_cycles", "cycles_vs_best")):
        assert frame[front].any()
        for row in frame[frame[front]].itertuples():  # nothing beats a Pareto point on both axes
            better = (loss <= row.accuracy_loss_pp) & (frame[cost] <= getattr(row, cost))
            strictly = (loss < row.accuracy_loss_pp) | (frame[cost] < getattr(row, cost))
            assert not (better & strictly).any()


def test_tradeoff_targets_are_the_full_fine_tunes_at_the_target_g(executed):
    frame = table(executed, "tradeoff", "headline_tradeoff")
    targets = table(executed, "tradeoff", "headline_tradeoff_targets")
    full = frame[(frame["schedule"] == "full") & frame["groups"].isin([4, 8])]
    assert sorted(zip(targets["groups"], targets["option"])) == sorted(zip(full["groups"], full["option"]))
    merged = targets.merge(full, on=["groups", "option"], suffixes=("", "_table"))
    assert merged["accuracy_loss_pp"].to_numpy() == pytest.approx(merged["accuracy_loss_pp_table"].to_numpy())
    assert (targets["miss_pp"] == targets["accuracy_loss_pp"] - targets["target_loss_pp"]).all()
    spread = targets["accuracy_loss_pp_sd"]
    assert ((targets["verdict"] == "met") == (targets["miss_pp"] + spread <= 0)).all()
    assert ((targets["verdict"] == "missed") == (targets["miss_pp"] - spread > 0)).all()


def test_tradeoff_dense_baselines_are_one_per_seed(executed):
    dense = table(executed, "tradeoff", "headline_tradeoff_dense")
    stage = pd.read_csv(FIXTURES / "pipeline" / "tradeoff" / "dense.csv")
    assert dense["seed"].tolist() == stage["seed"].tolist() == stage_params_seeds(stage_json())
    assert dense["trained_by"].iloc[0] == "train stage" and (dense["trained_by"].iloc[1:] == "tradeoff stage").all()
    assert dense["dense_accuracy"].to_numpy() == pytest.approx(stage["dense_accuracy"].to_numpy())


def test_energy_rows(executed, hw):
    energy = table(executed, "energy", "energy_breakdown")
    schemes, terms = (
        {"ideal", "reprogram", "basisn", "digital"},
        {"xbar", "adc", "shift_add", "coef_mac", "mac", "write", "memory", "static"},
    )
    assert len(energy) == len(hw["networks"]) * len(schemes) * len(terms)
    assert set(energy["scheme"]) == schemes and set(energy["term"]) == terms
    digital = energy[energy["scheme"] == "digital"]
    crossbar_terms = digital["term"].isin(["xbar", "adc", "shift_add", "coef_mac", "write"])
    assert (digital.loc[crossbar_terms, "energy_j"] == 0).all(), "no crossbar, no write"
    assert (digital.query("term == 'memory'")["energy_j"] > 0).all(), "the digital lanes pay for their weights"
    assert (energy.loc[energy["scheme"] != "digital"].query("term == 'mac'")["energy_j"] == 0).all()
    assert energy.groupby(["network", "scheme"])["share"].sum().to_numpy() == pytest.approx(1.0)
    summary = pd.read_csv(FIXTURES / "hardware" / "summary.csv")
    n = int(energy["n_crossbars"].iloc[0])
    totals = summary[(summary["preset"] == hw["preset"]) & (summary["n_crossbars"] == n)]
    totals = totals.set_index(["network", "scheme"])["energy_j"]
    sums = energy.groupby(["network", "scheme"])["energy_j"].sum()
    assert sums.to_numpy() == pytest.approx(totals.loc[sums.index].to_numpy())
    assert (energy.loc[energy["scheme"] != "reprogram"].query("term == 'write'")["energy_j"] == 0).all()
    # memory off in summary.csv: the baselines' weight streams are free, the MAC lanes' operands are not
    memory_off = energy.query("term == 'memory'").set_index(["network", "scheme"])["energy_j"]
    assert (memory_off.xs("reprogram", level="scheme") == 0).all()
    assert (memory_off.xs("ideal", level="scheme") == 0).all()
    assert (memory_off.xs("basisn", level="scheme") > 0).all()
    # memory on: ideal moves nothing; reprogram and digital read the same dense weights from the same place
    memory = (
        table(executed, "energy", "energy_breakdown_memory").query("term == 'memory'").set_index(["network", "scheme"])
    )
    assert (memory.xs("ideal", level="scheme")["energy_j"] == 0).all()
    reprogram = memory.xs("reprogram", level="scheme")["energy_j"]
    digital = memory.xs("digital", level="scheme")["energy_j"]
    assert (reprogram > 0).any(), "the paper's networks do not fit: their weights move every batch"
    fitting = reprogram == 0  # everything fits (written once): nothing moves
    assert reprogram[~fitting].to_numpy() == pytest.approx(digital[~fitting].to_numpy())
    headline = table(executed, "energy", "memory_headline")
    assert set(headline["memory"]) == {True, False}
    assert len(headline) == 2 * len(hw["networks"]) * len(hw["params"]["report_crossbars"])
    choices = table(executed, "energy", "cost_model_choices")
    assert choices["choice"].tolist() == [choice.name for choice in CHOICES]
    for side in ("best", "digital"):  # the direction is read from the numbers, both ways
        change = choices[f"edp_vs_{side}_alternative"] / choices[f"edp_vs_{side}"]
        assert (choices[f"favours_vs_{side}"] == change.map(favours)).all()
    assert set(choices["favours_vs_best"]) <= {"baseline", "BasisN", "neither"}
    storage = table(executed, "energy", "storage")
    assert (storage["dense_weight_bytes"] > 0).all()
    assert (
        storage["compression_ratio"]
        == storage["dense_weight_bytes"]
        / (storage["coef_bytes"] + storage["basis_bytes"] + storage["kept_dense_bytes"])
    ).all()


def test_sensitivity_rows(executed, hw):
    results = pd.read_csv(FIXTURES / "pipeline" / "sweep" / "results.csv")
    accuracy = table(executed, "sensitivity", "sensitivity_accuracy")
    assert len(accuracy) == len(results)
    assert accuracy["basisn_cycles"].notna().all()
    hardware = table(executed, "sensitivity", "sensitivity_hardware")
    sweeps = hw["params"]["sweep"]
    assert set(hardware["sweep"]) == set(sweeps)
    for key, values in sweeps.items():
        part = hardware[hardware["sweep"] == key]
        assert sorted(set(part["value"])) == sorted(values), key
        assert len(part) == len(values) * len(hw["networks"]), key


def test_learned_basis_rows(executed):
    report = pd.read_csv(FIXTURES / "pipeline" / "decompose" / "report.csv")
    layers = table(executed, "learned_basis", "learned_basis_layers")
    assert list(layers["name"]) == list(report["name"])
    assert layers["zero_share"].between(0, 1).all()
    coefficients = table(executed, "learned_basis", "learned_basis_coefficients")
    assert set(coefficients["stage"]) == {"decomposed", "finetuned"}
    assert coefficients.groupby("stage")["share"].sum().to_numpy() == pytest.approx(1.0)
    assert coefficients["value"].between(-1, 1).all()


# ----------------------------------------------------------------------------------------------------------------
# Determinism and failure.
# ----------------------------------------------------------------------------------------------------------------
def test_claim_region_rows_are_the_stage_outputs(executed):
    """The table is smallest_write.csv at batch 1, one column per metric; the validation table is the stage's."""
    out = output_of(executed, "claim_region")
    table = pd.read_csv(out / "claim_region_min_write.csv")
    stage = pd.read_csv(FIXTURES / "pipeline" / "claim_region" / "smallest_write.csv")
    at_one = stage[stage["batch"] == 1]
    assert len(table) == len(at_one) // 2
    for metric, column in (("cycles_ratio", "cycles_below_1pct_from_s"), ("edp_ratio", "edp_below_1pct_from_s")):
        expected = at_one[at_one["metric"] == metric].set_index(["network", "groups", "n_crossbars"])
        got = table.set_index(["network", "groups", "n_crossbars"])[column]
        pd.testing.assert_series_equal(
            got.sort_index(), expected["smallest_row_write_s"].sort_index(), check_names=False
        )
    validation = pd.read_csv(out / "cost_model_validation.csv")
    assert validation["in_band"].all() and len(validation) >= 2


def test_second_execution_is_byte_identical(executed):
    first, second = output_of(executed, REPEATED), output_of(executed, "repeat")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    different = [n for n in names if (first / n).read_bytes() != (second / n).read_bytes()]
    assert not different, f"not byte-identical across two executions: {different}"


def test_notebook_before_repro_names_the_stage_to_run(executed):
    result = executed["results"]["before_repro"]
    assert result.returncode != 0
    assert f"MissingStageOutput: {ABSENT}/hw_eval.json not found: run `dvc repro hardware` first" in result.stdout
    assert not (executed["dirs"]["before_repro"]).exists() or not list(executed["dirs"]["before_repro"].iterdir())


def test_failing_notebook_fails_and_keeps_previous_files(executed):
    result = executed["results"]["failing"]
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "FileNotFoundError" in output and "tests/fixtures/missing" in output, output[-3000:]
    out = executed["dirs"]["failing"]
    assert [p.name for p in out.iterdir()] == ["overhead_crossbars.png"], "nothing new, no staging directory left"
    assert (out / "overhead_crossbars.png").read_bytes() == b"previous figure"


# ----------------------------------------------------------------------------------------------------------------
# Static checks: dvc.yaml stages, committed sources, fixtures (no kernel needed).
# ----------------------------------------------------------------------------------------------------------------
def notebook_stages() -> dict[str, tuple[str, dict]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    found: dict[str, tuple[str, dict]] = {}
    for stage_name, stage in stages.items():
        match = re.search(r"basisn notebook notebooks/(\w+)\.py", stage["cmd"])
        if match:
            assert match.group(1) not in found, f"notebook {match.group(1)} has two stages"
            found[match.group(1)] = (stage_name, stage)
    return found


def parameters_of(name: str) -> dict[str, object]:
    notebook = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: one cell tagged `parameters`"
    values: dict[str, object] = {}
    exec(cells[0].source, {}, values)  # plain assignments of literals
    return values


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_dvc_stage_declares_exactly_the_notebook_files(name):
    stages = notebook_stages()
    assert name in stages, f"dvc.yaml has no stage running notebooks/{name}.py"
    stage_name, stage = stages[name]
    outs = {}
    for out in stage["outs"]:
        path = next(iter(out)) if isinstance(out, dict) else out
        outs[path] = (out[path] if isinstance(out, dict) else None) or {}
    assert set(outs) == {f"paper_figures/{f}" for f in expected_files(name)}
    assert all(options.get("persist") is True for options in outs.values()), "persist: previous figures stay"
    deps = stage["deps"]
    assert f"notebooks/{name}.py" in deps and "basisn" in deps, "the whole package: figures.py, notebooks.py, ..."
    for dep in deps:  # every stage output the notebook reads has its fixture
        if dep.startswith("outputs/hardware/"):
            assert (FIXTURES / "hardware" / dep.removeprefix("outputs/hardware/")).is_file(), dep
        elif dep.startswith("outputs/"):
            assert (FIXTURES / "pipeline" / dep.removeprefix("outputs/")).is_file(), dep
    defaults = parameters_of(name)
    assert defaults.get("out_dir") == f"runs/{name}", "a run in JupyterLab must not overwrite the references"
    for key, value in re.findall(r"-p (\w+)=(\S+)", stage["cmd"]):
        assert key in defaults, f"{stage_name}: -p {key} is not a parameter of notebooks/{name}.py"
        default = defaults[key][0] if isinstance(defaults[key], list) else defaults[key]
        assert default == value, f"{name}: default {key}={default!r} is not what {stage_name} reads ({value})"
        assert (ROOT / fixture_path(value)).exists(), f"no fixture for {value}: {fixture_path(value)}"
    assert not [v for v in defaults.values() if "fixtures" in str(v)], f"{name}: defaults must not read fixtures"


def test_every_paper_figure_belongs_to_one_stage():
    owners: dict[str, str] = {}
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage_name, stage in stages.items():
        for out in stage.get("outs", []):
            path = next(iter(out)) if isinstance(out, dict) else out
            if path.startswith("paper_figures"):
                assert path not in owners, f"{path} is an output of {owners[path]} and {stage_name}"
                assert path != "paper_figures" and "/" in path, "list files, not the directory"
                owners[path] = stage_name


def test_committed_notebooks_are_text_without_outputs():
    sources = sorted((ROOT / "notebooks").glob("*.py"))
    assert {p.stem for p in sources} >= set(NOTEBOOKS)
    for path in sources:
        assert "# %%" in path.read_text(), f"{path.name}: jupytext py:percent cells"
        notebook = jupytext.read(path)
        for cell in notebook.cells:
            assert not cell.get("outputs"), f"{path.name} carries outputs"
            assert cell.get("execution_count") is None, f"{path.name} carries execution counts"
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout.strip() == "", f"executed notebooks are tracked: {tracked.stdout}"


def test_fixtures_are_small_text_files():
    files = [p for sub in ("pipeline", "hardware") for p in (FIXTURES / sub).rglob("*") if p.is_file()]
    assert files, "run tests/fixtures/make_fixtures.py"
    assert not [p for p in files if p.suffix not in {".csv", ".json"}]
    assert sum(p.stat().st_size for p in files) < 1_000_000


def test_a_notebook_run_in_jupyterlab_writes_under_runs_not_over_the_references():
    """The parameter defaults are what a reader's run uses: they must not overwrite paper_figures/ or CLAIMS.md
    (the committed references); `basisn notebook`, the DVC stage, passes its own staging directory instead."""
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/x"], cwd=ROOT).returncode == 0
    assert ignored, "runs/ must be git-ignored"
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        cell = next(c for c in jupytext.read(path).cells if "parameters" in c.metadata.get("tags", []))
        namespace: dict = {}
        exec(cell.source, namespace)
        assert namespace["out_dir"] == f"runs/{path.stem}", f"{path.name}: out_dir={namespace['out_dir']!r}"


def test_notebook_files_are_what_jupytext_writes_back():
    """Opening a notebook and saving it must not change its text: jupytext's round trip is byte-identical."""
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        text = path.read_text()
        assert jupytext.writes(jupytext.reads(text, fmt="py:percent"), fmt="py:percent") == text, path.name


def test_docs_list_every_file_with_its_stage():
    docs = (ROOT / "docs" / "figures.md").read_text()
    rows = [line for line in docs.splitlines() if line.startswith("| `paper_figures/")]
    stages = notebook_stages()
    for name in NOTEBOOKS:
        stage_name = stages[name][0]
        for file in expected_files(name):
            row = next((r for r in rows if f"`paper_figures/{file}`" in r), None)
            assert row is not None, f"docs/figures.md does not list {file}"
            assert f"`dvc repro {stage_name}`" in row, f"docs/figures.md: {file} is made by {stage_name}"


def test_network_style_tells_datasets_apart_by_line_style_not_hue(hw):
    from basisn.figures import DATASET_DASHES, network_style

    names = ["resnet18", "cifar_resnet18", "densenet121", "cifar_densenet121", "pipeline_model"]
    style = network_style(names)
    by = style.set_index("network")
    assert by.loc["resnet18", "color"] == by.loc["cifar_resnet18", "color"]  # one hue per architecture
    assert by.loc["resnet18", "dataset"] == "ImageNet" and by.loc["cifar_resnet18", "dataset"] == "CIFAR-100"
    assert by.loc["pipeline_model", "dataset"] == "other"  # nothing says what it was trained on
    assert len(set(style["color"])) == 3  # resnet18, densenet121, pipeline_model
    assert len({DATASET_DASHES[d] for d in style["dataset"]}) == 3  # solid, dashed, one more
    # hw_eval.json records the pipeline model's dataset (the hw-eval stage reads it from the params' data block)
    assert hw["networks"]["pipeline_model"]["dataset"] == "Fashion-MNIST"
    named = network_style(names, hw).set_index("network")
    assert named.loc["pipeline_model", "dataset"] == "Fashion-MNIST"
    assert len({DATASET_DASHES[d] for d in named["dataset"]}) == 3


# ----------------------------------------------------------------------------------------------------------------
# What a reader sees: figure sizes, labelled reference lines, short summaries, each answer once.
# ----------------------------------------------------------------------------------------------------------------
def executed_notebook(executed: dict, key: str):
    import nbformat

    output_of(executed, key)
    return nbformat.read(executed["runs"] / key / f"{executed_name(key)}.ipynb", as_version=4)


def executed_name(key: str) -> str:
    return {"repeat": REPEATED, "headline_reader": "headline"}.get(key, key)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_figures_print_at_one_column_or_the_page_width(executed, name):
    from PIL import Image

    from basisn.figures import COLUMN_WIDTH, FULL_WIDTH, SAVE_DPI

    out = output_of(executed, name)
    for stem in NOTEBOOKS[name]["figures"]:
        width, height = Image.open(out / f"{stem}.png").size
        inches = width / SAVE_DPI
        # drawn at 3.5 or 7 in; `bbox_inches="tight"` may add a legend's overhang, never a second page width
        assert inches <= FULL_WIDTH * 1.04, f"{stem}.png is {inches:.2f} in wide: draw it at {FULL_WIDTH} in"
        assert inches >= COLUMN_WIDTH * 0.8, f"{stem}.png is {inches:.2f} in wide: too small to read"
        assert height / SAVE_DPI <= 9.5, f"{stem}.png is {height / SAVE_DPI:.1f} in tall: more than a page"


def test_notebooks_draw_reference_lines_with_their_label():
    """Every horizontal or vertical reference line goes through basisn.figures.reference_line, which writes what
    the line is next to it; a bare axhline/axvline would be a line the reader has to guess."""
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        text = path.read_text()
        assert "axhline(" not in text and "axvline(" not in text, f"{path.name}: use reference_line(ax, y, label)"


def test_reference_line_writes_its_label_in_the_axes():
    import matplotlib.pyplot as plt

    from basisn.figures import reference_line

    fig, ax = plt.subplots()
    ax.plot([1, 100], [0.001, 10])
    reference_line(ax, 0.01, "1%: the paper's claim")
    reference_line(ax, 10, "N = 10", axis="x", at="start")
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["1%: the paper's claim", "N = 10"]
    assert [line.get_ydata()[0] for line in ax.lines[1:2]] == [0.01]
    with pytest.raises(ValueError, match="axis='z' is not allowed"):
        reference_line(ax, 1, "x", axis="z")
    plt.close(fig)


@pytest.mark.parametrize("gap", [0.5, 6.0])
def test_spread_labels_keeps_order_and_gap(gap):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from basisn.figures import spread_labels

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.floats(-100, 100), min_size=1, max_size=12))
    def check(values):
        placed = spread_labels(values, gap)
        order = sorted(range(len(values)), key=values.__getitem__)
        ranked = [placed[i] for i in order]
        assert all(b - a >= gap - 1e-9 for a, b in zip(ranked, ranked[1:]))  # apart, in the points' order
        assert sum(placed) == pytest.approx(sum(values), abs=1e-6 * len(values) * (1 + gap))  # centred on them
        if all(b - a >= gap for a, b in zip(sorted(values), sorted(values)[1:])):
            assert placed == pytest.approx(values)  # nothing moves that need not

    check()


def test_notebooks_summarise_inputs_and_state_each_answer_once(executed):
    """The first output a reader sees is a few lines, not a JSON dump, and no answer is printed and also shown as
    Markdown (the issue's "prints its answer twice")."""
    for name in NOTEBOOKS:
        notebook = executed_notebook(executed, name)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        streams = [o.get("text", "") for cell in code for o in cell.outputs if o.get("output_type") == "stream"]
        shown = [
            o["data"]["text/markdown"]
            for cell in code
            for o in cell.outputs
            if o.get("output_type") == "display_data" and "text/markdown" in o.get("data", {})
        ]
        for text in shown:
            assert not any(text.strip() and text.strip() in stream for stream in streams), f"{name}: shown twice"
        if name in {"headline", "cycles", "energy", "overhead"}:
            first = next(cell for cell in code if cell.outputs)
            lines = "".join(o.get("text", "") for o in first.outputs if o.get("output_type") == "stream").splitlines()
            assert 2 <= len(lines) <= 10, f"{name}: the setup cell prints {len(lines)} lines, a summary is <= 10"


def test_headline_recomputes_the_readers_configuration_from_the_cost_model(executed):
    from basisn.hardware import compare, preset
    from basisn.hardware.compare import format_ratio
    from basisn.hardware.networks import paper_shapes

    def answer(key: str) -> str:
        notebook = executed_notebook(executed, key)
        texts = [
            o["data"]["text/markdown"]
            for cell in notebook.cells
            if cell.cell_type == "code"
            for o in cell.outputs
            if "text/markdown" in o.get("data", {})
        ]
        return texts[-1]

    default, reader = answer("headline"), answer("headline_reader")
    assert default.startswith("**resnet18, N = 64, preset `default`, G = 1, batch 1.**")
    assert reader.startswith("**cifar_densenet121, N = 256, preset `neurram`, G = 4, batch 16.**")
    # the numbers are the cost model's for those parameters, not the stage's
    basis = json.loads((FIXTURES / "hardware" / "hw_eval.json").read_text())["basis"] | {"groups": 4}
    table = compare(paper_shapes("cifar_densenet121"), preset("neurram"), n_crossbars=256, batch=16, basis=basis)
    row = table.set_index("scheme").loc["basisn"]
    assert f"cycles {format_ratio(row['cycles_vs_reprogram_best'])}, EDP" in reader
    # and no file of the reader's run differs from the default run's: the section writes nothing
    for path in output_of(executed, "headline").iterdir():
        assert (output_of(executed, "headline_reader") / path.name).read_bytes() == path.read_bytes(), path.name
