"""The `basisn robustness` stage: params validation before any work, an end-to-end run on a tiny model with
synthetic data, atomic outputs, and the notebook executed on the committed fixture."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import basisn.data
from basisn.basis import to_basisn
from basisn.checkpoints import save_model
from basisn.hardware.robustness import (
    CSV_COLUMNS,
    RobustnessParamsError,
    canonical,
    parse_settings,
)
from basisn.hardware.sim import SimConfig
from basisn.models import build_model
from basisn.stages.robustness import main as robustness_main

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "robustness"
TINY = {
    "seeds": [0, 1],
    "test_images": 12,
    "calibration_images": 8,
    "batch_size": 8,
    "crossbars": 8,
    "sweeps": {
        "variation": {"fields": ["sigma_write"], "values": [0.0, 0.05], "set": {"verify_iters": 1}},
        "adc_bits": {"fields": "adc_bits", "values": [4, 8], "set": {"sigma_write": 0.0}},
        "verify_iters": {"fields": ["verify_iters", "basis_verify_iters"], "values": [1, 20]},
    },
}


# --------------------------------------------------------------------------------------------------------------
# Validation.
# --------------------------------------------------------------------------------------------------------------
def test_defaults_are_valid_and_sweeps_share_points():
    settings = parse_settings({})
    assert settings["mappings"] == ["dense", "basisn"]
    assert settings.nominal.rows == settings.hardware.rows and settings.nominal.verify_iters == 10
    variation = {s.name: s for s in settings.sweeps}["variation"]
    value, config = variation.configs(settings.nominal)[3]
    assert config.sigma_write == value and config.verify_iters == 1 == config.basis_verify_iters
    # the unverified point of the verify sweep is the variation sweep's point at the nominal spread
    verify = {s.name: s for s in settings.sweeps}["verify_iters"]
    one = dict(verify.configs(settings.nominal))[1]
    same = dict(variation.configs(settings.nominal))[settings.nominal.sigma_write]
    assert canonical(one, "dense", True) == canonical(same, "dense", True)


def test_canonical_configs_ignore_what_cannot_matter():
    exact, deterministic = canonical(SimConfig(sigma_write=0.0, verify_iters=7), "basisn", False)
    assert deterministic and exact.verify_iters == 1
    noisy, deterministic = canonical(SimConfig(sigma_write=0.1, basis_verify_iters=7, verify_iters=3), "dense", True)
    assert not deterministic and noisy.basis_verify_iters == 1 and noisy.verify_iters == 3


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"sedes": [0]}, "unknown key robustness.sedes"),
        ({"seeds": []}, "robustness.seeds=[]"),
        ({"seeds": [0, 0]}, "robustness.seeds=[0, 0]"),
        ({"seeds": [-1]}, "robustness.seeds=-1"),
        ({"test_images": 0}, "robustness.test_images=0"),
        ({"threads": 0}, "robustness.threads=0"),
        ({"mappings": ["analog"]}, "robustness.mappings"),
        ({"preset": "fast"}, "robustness.preset='fast'"),
        ({"sim": {"sigma": 0.1}}, "unknown key robustness.sim.sigma"),
        ({"sim": {"sigma_write": -1}}, "robustness.sim: sigma_write=-1"),
        ({"sweeps": {"x": {"fields": ["sigma"], "values": [1]}}}, "robustness.sweeps.x.fields"),
        ({"sweeps": {"x": {"fields": ["adc_bits"], "values": []}}}, "robustness.sweeps.x.values"),
        ({"sweeps": {"x": {"fields": ["adc_bits"], "values": [0]}}}, "robustness.sweeps.x: adc_bits=0"),
        ({"sweeps": {"x": {"fields": ["adc_bits"], "values": [4], "bad": 1}}}, "robustness.sweeps.x.bad"),
        ({"sweeps": {}}, "robustness.sweeps"),
        ("fast", "robustness must be a mapping"),
    ],
)
def test_invalid_blocks_raise_one_line_naming_the_key(block, message):
    with pytest.raises(RobustnessParamsError) as error:
        parse_settings(block)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# --------------------------------------------------------------------------------------------------------------
# The stage end to end (synthetic data: no dataset needed).
# --------------------------------------------------------------------------------------------------------------
@dataclass
class FakeLoaders:
    train: list
    test: list
    num_classes: int = 10
    in_channels: int = 1
    input_size: tuple = (28, 28)


def _fake_build_loaders(dataset, root, batch_size, *, seed, subset=None, test_subset=None, augment=True, **_):
    assert dataset == "fashion_mnist" and augment is False
    generator = torch.Generator().manual_seed(seed)

    def batches(count):
        images = torch.randn(count, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (count,), generator=generator)
        return [(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, count, batch_size)]

    return FakeLoaders(batches(subset), batches(test_subset))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    dense = build_model("small_resnet", 10, 1).eval()
    basisn, _ = to_basisn(copy.deepcopy(dense), n_basis=16, segment_len=128, coef_bits=4, basis_bits=8)
    meta = dict(model="small_resnet", num_classes=10, in_channels=1, input_size=[28, 28], dataset="fashion_mnist")
    save_model(dense, folder / "dense.pt", meta)
    save_model(basisn.eval(), folder / "basisn.pt", meta)
    return folder


def _params(tmp_path: Path, block: object) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["robustness"] = block
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _run(params: Path, models: Path, out: Path) -> int:
    argv = ["--params", str(params), "--dense", str(models / "dense.pt"), "--basisn", str(models / "basisn.pt")]
    return robustness_main([*argv, "--out", str(out), "--quiet"])


def test_stage_writes_rows_summary_and_facts(tmp_path, model_files, monkeypatch):
    monkeypatch.setattr(basisn.data, "build_loaders", _fake_build_loaders)
    threads = torch.get_num_threads()
    try:
        assert _run(_params(tmp_path, TINY), model_files, tmp_path / "out") == 0
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["robustness.csv", "robustness.json", "summary.csv"]
    rows = pd.read_csv(out / "robustness.csv")
    assert list(rows.columns) == CSV_COLUMNS
    assert len(rows) == 3 * 2 * 2 * 2  # sweeps x mappings x values x seeds
    assert rows["accuracy"].between(0, 1).all() and (rows["test_images"] == 12).all()
    exact = rows[rows["deterministic"]]
    assert (exact.groupby(["sweep", "mapping", "value"])["accuracy"].nunique() == 1).all()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 3 * 2 * 2
    for column in ("accuracy_mean", "accuracy_std", "seeds", "cycles", "energy_j", "program_once_cycles"):
        assert column in summary.columns
    verify = summary[summary["sweep"] == "verify_iters"].set_index(["mapping", "verify_iters"])
    assert verify.loc[("dense", 20), "cycles"] > verify.loc[("dense", 1), "cycles"]  # N_wv paid per round
    assert verify.loc[("basisn", 20), "cycles"] == verify.loc[("basisn", 1), "cycles"]  # paid once
    assert verify.loc[("basisn", 20), "program_once_cycles"] > verify.loc[("basisn", 1), "program_once_cycles"]
    facts = json.loads((out / "robustness.json").read_text())
    assert facts["test_images"] == 12 and facts["settings"]["seeds"] == [0, 1]
    assert set(facts["digital_accuracy"]) == {"dense", "basisn"}
    # per mapping: exact point (shared by variation 0 and ADC 8) once, ADC 4 once, 2 seeds each at sigma 0.05,
    # N_wv = 1 and N_wv = 20 (the nominal spread 0.1)
    assert facts["simulations"] == 2 * (1 + 1 + 2 + 2 + 2)


def test_bad_params_exit_nonzero_and_leave_earlier_results(tmp_path, model_files, monkeypatch, capsys):
    monkeypatch.setattr(basisn.data, "build_loaders", _fake_build_loaders)
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("earlier results\n")
    bad = _params(tmp_path, {"seeds": [0], "sweeps": {"x": {"fields": ["nope"], "values": [1]}}})
    assert _run(bad, model_files, out) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "robustness.sweeps.x.fields" in error
    assert (out / "summary.csv").read_text() == "earlier results\n"
    missing = ["--params", str(_params(tmp_path, TINY)), "--dense", str(tmp_path / "none.pt"), "--out", str(out)]
    assert robustness_main(missing) == 2
    assert "none.pt not found" in capsys.readouterr().err
    assert (out / "summary.csv").read_text() == "earlier results\n"


# --------------------------------------------------------------------------------------------------------------
# Fixture and notebook.
# --------------------------------------------------------------------------------------------------------------
def test_fixture_matches_the_stage_output_format():
    rows = pd.read_csv(FIXTURE / "robustness.csv")
    assert list(rows.columns) == CSV_COLUMNS
    summary = pd.read_csv(FIXTURE / "summary.csv")
    assert {"accuracy_mean", "accuracy_std", "cycles", "verify_iters"} <= set(summary.columns)
    facts = json.loads((FIXTURE / "robustness.json").read_text())
    parse_settings(facts["settings"])  # the fixture's settings are still a valid block


def _kernel() -> str:
    listing = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter")), "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    names = set(json.loads(listing.stdout)["kernelspecs"]) if listing.returncode == 0 else set()
    for name in ("basisn", "python3"):
        if name in names:
            return name
    pytest.skip("no jupyter kernel in this environment (make venv installs `basisn`)")


def test_notebook_runs_on_the_fixture_and_writes_its_figures_and_tables(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    notebook = tmp_path / "robustness.ipynb"
    jupytext.write(jupytext.read(ROOT / "notebooks" / "robustness.py"), notebook)
    figures = tmp_path / "figures"
    papermill.execute_notebook(
        str(notebook),
        str(tmp_path / "executed.ipynb"),
        parameters={"out_dir": str(figures), "robustness_dir": str(FIXTURE)},
        kernel_name=_kernel(),
        cwd=str(ROOT),
        progress_bar=False,
    )
    expected = {
        f"robustness_{stem}.{ext}"
        for stem, exts in (
            ("sweeps", ("pdf", "png")),
            ("summary", ("csv", "tex", "md")),
            ("cost_accuracy", ("pdf", "png", "csv", "tex", "md")),
        )
        for ext in exts
    }
    assert {p.name for p in figures.iterdir()} == expected
    summary = pd.read_csv(figures / "robustness_summary.csv")
    assert list(summary.columns[:5]) == ["sweep", "mapping", "value", "accuracy_mean", "accuracy_std"]
    cost = pd.read_csv(figures / "robustness_cost_accuracy.csv")
    assert list(cost.columns) == [
        "mapping",
        "verify_iters",
        "effective_sigma",
        "cycles",
        "energy_j",
        "program_once_cycles",
        "accuracy_mean",
        "accuracy_std",
        "seeds",
    ]
    assert set(cost["mapping"]) == {"dense", "basisn"}
    shutil.rmtree(figures)
