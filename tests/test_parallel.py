"""Parallelization-aware fine-tuning (basisn.parallel): learned group assignment, hardening, alternating phases."""

from __future__ import annotations

import signal

import _train_script as script
import pytest
import torch
from test_train import (
    _restore_torch_globals,  # noqa: F401 - the autouse fixture of test_train, for these fit() runs too
    assert_same_state,
    run_script,
    script_results,
    without_timing,
)

from basisn import parallel
from basisn.basis import load_basisn, save_basisn, to_basisn
from basisn.hardware import layer_shapes
from basisn.layers import basis_layers, rebuild_weights
from basisn.train import CHECKPOINT_NAME, TrainConfig, fit

GROUPS = 3  # the tiny net's basis: 6 vectors, 3 groups of 2


def learned_model(coef_bits: int | None = 4, basis_bits: int | None = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    model, _ = to_basisn(
        script.TinyNet(), n_basis=6, segment_len=9, coef_bits=coef_bits, basis_bits=basis_bits, groups=GROUPS,
        assignment="learned",
    )  # fmt: skip
    return model


def group_norms(layer) -> torch.Tensor:
    """(O, S, G) coefficient norm of every group of every segment."""
    return layer.coef.detach().view(*layer.coef.shape[:2], GROUPS, -1).norm(dim=-1)


def assert_one_group_per_segment(model) -> None:
    for name, layer in basis_layers(model):
        group = layer.segment_group
        assert group.min() >= 0 and group.max() < GROUPS, name
        outside = torch.arange(GROUPS)[None, None, :] != group[..., None]
        assert torch.all(group_norms(layer)[outside] == 0), f"{name}: coefficients outside the segment's group"


# --------------------------------------------------------------------------------------------------------------
def test_learned_decomposition_starts_from_the_fixed_one_with_every_segment_unassigned():
    torch.manual_seed(0)
    fixed, fixed_report = to_basisn(script.TinyNet(), n_basis=6, segment_len=9, groups=GROUPS)
    torch.manual_seed(0)
    learned, learned_report = to_basisn(script.TinyNet(), n_basis=6, segment_len=9, groups=GROUPS, assignment="learned")
    for (name, layer), (_, reference) in zip(basis_layers(learned), basis_layers(fixed)):
        assert torch.all(layer.segment_group == -1), name
        assert torch.equal(layer.coef, reference.coef) and reference.segment_group.min() >= 0, name
    x = torch.randn(4, *script.IMAGE_SHAPE)
    assert torch.equal(learned.eval()(x), fixed.eval()(x))  # -1 opens the groups, whose coefficients are zero
    for learned_row, fixed_row in zip(learned_report, fixed_report):
        assert learned_row["rel_error"] == fixed_row["rel_error"]
        assert learned_row["coefficients"] == GROUPS * fixed_row["coefficients"]  # all n are trainable now
    assert learned.basisn_bank.config["assignment"] == "learned"


def test_unknown_assignment_is_refused():
    with pytest.raises(ValueError, match="assignment='soft' is not allowed; allowed: fixed, learned"):
        to_basisn(script.TinyNet(), n_basis=6, segment_len=9, groups=GROUPS, assignment="soft")


def test_group_lasso_prox_shrinks_every_group_by_the_same_share_of_its_segment_norm():
    model = learned_model()
    layer = basis_layers(model)[0][1]
    with torch.no_grad():
        layer.coef.zero_()
        layer.coef[0, 0] = torch.tensor([3.0, 4.0, 0.3, 0.4, 0.0, 0.0])  # group norms 5, 0.5, 0
        layer.coef[1, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        layer.segment_group[1, 0] = 2  # assigned: left alone, even its coefficients outside group 2
    segment_norm = 0.5 * 101**0.5
    parallel.group_lasso_prox(model, threshold=0.1)
    shrink = 0.1 * segment_norm
    assert torch.allclose(layer.coef[0, 0, :2], torch.tensor([3.0, 4.0]) * (1 - shrink / 5))
    assert torch.all(layer.coef[0, 0, 2:] == 0)  # 0.5 < shrink: exactly zero, the group is dropped
    assert torch.equal(layer.coef[1, 0], torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]))


def test_hardening_keeps_the_function_when_each_segment_already_uses_one_group():
    model = learned_model(coef_bits=None)
    for _, layer in basis_layers(model):  # zero all but a random group of each segment
        keep = torch.randint(0, GROUPS, layer.segment_group.shape)
        mask = torch.arange(GROUPS)[None, None, :] == keep[..., None]
        with torch.no_grad():
            layer.coef.view(*layer.coef.shape[:2], GROUPS, -1).mul_(mask[..., None])
    x = torch.randn(5, *script.IMAGE_SHAPE)
    model.eval()
    before = model(x)
    assert parallel.harden(model) == sum(layer.segment_group.numel() for _, layer in basis_layers(model))
    assert_one_group_per_segment(model)
    assert torch.equal(model(x), before)


