"""The claim region (basisn.hardware.region), its sentences (basisn.summary), the sensitivity, the validation against
published numbers (basisn.hardware.validation) and the claim_region stage's refusals."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from basisn.cli import main as cli
from basisn.hardware import BasisSpec, evaluate, preset
from basisn.hardware.networks import paper_shapes
from basisn.hardware.region import region, row_write_seconds, sensitivity, smallest_write_cost
from basisn.hardware.validation import VALIDATION_BAND, validation_table
from basisn.summary import digital_region_sentence, n_ranges, region_sentence, seconds_text

ROOT = Path(__file__).resolve().parents[1]
BASIS = BasisSpec(64, 128, 1, 4)
WRITES = [1e-7, 1e-6, 1e-5, 1e-4, 1e-3]


@pytest.fixture(scope="module")
def resnet18_region() -> pd.DataFrame:
    return region({"resnet18": paper_shapes("resnet18")}, preset("default"), BASIS, WRITES, [16, 64, 256], [1], [1, 4])


def test_region_points_on_either_side_of_the_line_are_what_evaluate_gives(resnet18_region):
    """Three points just below and three just above 1%, each recomputed with evaluate() on the config the region
    describes (one verify iteration of `row_write_s`, whole rows on every crossbar)."""
    table = resnet18_region.assign(distance=lambda t: (t["cycles_ratio"] / 0.01).map(math.log).abs())
    below = table[table["cycles_ratio"] < 0.01].nsmallest(3, "distance")
    above = table[table["cycles_ratio"] >= 0.01].nsmallest(3, "distance")
    assert len(below) == len(above) == 3
    shapes = paper_shapes("resnet18").with_basis(BASIS)
    for row, side in [*((r, True) for r in below.itertuples()), *((r, False) for r in above.itertuples())]:
        config = preset("default", t_write_iter=row.row_write_s, verify_iters=1, write_cols=None, write_crossbars=None)
        spec = BasisSpec(64, 128, int(row.groups), 4)
        ours = evaluate(shapes, config, "basisn", int(row.n_crossbars), 1, basis=spec).totals
        best = evaluate(shapes, config, "reprogram_best", int(row.n_crossbars), 1).totals
        assert ours["cycles"] / best["cycles"] == pytest.approx(row.cycles_ratio, rel=1e-12)
        assert ours["edp_js"] / best["edp_js"] == pytest.approx(row.edp_ratio, rel=1e-12)
        assert (ours["cycles"] / best["cycles"] < 0.01) == side


def test_region_ratio_falls_as_writes_get_dearer(resnet18_region):
    """BasisN does not depend on the write cost and the baseline only gets slower: never a rise along the axis."""
    for _, part in resnet18_region.groupby(["groups", "n_crossbars"]):
        ratios = part.sort_values("row_write_s")["cycles_ratio"].to_numpy()
        assert (ratios[1:] <= ratios[:-1] * (1 + 1e-12)).all()


def test_presets_sit_on_the_axis_at_their_own_row_write_time():
    config = preset("default")
    assert row_write_seconds(config) == pytest.approx(10 * 2 * 100e-9)  # 10 iterations of ceil(180/100) cycles
    assert row_write_seconds(preset("default", write_cols=8)) == pytest.approx(16 * row_write_seconds(config))


def test_smallest_write_cost_needs_every_longer_write_below_too():
    table = pd.DataFrame(
        dict(
            network="n",
            groups=1,
            n_crossbars=[8] * 4 + [16] * 4,
            batch=1,
            row_write_s=[1, 2, 3, 4] * 2,
            cycles_ratio=[0.005, 0.02, 0.005, 0.004, 0.5, 0.4, 0.3, 0.2],
        )
    )
    result = smallest_write_cost(table, "cycles_ratio", 0.01).set_index("n_crossbars")["smallest_row_write_s"]
    assert result[8] == 3  # 1 is below but 2 is not: the run reaching the longest write starts at 3
    assert math.isnan(result[16])


def smallest(rows: list[tuple[int, int, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["groups", "n_crossbars", "network", "smallest_row_write_s"]).assign(
        metric="cycles_ratio", batch=1
    )


def test_region_sentence_names_the_write_time_per_run_of_n_for_all_networks_together():
    table = smallest(
        [
            (1, 8, "a", 5e-4),
            (1, 8, "b", 2e-4),
            (1, 16, "a", 5e-4),
            (1, 16, "b", float("nan")),
            (4, 8, "a", 2e-5),
            (4, 8, "b", 2e-5),
            (4, 16, "a", 2e-5),
            (4, 16, "b", 1e-5),
            (4, 32, "a", 1e-7),
            (4, 32, "b", 1e-7),
        ]
    )
    table = pd.concat([table, smallest([(1, 32, "a", float("nan")), (1, 32, "b", float("nan"))])])
    sentence = region_sentence(table, "cycles_ratio", [1e-7, 1e-3])
    assert sentence == (
        "G = 1: >= 500 us at N = 8, not at N = 16-32 up to 1 ms; "
        "G = 4: >= 20 us at N = 8-16, at any write time of the grid (>= 100 ns) at N = 32"
    )
    nothing = smallest([(2, 8, "a", float("nan"))])
    assert (
        region_sentence(nothing, "cycles_ratio", [1e-7, 1e-3]) == "G = 2: at no N up to 8, even at 1 ms per row write"
    )


def test_digital_sentence_and_formatting_helpers():
    table = pd.DataFrame(
        dict(
            network=["a", "b"] * 4,
            groups=[1] * 4 + [4] * 4,
            n_crossbars=[8, 8, 16, 16] * 2,
            batch=1,
            row_write_s=1e-7,
            edp_ratio_digital=[1.2, 0.5, 0.9, 0.8, 0.2, 0.3, 0.4, 0.9],
        )
    )
    assert digital_region_sentence(table, "edp_ratio_digital") == "G = 1: at N = 16; G = 4: at N = 8-16"
    assert n_ranges([8, 16, 64, 128, 4096], [8, 16, 32, 64, 128, 256, 4096]) == "8-16, 64-128, 4096"
    assert [seconds_text(v) for v in (1e-7, 2e-5, 1e-3, 2.0)] == ["100 ns", "20 us", "1 ms", "2 s"]


def test_sensitivity_moves_one_field_at_a_time_and_says_why_a_value_is_refused():
    table = sensitivity(paper_shapes("resnet18"), preset("default"), BASIS, 64, 1)
    base = table["base_cycles_ratio"].iloc[0]
    shapes = paper_shapes("resnet18").with_basis(BASIS)
    config = preset("default")
    direct = (
        evaluate(shapes, config, "basisn", 64, 1).totals["cycles"]
        / evaluate(shapes, config, "reprogram_best", 64, 1).totals["cycles"]
    )
    assert base == pytest.approx(direct, rel=1e-12)
    doubled = table[(table["field"] == "digital_lanes") & (table["factor"] == 2.0)].iloc[0]
    lanes = preset("default", digital_lanes=256)
    expected = (
        evaluate(shapes, lanes, "basisn", 64, 1).totals["cycles"]
        / evaluate(shapes, lanes, "reprogram_best", 64, 1).totals["cycles"]
    )
    assert doubled["cycles_ratio"] == pytest.approx(expected, rel=1e-12)
    refused = table[(table["field"] == "rows") & (table["factor"] == 0.5)].iloc[0]
    assert math.isnan(refused["cycles_ratio"]) and "segment_len=128" in refused["skipped"]
    assert {"t_cycle", "verify_iters", "t_write_iter", "e_write_iter", "cell_bits"} <= set(table["field"])


def test_the_cost_model_stays_within_the_stated_band_of_published_numbers():
    table = validation_table()
    assert len(table) >= 2 and table["in_band"].all(), table[["name", "published", "ours", "ratio"]]
    assert table.loc[table["name"] == "isaac_peak_throughput", "ratio"].iloc[0] == pytest.approx(1.0, abs=1e-3)
    docs = (ROOT / "docs" / "hardware.md").read_text()
    low, high = VALIDATION_BAND
    assert f"band {low:g}-{high:g}" in docs
    for name in table["name"]:
        assert f"`{name}`" in docs, f"docs/hardware.md does not discuss {name}"


# ---- the stage --------------------------------------------------------------------------------------------------
def params_file(tmp_path: Path, edit) -> Path:
    raw = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["claim_region"].update(networks=["cifar_resnet18"], row_write_s=[1e-6, 1e-4], crossbars=[16, 64], batches=[1])
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


BAD = [
    (lambda r: r["claim_region"].update(groups=[3]), "claim_region.groups contains 3, which does not divide"),
    (lambda r: r["claim_region"].update(crossbars=[1, 64]), "claim_region.crossbars contains 1; basisn needs"),
    (lambda r: r["claim_region"].update(bound=0), "claim_region.bound=0 is not allowed"),
    (lambda r: r["claim_region"].update(networks=["vit_b_16"]), "claim_region.networks"),
    (lambda r: r["hardware"].update(preset="turbo"), "hardware.preset='turbo' is unknown"),
]


@pytest.mark.parametrize(("edit", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_claim_region_params_are_one_line_before_any_work(tmp_path, capsys, monkeypatch, edit, message):
    def trap(*_args, **_kwargs):
        raise AssertionError("work started before the bad input was refused")

    monkeypatch.setattr("basisn.stages.claim_region.region", trap)
    monkeypatch.delenv("BASISN_PROFILE", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    code = cli(["claim-region", "--params", str(params_file(tmp_path, edit)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and err.startswith("basisn: "), err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_the_stage_writes_its_files(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BASISN_PROFILE", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    out = tmp_path / "out"
    assert cli(["claim-region", "--params", str(params_file(tmp_path, lambda r: None)), "--out", str(out)]) == 0
    assert re.search(
        r"claim-region: 16 points \(1 networks x 2 write times x 2 N x 1 B x 4 G\)", capsys.readouterr().out
    )
    for name in ("claim_region.json", "region.csv", "smallest_write.csv", "sensitivity.csv", "validation.csv"):
        assert (out / name).is_file(), name
    assert set(pd.read_csv(out / "smallest_write.csv")["metric"]) == {"cycles_ratio", "edp_ratio"}
