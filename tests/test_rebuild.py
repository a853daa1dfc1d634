"""The fast rebuild path (basisn.layers.rebuild_layer_weights) against the plain autograd formulas it replaces; the
eval cache."""

from __future__ import annotations

import itertools

import pytest
import torch

import basisn
from basisn.layers import (
    DYNAMIC,
    UNASSIGNED,
    BasisConv2d,
    _segment_index,
    basis_layers,
    quantize,
    rebuild_layer_weights,
    straight_through,
)
from basisn.models import build_model


def reference_rebuild(layers: list) -> list[torch.Tensor]:
    """The rebuild written as plain autograd ops: dense group mask over all n (-1: all active; -2: the group of
    largest norm, straight-through to all), quantizer with a graph, scale gathered by indexing, one matmul,
    per-layer slices; NHWC clones for channels_last convs."""
    first, bank = layers[0], layers[0].bank
    coefs = torch.cat([layer.coef.reshape(-1, bank.n_basis) for layer in layers])
    if bank.groups > 1:
        segment_group = torch.cat([layer.segment_group.reshape(-1) for layer in layers])
        vector_group = torch.arange(bank.n_basis) // bank.group_size
        dynamic = segment_group == DYNAMIC  # this pass's group: the largest norm; gradients to every group
        norms = coefs.detach().view(-1, bank.groups, bank.group_size).norm(dim=-1)
        segment_group = torch.where(dynamic, norms.argmax(dim=1), segment_group)
        mask = (vector_group[None, :] == segment_group[:, None]) | (segment_group[:, None] == UNASSIGNED)
        masked = coefs * mask.to(coefs.dtype)
        coefs = torch.where(dynamic[:, None], straight_through(coefs, masked), masked)
    row_of_segment, layer_of_segment = _segment_index(layers, coefs.device)
    if first.coef_bits is not None:
        per_channel = first.coef_scale == "channel"
        ranges = row_of_segment if per_channel else layer_of_segment
        n_ranges = sum(layer.out_rows for layer in layers) if per_channel else len(layers)
        largest = coefs.detach().abs().amax(dim=1)
        max_abs = torch.zeros(n_ranges).scatter_reduce(0, ranges, largest, reduce="amax")
        coefs = straight_through(coefs, quantize(coefs, first.coef_bits, first.coef_quant, max_abs[ranges, None]))
    scales = torch.cat([layer.scale for layer in layers])[row_of_segment]
    segments = (coefs * scales[:, None]) @ bank.quantized()
    weights = []
    for layer, part in zip(layers, segments.split([layer.out_rows * layer.segments for layer in layers])):
        rows = part.view(layer.out_rows, -1)[:, : layer.row_len].unflatten(1, layer.weight_shape[1:])
        nhwc = isinstance(layer, BasisConv2d) and layer.channels_last
        weights.append(rows.clone(memory_format=torch.channels_last) if nhwc else rows)
    return weights


def weights_and_gradients(model: torch.nn.Module, rebuild) -> tuple[list, list, list]:
    for parameter in model.parameters():
        parameter.grad = None
    weights = rebuild(model.basisn_bank.layers)
    generator = torch.Generator().manual_seed(1)
    grads = [torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.dtype) for w in weights]
    torch.autograd.backward(weights, grads)
    return (
        [w.detach().float() for w in weights],
        [w.stride() for w in weights],
        [tensor.grad.clone() for tensor in rebuilt_from(model)],
    )


def rebuilt_from(model: torch.nn.Module) -> list[torch.Tensor]:
    """The Parameters the weights are made of: every coef and scale, and the basis."""
    layers = model.basisn_bank.layers
    return [model.basisn_bank.weight] + [p for layer in layers for p in (layer.coef, layer.scale)]


def random_model(groups: int, coef_quant: str, coef_scale: str, channels_last: bool, unassigned: bool):
    torch.manual_seed(groups * 7 + channels_last)
    model, _ = basisn.to_basisn(
        build_model("small_resnet", 10, 1), 16, groups=groups, coef_quant=coef_quant, coef_scale=coef_scale,
        init="random",
    )  # fmt: skip
    for _, layer in basis_layers(model):
        if layer.segment_group is not None:  # random groups; -1 (not assigned yet) for some segments if asked
            layer.segment_group.copy_(torch.randint(-1 if unassigned else 0, groups, layer.segment_group.shape))
    return model.to(memory_format=torch.channels_last) if channels_last else model


CASES = [
    case
    for case in itertools.product((1, 4), ("uniform", "pow2"), ("channel", "layer"), (False, True), (False, True))
    if case[0] > 1 or not case[4]
]