def test_hardening_under_quantization_changes_nothing_below_half_a_quantizer_step():
    """Zeroed groups whose coefficients all quantize to 0 (below half a step), the channel's largest magnitude
    kept: the quantized coefficients, hence the weights, are the same before and after hardening."""
    model = learned_model(coef_bits=4)
    for _, layer in basis_layers(model):
        keep = torch.randint(0, GROUPS, layer.segment_group.shape)
        mask = (torch.arange(GROUPS)[None, None, :] == keep[..., None])[..., None]
        with torch.no_grad():
            grouped = layer.coef.view(*layer.coef.shape[:2], GROUPS, -1)
            signs = torch.sign(torch.randn(grouped.shape))
            kept = signs * (1 + torch.rand(grouped.shape))  # magnitudes in [1, 2): the channel's largest is kept
            half_step = 1 / 7 / 2  # 4 bits: 7 levels a side, range >= 1
            grouped.copy_(torch.where(mask, kept, signs * torch.rand(grouped.shape) * 0.9 * half_step))
    before = {k: v.detach().clone() for k, v in rebuild_weights(model).items()}
    parallel.harden(model)
    assert_one_group_per_segment(model)
    for name, weight in rebuild_weights(model).items():
        assert torch.equal(weight.detach(), before[name]), name


def test_learned_fit_hardens_at_its_step_and_ends_with_one_group_per_segment(tmp_path):
    model = learned_model()
    train, test = script.make_loaders()
    pending_after_step = {}
    config = script.make_config(group_lasso=0.5, harden_at=0.5, weight_decay=1e-3)
    fit(
        model,
        train,
        test,
        config,
        tmp_path,
        on_step=lambda s: pending_after_step.update({s: parallel.assignment_pending(model)}),
    )
    assert [s for s, pending in pending_after_step.items() if pending] == list(range(1, 9))  # hardens after step 9
    assert not parallel.assignment_pending(model)
    assert_one_group_per_segment(model)
    chosen = torch.cat([layer.segment_group.flatten() for _, layer in basis_layers(model)])
    assert len(chosen.unique()) > 1  # a choice was made, not one group for everything


def test_a_hardened_model_saves_loads_and_costs_like_a_fixed_one(tmp_path):
    model = learned_model()
    with pytest.raises(ValueError, match="not assigned to a basis group yet"):
        layer_shapes(model, (1, *script.IMAGE_SHAPE))
    parallel.harden(model)
    save_basisn(model, tmp_path / "model.pt", pack=False)  # the float latents, to train on
    save_basisn(model, tmp_path / "packed.pt")  # the quantized values at their bit widths
    torch.manual_seed(1)
    loaded, packed = script.TinyNet(), script.TinyNet()
    load_basisn(loaded, tmp_path / "model.pt")
    load_basisn(packed, tmp_path / "packed.pt")
    assert loaded.basisn_bank.config["assignment"] == "learned"
    assert_same_state(loaded.state_dict(), model.state_dict())
    x = torch.randn(3, *script.IMAGE_SHAPE)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    assert torch.equal(packed.eval()(x), model.eval()(x))
    assert layer_shapes(loaded, (1, *script.IMAGE_SHAPE)).basis.groups == GROUPS


def test_alternating_phases_do_not_move_the_frozen_parameters(tmp_path):
    model = script.make_model(basisn=True)
    train, test = script.make_loaders()
    basis = model.basisn_bank.weight
    others = {name: p for name, p in model.named_parameters() if p is not basis}
    snapshots = [({k: p.detach().clone() for k, p in others.items()}, basis.detach().clone())]

    def record(step: int) -> None:
        snapshots.append(({k: p.detach().clone() for k, p in others.items()}, basis.detach().clone()))

    config = script.make_config(alternate={"coef_steps": 2, "basis_steps": 1}, weight_decay=1e-2)
    fit(model, train, test, config, tmp_path, on_step=record)  # momentum and weight decay on
    assert len(snapshots) == 19
    for step in range(18):
        (before, basis_before), (after, basis_after) = snapshots[step], snapshots[step + 1]
        moved = [k for k in others if not torch.equal(before[k], after[k])]
        if step % 3 < 2:  # coefficient phase: the basis is frozen
            assert torch.equal(basis_before, basis_after), step
            assert "conv.coef" in moved and "head.scale" in moved, step
        else:  # basis phase: everything else is frozen
            assert not torch.equal(basis_before, basis_after) and moved == [], (step, moved)


def test_alternate_needs_a_basis_mapped_model(tmp_path):
    train, test = script.make_loaders()
    config = script.make_config(alternate={"coef_steps": 1, "basis_steps": 1})
    with pytest.raises(ValueError, match="alternate needs a basis-mapped model"):
        fit(script.make_model(), train, test, config, tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("field", "value"),
    [("group_lasso", -0.1), ("harden_at", 0.0), ("harden_at", 1.5), ("alternate", {"coef_steps": 1}),
     ("alternate", {"coef_steps": 1, "basis_steps": 0}), ("alternate", "2:1")],
)  # fmt: skip
def test_invalid_parallel_config_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}=.*not allowed; allowed: ") as error:
        TrainConfig(epochs=1, lr=0.1, **{field: value})
    assert repr(value) in str(error.value)


