"""The tradeoff stage's grid, its params checks and its cost columns
(basisn/stages/tradeoff.py; the params checks: basisn/params.py).

The stage end to end (training, the resume after a kill) runs in tests/test_pipeline.py; the notebook that turns
its outputs into paper_figures/headline_tradeoff.* in tests/test_notebooks.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from basisn import params
from basisn.hardware import PRESETS, BasisSpec, NetworkShapes, evaluate, layer_shapes
from basisn.hardware.networks import NETWORKS, paper_shapes
from basisn.params import MODEL_NETWORK
from basisn.stages.tradeoff import configuration_costs, configurations

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def resolved(edit=None, profile: str = "default") -> dict:
    raw = copy.deepcopy(RAW)
    if edit:
        edit(raw)
    return params.resolve(raw, profile)


def test_the_grid_is_every_g_bits_option_then_the_main_configurations():
    p = resolved()
    t = p["tradeoff"]
    rows = configurations(p)
    short = [r for r in rows if r["schedule"] == "short"]
    full = [r for r in rows if r["schedule"] == "full"]
    assert len(short) == len(t["groups"]) * len(t["coef_bits"]) * len(t["options"])
    assert {r["seed"] for r in short} == {p["seed"]}  # the grid is a trend: one seed
    main = [(o, g) for o, gs in t["full"].items() for g in gs]
    assert t["seeds"] >= 3  # the default profile reports mean and spread over at least 3 seeds (issue 24)
    assert [(r["seed"], r["option"], r["groups"]) for r in full] == [
        (p["seed"] + k, o, g) for k in range(t["seeds"]) for o, g in main
    ]
    assert len({(r["key"], r["seed"]) for r in rows}) == len(rows)
    assert {r["key"] for r in full if r["seed"] == p["seed"]} == {r["key"] for r in full}  # one key, all seeds
    assert len({r["fingerprint"] for r in full}) == len(full)  # each seed is its own training
    for r in short:
        assert r["finetune"]["epochs"] == t["finetune_epochs"]
        assert r["train_images_subset"] == t["finetune_subset"]
        assert r["decompose"]["groups"] == r["groups"] and r["decompose"]["coef_bits"] == r["coef_bits"]
    for r in full:  # the finetune: block as it is, on every train image, at the params' coefficient bits
        assert r["finetune"]["epochs"] == p["finetune"]["epochs"]
        assert r["train_images_subset"] == p["data"]["subset"]
        assert r["coef_bits"] == p["decompose"]["coef_bits"]


def test_options_apply_their_overrides_and_identical_settings_train_once():
    def edit(raw):
        raw["tradeoff"]["options"] = {"fixed": {}, "slow": {"finetune": {"lr": 0.001}}, "same": {"finetune": {}}}
        raw["tradeoff"]["full"] = {"slow": [4]}
        raw["tradeoff"]["best"] = "slow"

    rows = {r["key"]: r for r in configurations(resolved(edit))}
    assert rows["G4-b4-slow-short"]["finetune"]["lr"] == 0.001
    assert rows["G4-b4-fixed-short"]["finetune"]["lr"] == RAW["finetune"]["lr"]
    assert rows["G4-b4-same-short"]["same_as"] == "G4-b4-fixed-short"  # no override: the same training
    assert rows["G4-b4-slow-short"]["same_as"] is None
    assert rows["G4-b4-slow-full"]["same_as"] is None  # another schedule: trained again
    fingerprints = {r["fingerprint"] for r in rows.values() if r["same_as"] is None}
    assert len(fingerprints) == sum(r["same_as"] is None for r in rows.values())


BAD = [
    (lambda t: t.update(best="nope"), "tradeoff.best='nope' is not one of tradeoff.options"),
    (lambda t: t.update(full={"nope": [4]}), "tradeoff.full.nope names no option"),
    (lambda t: t.update(groups=[1, 3]), "tradeoff.groups contains 3, which does not divide decompose.n_basis=64"),
    (lambda t: t.update(full={"fixed": [5]}), "tradeoff.full.fixed contains 5"),
    (lambda t: t["options"].update(bad={"decompose": {"groups": 2}}), "tradeoff.options.bad.decompose sets groups"),
    (lambda t: t["options"].update(bad={"train": {}}), "unknown key tradeoff.options.bad.train"),
    (lambda t: t["options"].update(bad={"finetune": {"lr": -1}}), "tradeoff.options.bad.finetune.lr=-1"),
    (lambda t: t["options"].update(bad={"finetune": {"x": 1}}), "unknown key tradeoff.options.bad.finetune.'x'"),
    (lambda t: t["options"].update(bad=[1]), "tradeoff.options.bad=[1] is not allowed"),
    (lambda t: t["headline"].update(network="resnet50"), "tradeoff.headline.network='resnet50' is not priced"),
    (lambda t: t.update(networks=["alexnet"]), "tradeoff.networks=['alexnet'] is not allowed"),
    (lambda t: t.update(finetune_subset=5), "tradeoff.finetune_subset=5 is not allowed for fashion_mnist"),
    (lambda t: t.update(coef_bits=[1]), "tradeoff.coef_bits=[1] is not allowed"),
    (lambda t: t.update(seeds=0), "tradeoff.seeds=0 is not allowed"),
    (lambda t: t.update(seeds=2.5), "tradeoff.seeds=2.5 is not allowed"),
]


@pytest.mark.parametrize(("edit", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_tradeoff_params_are_one_line(edit, message):
    with pytest.raises(params.ParamsError) as error:
        resolved(lambda raw: edit(raw["tradeoff"]))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_params_know_every_network_the_cost_model_has():
    assert set(params.NETWORK_NAMES) == set(NETWORKS)


def test_cost_columns_are_the_cost_model_for_that_configuration():
    import torch

    from basisn import to_basisn
    from basisn.models import build_model

    spec = BasisSpec(64, 128, 4, 2, "uniform")
    torch.manual_seed(0)
    model, _ = to_basisn(build_model("small_resnet", 10, 1), n_basis=64, segment_len=128, groups=4, coef_bits=2)
    own = layer_shapes(model, (1, 28, 28))
    networks = {MODEL_NETWORK: NetworkShapes(MODEL_NETWORK, own.input_size, own.layers, own.basis)}
    networks["cifar_resnet18"] = paper_shapes("cifar_resnet18")
    configs = {"default": PRESETS["default"], "neurram": PRESETS["neurram"]}
    frame = configuration_costs(spec, networks, configs, [16, 64], batch=1)
    assert len(frame) == len(networks) * 2 * len(configs)
    assert set(frame["groups"]) == {4} and set(frame["coef_bits"]) == {2}
    for row in frame.itertuples():
        shapes = networks[row.network]
        config = configs[row.preset]
        basis = spec if shapes.basis is None else None  # the trained model is priced with its own basis
        ours = evaluate(shapes, config, "basisn", row.n_crossbars, 1, basis).totals
        for scheme, suffix in (("reprogram", ""), ("reprogram_best", "_best"), ("ideal", "_ideal")):
            theirs = evaluate(shapes, config, scheme, row.n_crossbars, 1).totals
            assert getattr(row, f"cycles_ratio{suffix}") == pytest.approx(ours["cycles"] / theirs["cycles"])
            assert getattr(row, f"edp_ratio{suffix}") == pytest.approx(ours["edp_js"] / theirs["edp_js"])
    assert own.basis.groups == 4  # the model's own basis is the configuration's


@pytest.mark.parametrize("assignment", ["learned", "dynamic"])
def test_a_configuration_read_back_unhardened_is_priced_like_its_hardened_model(assignment):
    """A resumed stage decomposes a learned/dynamic configuration again (not hardened yet) to price it."""
    import torch

    from basisn import parallel, to_basisn
    from basisn.models import build_model
    from basisn.stages.tradeoff import priced_shapes

    torch.manual_seed(0)
    model, _ = to_basisn(
        build_model("small_resnet", 10, 1), n_basis=64, segment_len=128, groups=4, assignment=assignment
    )
    with pytest.raises(ValueError, match="not assigned"):
        layer_shapes(model, (1, 28, 28))
    shapes = priced_shapes(model, (1, 28, 28))
    assert parallel.assignment_pending(model), "the stage's model itself is left as it was"
    parallel.harden(model)
    hardened = layer_shapes(model, (1, 28, 28), name=MODEL_NETWORK)
    assert shapes == hardened and shapes.basis == BasisSpec(64, 128, 4, 4, "uniform")


def test_seeds_must_not_run_past_the_largest_seed():
    def edit(raw):
        raw["seed"] = params.MAX_SEED - 1
        raw["tradeoff"]["seeds"] = 3

    with pytest.raises(params.ParamsError, match="tradeoff.seeds=3 with seed=.* runs past the largest seed"):
        resolved(edit)