@pytest.mark.parametrize(("groups", "coef_quant", "coef_scale", "channels_last", "unassigned"), CASES)
def test_fast_rebuild_is_bit_identical_to_the_plain_formulas(groups, coef_quant, coef_scale, channels_last, unassigned):
    """Hardened group-sparse models take the gathered path, models with -1 the mask; both as the dense mask."""
    model = random_model(groups, coef_quant, coef_scale, channels_last, unassigned)
    if unassigned:
        assert any((layer.segment_group < 0).any() for _, layer in basis_layers(model))
    fast_weights, fast_strides, fast_grads = weights_and_gradients(model, rebuild_layer_weights)
    plain_weights, plain_strides, plain_grads = weights_and_gradients(model, reference_rebuild)
    assert fast_strides == plain_strides  # NHWC exactly where the convolution wants it
    assert len(fast_grads) == len(plain_grads) > 0
    for fast, plain in zip(fast_weights + fast_grads, plain_weights + plain_grads):
        assert torch.equal(fast, plain)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_rebuild_with_dynamic_segments_is_bit_identical_to_the_plain_formulas(channels_last):
    """-2 (dynamic): the forward uses the group of largest norm, the gradient reaches every group."""
    model = random_model(4, "uniform", "channel", channels_last, False)
    for _, layer in basis_layers(model):
        flip = torch.rand(layer.segment_group.shape) < 0.5
        layer.segment_group.copy_(torch.where(flip, torch.full_like(layer.segment_group, DYNAMIC), layer.segment_group))
    fast_weights, fast_strides, fast_grads = weights_and_gradients(model, rebuild_layer_weights)
    plain_weights, plain_strides, plain_grads = weights_and_gradients(model, reference_rebuild)
    assert fast_strides == plain_strides
    for fast, plain in zip(fast_weights + fast_grads, plain_weights + plain_grads):
        assert torch.equal(fast, plain)
    for _, layer in basis_layers(model):  # a dynamic segment's gradient reaches all 4 groups, a fixed one's only 1
        groups_with_gradient = (layer.coef.grad.view(-1, 4, 4) != 0).any(-1).sum(-1)
        dynamic = layer.segment_group.reshape(-1) == DYNAMIC
        assert (groups_with_gradient[dynamic] == 4).all() and (groups_with_gradient[~dynamic] <= 1).all()


def test_fast_rebuild_under_bf16_autocast_matches_autocast_matmul():
    model = random_model(4, "uniform", "channel", True, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast_weights, _, fast_grads = weights_and_gradients(model, rebuild_layer_weights)
        plain_weights, _, plain_grads = weights_and_gradients(model, reference_rebuild)
    for fast, plain in zip(fast_weights + fast_grads, plain_weights + plain_grads):
        assert torch.equal(fast, plain)


def eval_pass(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, a: seen.append(m.weight)) for _, layer in basis_layers(model)]
    with torch.no_grad():
        out = model(x)
    for hook in hooks:
        hook.remove()
    return out, seen


def test_eval_without_grad_reuses_weights_until_a_parameter_changes(tmp_path):
    model = random_model(4, "uniform", "channel", False, False).eval()
    x = torch.randn(4, 1, 28, 28)
    out, first = eval_pass(model, x)
    again, second = eval_pass(model, x)
    assert all(a is b for a, b in zip(first, second)) and torch.equal(out, again)  # nothing changed: reused

    model.train()  # an optimizer step (in place, under no_grad) changes every weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).square().mean().backward()
    optimizer.step()
    model.eval()
    stepped, third = eval_pass(model, x)
    assert not any(a is b for a, b in zip(second, third)) and not torch.equal(stepped, out)
    for weight, fresh in zip(third, rebuild_layer_weights(model.basisn_bank.layers)):
        assert torch.equal(weight, fresh)

    state = {k: v.clone() for k, v in random_model(4, "uniform", "channel", False, False).state_dict().items()}
    model.load_state_dict(state)  # copies into the same Parameters: only their versions change
    loaded, fourth = eval_pass(model, x)
    reference = random_model(4, "uniform", "channel", False, False).eval()
    torch.testing.assert_close(loaded, eval_pass(reference, x)[0], rtol=0, atol=0)
    assert not any(a is b for a, b in zip(third, fourth))

    model.double()  # .to(): new tensors, new dtype
    doubled, fifth = eval_pass(model, x.double())
    assert all(w.dtype == torch.float64 for w in fifth)
    torch.testing.assert_close(doubled, loaded.double())

    layer = basis_layers(model)[1][1]
    layer.segment_group.fill_(0)  # a buffer changed in place (e.g. a new group assignment)
    _, sixth = eval_pass(model, x.double())
    assert torch.equal(sixth[1], rebuild_layer_weights(model.basisn_bank.layers)[1])
    assert not torch.equal(sixth[1], fifth[1])


def test_training_mode_and_autograd_always_rebuild():
    model = random_model(1, "uniform", "channel", False, False)
    x = torch.randn(2, 1, 28, 28)
    for training, grad in ((True, False), (False, True), (True, True)):
        model.train(training)
        with torch.set_grad_enabled(grad):
            _, first = eval_pass_grad(model, x)
            _, second = eval_pass_grad(model, x)
        assert not any(a is b for a, b in zip(first, second))


def eval_pass_grad(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, a: seen.append(m.weight)) for _, layer in basis_layers(model)]
    out = model(x)
    for hook in hooks:
        hook.remove()
    return out, seen