def test_parallel_options_change_the_run_settings_a_checkpoint_must_match(tmp_path):
    train, test = script.make_loaders()
    fit(script.make_model(basisn=True), train, test, script.make_config(epochs=1, warmup_epochs=0), tmp_path)
    with pytest.raises(RuntimeError, match="alternate"):
        config = script.make_config(epochs=1, warmup_epochs=0, alternate={"coef_steps": 1, "basis_steps": 1})
        fit(script.make_model(basisn=True), train, test, config, tmp_path)


@pytest.mark.parametrize("kill_at", [8, 14])  # checkpoints after steps 6 (before hardening at 9) and 12 (after)
def test_kill_then_resume_with_learned_assignment_and_alternation_matches_uninterrupted_run(tmp_path, kill_at):
    reference = run_script(tmp_path / "ref", tmp_path / "ref_result", "--parallel")
    assert reference.returncode == 0, reference.stderr
    assert "learned group assignment hardened" in reference.stdout

    run_dir, result_dir = tmp_path / "run", tmp_path / "run_result"
    killed = run_script(run_dir, result_dir, "--parallel", "--kill-at-step", str(kill_at))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoint = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    groups = torch.cat([v.flatten() for k, v in checkpoint["model"].items() if k.endswith("segment_group")])
    assert bool((groups < 0).all()) == (kill_at < 9)  # the checkpoint is before / after hardening

    resumed = run_script(run_dir, result_dir, "--parallel")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert ("learned group assignment hardened" in resumed.stdout) == (kill_at < 9)
    expected_metrics, expected_state = script_results(tmp_path / "ref_result")
    metrics, state = script_results(result_dir)
    assert without_timing(metrics) == without_timing(expected_metrics)
    assert_same_state(state, expected_state)


def test_basis_tables_keep_every_coefficient_of_an_unassigned_segment(tmp_path):
    import pandas as pd

    from basisn.stages.evaluate import basis_tables

    unassigned = learned_model()
    hardened = learned_model()
    parallel.harden(hardened)
    basis_tables(unassigned, hardened, tmp_path)
    counts = pd.read_csv(tmp_path / "coefficients.csv").groupby("stage")["count"].sum()
    assert counts["decomposed"] == GROUPS * counts["finetuned"]  # all n per segment before hardening, n/G after


# --------------------------------------------------------------------------------------------------------------
# The dynamic assignment (segment_group -2): each pass uses the group of largest coefficient norm.
# --------------------------------------------------------------------------------------------------------------
def dynamic_model(coef_bits: int | None = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    model, _ = to_basisn(
        script.TinyNet(), n_basis=6, segment_len=9, coef_bits=coef_bits, groups=GROUPS, assignment="dynamic"
    )
    return model


def test_dynamic_decomposition_fits_every_group_and_starts_at_the_largest_norm():
    from basisn.layers import DYNAMIC

    model = dynamic_model()
    for name, layer in basis_layers(model):
        assert torch.all(layer.segment_group == DYNAMIC), name
        norms = group_norms(layer)
        assert torch.all((norms > 0).sum(-1) > 1), f"{name}: every group holds its own fit"
        quantized = layer.quantized_coefficients().view(*layer.coef.shape[:2], GROUPS, -1).norm(dim=-1)
        used = quantized > 0
        assert torch.all(used.sum(-1) <= 1), f"{name}: a pass uses one group per segment"
        # the group used is the one of largest norm (where quantization left it non-zero)
        assert torch.equal(used.float().argmax(-1)[used.any(-1)], norms.argmax(-1)[used.any(-1)])


def test_dynamic_gradients_reach_the_inactive_groups():
    model = dynamic_model(coef_bits=None)
    model(torch.randn(4, *script.IMAGE_SHAPE)).square().sum().backward()
    for name, layer in basis_layers(model):
        grad = layer.coef.grad.view(*layer.coef.shape[:2], GROUPS, -1).norm(dim=-1)
        active = group_norms(layer).argmax(-1, keepdim=True)
        inactive = torch.ones_like(grad, dtype=torch.bool).scatter(-1, active, False)
        assert grad[inactive].abs().sum() > 0, f"{name}: the straight-through estimator passes gradients on"


def test_hardening_a_dynamic_model_keeps_its_function_exactly():
    model = dynamic_model()
    x = torch.randn(4, *script.IMAGE_SHAPE)
    before = model.eval()(x)
    parallel.harden(model)
    assert_one_group_per_segment(model)
    assert torch.equal(model(x), before)  # the pass already used only the chosen group


def test_dynamic_fit_ends_with_one_group_per_segment(tmp_path):
    model = dynamic_model()
    train, test = script.make_loaders()
    fit(model, train, test, script.make_config(harden_at=0.5), tmp_path)
    assert not parallel.assignment_pending(model)
    assert_one_group_per_segment(model)
