"""CLAIMS.md (notebooks/claims.py, stage nb_claims) on the fixtures: one row per claim of the abstract, and every
number in a row is the fixture inputs' own, recomputed here from them; verdicts follow the numbers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jupytext
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PIPELINE, HARDWARE = FIXTURES / "pipeline", FIXTURES / "hardware"
PARAMETERS = [
    f"evaluate_metrics={PIPELINE.relative_to(ROOT)}/evaluate/metrics.json",
    f"hardware_dir={HARDWARE.relative_to(ROOT)}",
]


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict[int, str]:
    out = tmp_path_factory.mktemp("claims")
    args = [sys.executable, "-m", "basisn.cli", "notebook", "notebooks/claims.py", "--out", str(out)]
    args += ["--runs", str(out / "runs"), "-k", "basisn"] + [a for p in PARAMETERS for a in ("-p", p)]
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["CLAIMS.md", "runs"]
    text = (out / "CLAIMS.md").read_text()
    table = [line for line in text.splitlines() if re.match(r"^\| \d+ \|", line)]
    return {int(line.split("|")[1]): line for line in table}


def span(values, scale: float = 1.0) -> str:
    low, high = f"{float(min(values)) * scale:.3g}", f"{float(max(values)) * scale:.3g}"
    return low if low == high else f"{low}-{high}"


def verdict(row: str) -> str:
    return re.search(r"\*\*(.+?)\*\*", row).group(1)


@pytest.fixture(scope="module")
def hw() -> dict:
    return json.loads((HARDWARE / "hw_eval.json").read_text())


def test_every_abstract_claim_has_a_row_with_a_verdict(rows):
    assert sorted(rows) == list(range(1, 11))
    allowed = ("holds", "holds only if", "not reproduced", "not testable here")
    for number, row in rows.items():
        assert verdict(row).startswith(allowed), (number, row)
        assert "`" in row.split("|")[5], f"claim {number}: the file that shows it"


def test_hardware_numbers_are_the_fixtures(rows, hw):
    paper, report = hw["params"]["networks"], hw["params"]["report_crossbars"]
    ratios = pd.read_csv(HARDWARE / "ratios.csv")
    base = ratios[(ratios["preset"] == hw["preset"]) & ratios["n_crossbars"].isin(report)]
    for number, column in ((6, "cycles_ratio"), (7, "edp_ratio")):
        values = base.loc[base["network"].isin(paper), column]
        assert f": {span(values)} (" in rows[number]
        below = int((values < 0.01).sum())
        assert f"below 1% at {below} of {len(values)} base points" in rows[number]
        assert verdict(rows[number]).startswith("holds") == (below > 0 or "holds only if" in rows[number])
    model = base[base["network"] == "pipeline_model"]
    for column, name in (("cycles_ratio", "cycles"), ("energy_ratio", "energy"), ("edp_ratio", "EDP")):
        assert f"{name} {span(model[column])}" in rows[8]
    assert (verdict(rows[8]) == "not reproduced: BasisN uses more energy than reprogramming") == bool(
        (model["energy_ratio"] > 1).any()
    )

    summary = pd.read_csv(HARDWARE / "summary.csv")
    main = summary[(summary["preset"] == hw["preset"]) & summary["n_crossbars"].isin(report)]
    repro = main[(main["scheme"] == "reprogram") & main["network"].isin(paper)]
    assert f"{span(repro['energy_write_j'] / repro['energy_j'], 100)}% of its energy writing" in rows[1]
    layers = pd.read_csv(HARDWARE / "layers.csv")
    sums = (
        layers[(layers["scheme"] == "reprogram") & layers["network"].isin(paper)]
        .groupby(["network", "n_crossbars"])[["program_cycles", "cycles"]]
        .sum()
    )
    share = sums["program_cycles"] / sums["cycles"]
    assert f"spends {span(share, 100)}% of its inference time" in rows[1]
    assert (verdict(rows[1]) == "holds") == bool((share > 0.5).all())
    basisn = main[(main["scheme"] == "basisn") & main["network"].isin(paper)]
    digital = basisn["energy_coef_mac_j"] / basisn["energy_j"]
    assert f"unit is {span(digital, 100)}% of BasisN's energy" in rows[4]
    assert verdict(rows[4]).startswith("holds") == bool((digital <= 0.1).all())
    smallest = max(hw["networks"][n]["min_crossbars_basisn"] for n in paper)
    assert f"at least {smallest} crossbars" in rows[2]


def test_accuracy_and_training_numbers_are_the_fixtures(rows):
    metrics = json.loads((PIPELINE / "evaluate" / "metrics.json").read_text())
    train = json.loads((PIPELINE / "train" / "metrics.json").read_text())
    finetune = json.loads((PIPELINE / "finetune" / "metrics.json").read_text())
    dataset = json.loads((PIPELINE / "finetune" / "params.json").read_text())["data"]["dataset"]
    row = rows[10]
    assert f"dense {100 * metrics['dense_accuracy']:.2f}%" in row
    assert f"BasisN {100 * metrics['basisn_accuracy']:.2f}% ({metrics['basisn_minus_dense_pp']:+.2f} pp)" in row
    assert f"on {metrics['test_samples']} {dataset} test images" in row
    if dataset not in {"cifar100", "imagenet"}:
        assert verdict(row).startswith("not testable here")
    assert f"{100 * metrics['basisn_folded_accuracy']:.2f}%" in rows[3]
    assert f"{metrics['n_basis']} shared basis vectors and {metrics['coef_bits']}-bit" in rows[3]
    share = finetune["stage_seconds"] / train["stage_seconds"]
    assert f"{finetune['stage_seconds']:.1f} s" in rows[9] and f"{train['stage_seconds']:.1f} s" in rows[9]
    assert f"{100 * share:.3g}%" in rows[9]
    assert (verdict(rows[9]) == "holds") == (share <= 0.1)


def test_stage_reads_the_stage_outputs_and_hands_claims_md_to_git():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["nb_claims"]
    assert "--out ." in stage["cmd"] and "basisn" in stage["deps"]
    assert stage["outs"] == [{"CLAIMS.md": {"cache": False, "persist": True}}]
    cells = [
        c for c in jupytext.read(ROOT / "notebooks" / "claims.py").cells if "parameters" in c.metadata.get("tags", [])
    ]
    defaults: dict = {}
    exec(cells[0].source, {}, defaults)
    for key, value in re.findall(r"-p (\w+)=(\S+)", stage["cmd"]):
        assert defaults[key] == value, f"the default of {key} is what the stage reads"
        assert value.startswith("outputs/") and value.split("/")[1] in " ".join(stage["deps"])
