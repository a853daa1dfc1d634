"""The BasisN core: basis-mapped layers, decomposition, quantizers, conversion, saving."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import basisn
from basisn.basis import least_squares_coefficients, segment_rows, top_singular_basis, weight_rows
from basisn.layers import BasisBank, quantize_pow2, quantize_uniform

FAST = settings(max_examples=25, deadline=None)


class Net(nn.Module):
    """Conv (plain, strided+grouped, depthwise-ish, 1x1) + Linear: the layer kinds real networks have."""

    def __init__(self, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, padding_mode=padding_mode)
        self.grouped = nn.Conv2d(8, 16, (3, 5), stride=2, padding=(1, 2), groups=2, bias=False)
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.grouped(self.stem(x))).mean((2, 3)))


def converted(seed: int = 0, **kwargs) -> tuple[nn.Module, nn.Module, list[dict]]:
    torch.manual_seed(seed)
    original = Net().eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), **kwargs)
    return original, model.eval(), report


# ---------------------------------------------------------------- layers equal F.conv2d / F.linear with their weight
@FAST
@given(
    in_per_group=st.integers(1, 4),
    out_per_group=st.integers(1, 4),
    conv_groups=st.integers(1, 3),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    bias=st.booleans(),
    segment_len=st.integers(1, 20),
    n_frac=st.floats(0.1, 1.0),
    coef_bits=st.sampled_from([None, 2, 4, 8]),
    coef_quant=st.sampled_from(["uniform", "pow2"]),
    seed=st.integers(0, 2**16),
)
def test_conv_layer_equals_functional_conv_with_its_weight(
    in_per_group, out_per_group, conv_groups, kh, kw, stride, padding, dilation, bias, segment_len, n_frac,
    coef_bits, coef_quant, seed,
):  # fmt: skip
    torch.manual_seed(seed)
    n_basis = max(1, int(n_frac * segment_len))
    bank = BasisBank(n_basis, segment_len)
    layer = basisn.BasisConv2d(
        in_per_group * conv_groups, out_per_group * conv_groups, (kh, kw), stride, padding, dilation, conv_groups,
        bias, bank=bank, coef_bits=coef_bits, coef_quant=coef_quant,
    )  # fmt: skip
    size = dilation * (max(kh, kw) - 1) + 1 + 3
    x = torch.randn(2, in_per_group * conv_groups, size, size + 1)
    weight = layer.weight
    assert weight.shape == (out_per_group * conv_groups, in_per_group, kh, kw)
    expected = F.conv2d(x, weight, layer.bias, stride, padding, dilation, conv_groups)
    torch.testing.assert_close(layer(x), expected)


@FAST
@given(
    in_features=st.integers(1, 40),
    out_features=st.integers(1, 12),
    segment_len=st.integers(1, 16),
    bias=st.booleans(),
    coef_bits=st.sampled_from([None, 3, 6]),
    seed=st.integers(0, 2**16),
)
def test_linear_layer_equals_functional_linear_with_its_weight(
    in_features, out_features, segment_len, bias, coef_bits, seed
):
    torch.manual_seed(seed)
    bank = BasisBank(max(1, segment_len // 2), segment_len)
    layer = basisn.BasisLinear(in_features, out_features, bias, bank=bank, coef_bits=coef_bits)
    x = torch.randn(5, in_features)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))


def test_padding_modes_match_nn_conv2d():
    for mode in ("zeros", "reflect", "replicate", "circular"):
        torch.manual_seed(1)
        original = Net(padding_mode=mode).eval()
        model, _ = basisn.to_basisn(copy.deepcopy(original), 128, coef_bits=None, basis_bits=None)
        x = torch.randn(2, 3, 9, 9)
        torch.testing.assert_close(model(x), original(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- exact conversion when nothing is lost
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), segment_len=st.sampled_from([1, 7, 16, 45, 128]))
def test_full_basis_without_quantization_reproduces_the_model(seed, segment_len):
    original, model, report = converted(
        seed, n_basis=segment_len, segment_len=segment_len, coef_bits=None, basis_bits=None
    )
    x = torch.randn(3, 3, 12, 12)
    torch.testing.assert_close(model(x), original(x), rtol=1e-4, atol=1e-5)
    assert max(row["rel_error"] for row in report) < 1e-5


def test_quantized_conversion_is_close_but_not_exact():
    original, model, report = converted(0, n_basis=16, segment_len=16, coef_bits=4)
    assert all(0 < row["rel_error"] < 0.2 for row in report), report
    assert all(row["rel_error"] >= row["rel_error_unquantized"] - 1e-9 for row in report)


# ---------------------------------------------------------------- decomposition quality
def normalised_error(model: nn.Module, original: nn.Module) -> float:
    """The decomposition's objective: squared error of every output row, each row normalised to unit norm."""
    rebuilt = basisn.rebuild_weights(model)
    total = 0.0
    for name, module in original.named_modules():
        if name in rebuilt:
            target = weight_rows(module.weight.detach())
            error = weight_rows(rebuilt[name].detach()) - target
            total += float((error.square().sum(1) / target.square().sum(1)).sum())
    return total


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), n_basis=st.integers(1, 12), rank=st.integers(1, 16))
def test_svd_basis_reconstructs_no_worse_than_a_random_orthonormal_basis(seed, n_basis, rank):
    torch.manual_seed(seed)
    original = Net().eval()
    with torch.no_grad():  # structured weights (low rank + noise), like trained networks have
        mixing = torch.randn(rank, 16)
        for module in original.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                rows = weight_rows(module.weight)
                padded = segment_rows(rows, 16)
                structured = torch.randn(*padded.shape[:2], rank) @ mixing + 0.1 * torch.randn_like(padded)
                module.weight.copy_(
                    structured.reshape(rows.shape[0], -1)[:, : rows.shape[1]].reshape(module.weight.shape)
                )
    kwargs = dict(n_basis=n_basis, segment_len=16, coef_bits=None, basis_bits=None)
    svd, _ = basisn.to_basisn(copy.deepcopy(original), **kwargs, init="svd")
    for random_seed in range(3):
        rand, _ = basisn.to_basisn(copy.deepcopy(original), **kwargs, init="random", seed=random_seed)
        assert normalised_error(svd, original) <= normalised_error(rand, original) * (1 + 1e-6) + 1e-9


def test_top_singular_basis_matches_torch_svd():
    segments = torch.randn(200, 10, dtype=torch.float64)
    basis = top_singular_basis(segments, 4)
    _, _, vh = torch.linalg.svd(segments, full_matrices=False)
    # same subspace: projection matrices agree
    torch.testing.assert_close(basis.T @ basis, vh[:4].T @ vh[:4])
    torch.testing.assert_close(basis @ basis.T, torch.eye(4, dtype=torch.float64))


def test_least_squares_coefficients_are_optimal_for_a_non_orthogonal_basis():
    basis = torch.randn(3, 8, dtype=torch.float64)
    x = torch.randn(50, 8, dtype=torch.float64)
    coefs = least_squares_coefficients(x, basis)
    best = torch.linalg.lstsq(basis.T, x.T).solution.T
    torch.testing.assert_close(coefs, best)


def test_group_sparse_segments_use_only_their_group():
    _, model, report = converted(0, n_basis=8, segment_len=16, groups=4, coef_bits=4)
    for layer in (model.stem, model.grouped, model.head):
        q = layer.quantized_coefficients()
        vector_group = torch.arange(8) // 2
        outside = vector_group[None, None, :] != layer.segment_group[:, :, None]
        assert torch.all(q[outside] == 0)
        assert layer.segment_group.min() >= 0 and layer.segment_group.max() < 4
    _, dense_coef, dense_report = converted(0, n_basis=8, segment_len=16, groups=1, coef_bits=None, basis_bits=None)
    _, _, sparse_report = converted(0, n_basis=8, segment_len=16, groups=4, coef_bits=None, basis_bits=None)
    # fewer active coefficients can only reconstruct worse (or equal) than all n with the optimal shared basis
    assert sum(r["rel_error"] for r in sparse_report) >= sum(r["rel_error"] for r in dense_report) - 1e-6
    assert all(s["coefficients"] * 4 == d["coefficients"] for s, d in zip(sparse_report, dense_report))


# ---------------------------------------------------------------- training signal
def test_gradients_reach_coefficients_scales_and_the_basis():
    _, model, _ = converted(0, n_basis=8, segment_len=16, coef_bits=4, coef_quant="pow2")
    model.train()
    model(torch.randn(4, 3, 10, 10)).square().mean().backward()
    assert model.basisn_bank.weight.grad is not None and model.basisn_bank.weight.grad.abs().sum() > 0
    for _, layer in basisn.basis_layers(model):
        assert layer.coef.grad is not None and layer.coef.grad.abs().sum() > 0
        assert layer.scale.grad is not None and layer.scale.grad.abs().sum() > 0


def test_straight_through_estimator_passes_the_gradient_unchanged():
    bank = BasisBank(4, 8)
    quantized = basisn.BasisLinear(8, 3, bias=False, bank=bank, coef_bits=3)
    plain = basisn.BasisLinear(8, 3, bias=False, bank=BasisBank(4, 8, basis_bits=None), coef_bits=None)
    with torch.no_grad():
        plain.coef.copy_(quantized.coef)
        plain.bank.weight.copy_(bank.weight)
    upstream = torch.randn(3, 8)
    (quantized.weight * upstream).sum().backward()
    (plain.weight * upstream).sum().backward()
    # dL/dcoef = scale * upstream @ Q_b(B)^T for the STE, and with Q_b off the same with B: compare via the basis
    expected = (upstream * quantized.scale.detach()[:, None]) @ bank.quantized().detach().T
    torch.testing.assert_close(quantized.coef.grad.reshape(3, 4), expected)


# ---------------------------------------------------------------- quantizers
@FAST
@given(bits=st.integers(2, 8), seed=st.integers(0, 2**16), spread=st.floats(1e-3, 1e3))
def test_uniform_quantizer_takes_at_most_2_to_the_bits_levels(bits, seed, spread):
    x = torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * spread
    q = quantize_uniform(x, bits, x.abs().max())
    assert q.unique().numel() <= 2**bits
    step = x.abs().max() / (2 ** (bits - 1) - 1)
    assert torch.all((q - x).abs() <= step / 2 + 1e-6 * spread)  # round to nearest inside the range
    assert torch.all(q.abs() <= x.abs().max() * (1 + 1e-6))


@FAST
@given(bits=st.integers(2, 8), seed=st.integers(0, 2**16), spread=st.floats(1e-3, 1e3))
def test_pow2_quantizer_gives_signed_powers_of_two_and_zero(bits, seed, spread):
    x = torch.randn(1000, generator=torch.Generator().manual_seed(seed)) * spread
    q = quantize_pow2(x, bits, x.abs().max())
    nonzero = q[q != 0]
    exponents = torch.log2(nonzero.abs())
    assert torch.all(exponents == exponents.round())
    assert q.unique().numel() <= 2**bits
    assert torch.all(torch.sign(nonzero) == torch.sign(x[q != 0]))
    assert exponents.unique().numel() <= 2 ** (bits - 1) - 1


@pytest.mark.parametrize("coef_quant", ["uniform", "pow2"])
@pytest.mark.parametrize("coef_bits", [2, 4])
def test_layer_coefficients_take_at_most_2_to_the_bits_levels_per_channel(coef_quant, coef_bits):
    _, model, _ = converted(0, n_basis=8, segment_len=16, coef_bits=coef_bits, coef_quant=coef_quant)
    for _, layer in basisn.basis_layers(model):
        q = layer.quantized_coefficients()
        for channel in q:
            assert channel.unique().numel() <= 2**coef_bits
    _, model, _ = converted(
        0, n_basis=8, segment_len=16, coef_bits=coef_bits, coef_quant=coef_quant, coef_scale="layer"
    )
    for _, layer in basisn.basis_layers(model):
        assert layer.quantized_coefficients().unique().numel() <= 2**coef_bits


# ---------------------------------------------------------------- one bank, one matmul
def test_the_shared_bank_is_one_tensor():
    _, model, _ = converted(0, n_basis=8, segment_len=16)
    bank_keys = [key for key in model.state_dict() if key.startswith("basisn_bank.")]
    assert bank_keys == ["basisn_bank.weight"]
    layers = [layer for _, layer in basisn.basis_layers(model)]
    assert len(layers) == 4 and all(layer.bank is model.basisn_bank for layer in layers)
    assert sum(p is model.basisn_bank.weight for p in model.parameters()) == 1
    assert not any("weight" in key for key in model.state_dict() if not key.startswith(("basisn_bank", "block.2")))
    clone = copy.deepcopy(model)
    assert all(layer.bank is clone.basisn_bank for _, layer in basisn.basis_layers(clone))


def test_forward_rebuilds_all_weights_with_one_basis_read(monkeypatch):
    _, model, _ = converted(0, n_basis=8, segment_len=16)
    calls = []
    original_quantized = BasisBank.quantized
    monkeypatch.setattr(BasisBank, "quantized", lambda self: calls.append(1) or original_quantized(self))
    matmuls = []
    original_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: matmuls.append(1) or original_matmul(a, b))
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    assert len(calls) == 1 and len(matmuls) == 1
    weights = basisn.rebuild_weights(model)
    assert set(weights) == {"stem", "grouped", "block.1", "head"}
    for name, layer in basisn.basis_layers(model):
        torch.testing.assert_close(weights[name], layer.weight)
        assert layer._rebuilt is None  # the pass's weights are released after the forward
    assert out.shape == (2, 10)


def test_to_dense_gives_an_ordinary_model_with_the_same_outputs():
    _, model, _ = converted(0, n_basis=8, segment_len=16, coef_bits=4, coef_quant="pow2", groups=2)
    dense = basisn.to_dense(model)
    x = torch.randn(2, 3, 11, 11)
    torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-6)
    assert not hasattr(dense, "basisn_bank") and not basisn.basis_layers(dense)
    assert isinstance(dense.stem, nn.Conv2d) and isinstance(dense.head, nn.Linear)
    assert not dense._forward_pre_hooks and hasattr(model, "basisn_bank")  # the input model is untouched


def nhwc_only(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def test_channels_last_models_stay_nhwc_through_conversion_training_and_to_dense():
    """`.to(memory_format=channels_last)` must reach the rebuilt weights, as it reaches nn.Conv2d's.

    The first conv sees a one-channel input, which is NCHW and NHWC at once: there the output layout follows the
    weight, so a layer that only looked at its input would silently run the whole network in NCHW.
    """
    torch.manual_seed(0)

    class Root(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Conv2d(8, 4, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    nchw_model, _ = basisn.to_basisn(Root(), n_basis=4, segment_len=9)
    assert not any(layer.channels_last for _, layer in basisn.basis_layers(nchw_model))
    nhwc_model = copy.deepcopy(nchw_model).to(memory_format=torch.channels_last)
    assert all(layer.channels_last for _, layer in basisn.basis_layers(nhwc_model))
    assert "body.0.layout_probe" not in nhwc_model.state_dict()  # the checkpoint format is unchanged

    x = torch.randn(2, 1, 7, 7).contiguous(memory_format=torch.channels_last)
    outputs = {}
    for module in nhwc_model.body:
        module.register_forward_hook(lambda m, i, o, outputs=outputs: outputs.setdefault(m, o))
    out = nhwc_model(x)
    assert [nhwc_only(o) for o in outputs.values()] == [True] * 4, [(o.shape, o.stride()) for o in outputs.values()]
    torch.testing.assert_close(out, nchw_model(x.contiguous()), rtol=1e-5, atol=1e-6)
    out.square().sum().backward()  # the layout change is differentiable
    assert nhwc_model.body[0].coef.grad is not None and nhwc_model.basisn_bank.weight.grad is not None

    # to_basisn keeps a channels_last source's layout, and to_dense gives NHWC weights only to NHWC layers
    source = Root().to(memory_format=torch.channels_last)
    converted_nhwc, _ = basisn.to_basisn(source, n_basis=4, segment_len=9)
    assert all(layer.channels_last for _, layer in basisn.basis_layers(converted_nhwc))
    assert nhwc_only(basisn.to_dense(nhwc_model).body[2].weight)
    assert basisn.to_dense(nchw_model).body[2].weight.is_contiguous()


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "float"])
def test_save_and_load_round_trip_exactly(tmp_path, pack):
    _, model, _ = converted(0, n_basis=8, segment_len=16, coef_bits=3, coef_quant="pow2", groups=2, exclude=["head"])
    with torch.no_grad():  # make sure trained values (not the decomposition) are what is saved
        model.stem.coef.add_(0.01)
        model.basisn_bank.weight.mul_(1.01)
    path = tmp_path / "model.pt"
    basisn.save_basisn(model, path, extra={"note": "x"}, pack=pack)
    assert torch.load(path, weights_only=True)["config"]["exclude"] == ["head"]
    torch.manual_seed(123)  # a different fresh model: everything must come from the file
    fresh = Net().eval()
    extra = basisn.load_basisn(fresh, path)
    assert extra == {"note": "x"}
    x = torch.randn(2, 3, 9, 9)
    assert torch.equal(fresh(x), model(x))
    latents = {"stem.coef", "grouped.coef", "block.1.coef", "basisn_bank.weight"} if pack else set()
    saved, loaded = model.state_dict(), fresh.state_dict()
    assert latents <= set(saved)
    for key, value in saved.items():  # packed: the latent floats become their quantized values, the rest is exact
        if key in latents:
            assert not torch.equal(loaded[key], value), key
        else:
            assert torch.equal(loaded[key], value), key
    for (_, a), (_, b) in zip(basisn.basis_layers(model), basisn.basis_layers(fresh)):
        assert torch.equal(a.quantized_coefficients(), b.quantized_coefficients())
    assert isinstance(fresh.head, nn.Linear)


def test_exclude_keeps_named_modules_dense():
    _, model, report = converted(0, n_basis=8, segment_len=16, exclude=["stem", "block"])
    assert isinstance(model.stem, nn.Conv2d) and isinstance(model.block[1], nn.Conv2d)
    assert [row["name"] for row in report] == ["grouped", "head"]


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_basis=0), "n_basis=0"),
        (dict(n_basis=8, segment_len=0), "segment_len=0"),
        (dict(n_basis=20, segment_len=16), "n_basis=20"),
        (dict(n_basis=8, coef_bits=1), "coef_bits=1"),
        (dict(n_basis=8, basis_bits=1), "basis_bits=1"),
        (dict(n_basis=8, groups=3), "groups=3"),
        (dict(n_basis=8, groups=0), "groups=0"),
        (dict(n_basis=8, coef_quant="log"), "coef_quant='log'"),
        (dict(n_basis=8, coef_scale="tensor"), "coef_scale='tensor'"),
        (dict(n_basis=8, exclude=["nope"]), "'nope'"),
        (dict(n_basis=8, exclude="stem"), "exclude='stem'"),
        (dict(n_basis=8, init="kmeans"), "init='kmeans'"),
    ],
)
def test_bad_arguments_raise_before_the_model_is_touched(kwargs, message):
    torch.manual_seed(0)
    model = Net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        basisn.to_basisn(model, **kwargs)
    assert "allowed" in str(info.value) or "modules are" in str(info.value) or "pass a list" in str(info.value)
    assert isinstance(model.stem, nn.Conv2d) and not hasattr(model, "basisn_bank")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_double_conversion_is_refused():
    _, model, _ = converted(0, n_basis=8, segment_len=16)
    with pytest.raises(ValueError, match="already basis-mapped"):
        basisn.to_basisn(model, 8, segment_len=16)


def test_kaiming_like_initialisation_of_standalone_layers():
    torch.manual_seed(0)
    layer = basisn.BasisConv2d(64, 64, 3, bank=BasisBank(32, 64), coef_bits=None)
    weight = layer.weight
    expected_std = math.sqrt(2.0 / (64 * 9))
    assert 0.5 * expected_std < weight.std() < 1.5 * expected_std


# ---------------------------------------------------------------- `.weight` is a tensor
def test_weight_is_a_read_only_tensor_equal_to_the_rebuilt_one():
    _, model, _ = converted(0, n_basis=8, segment_len=16)
    layer = model.head
    assert isinstance(layer.weight, torch.Tensor) and layer.weight.shape == (10, 16)
    torch.testing.assert_close(layer.weight, layer.rebuild_weight())
    torch.testing.assert_close(layer.weight, basisn.rebuild_weights(model)["head"])
    for value in (nn.Parameter(torch.zeros(10, 16)), torch.zeros(10, 16)):
        with pytest.raises(AttributeError, match=r"BasisLinear.weight is rebuilt from the shared basis"):
            layer.weight = value
    with pytest.raises(AttributeError, match="cannot be assigned or deleted"):
        del layer.weight
    assert "weight" not in dict(layer.named_parameters())
    seen = {}  # inside the forward, .weight is the pass's one-matmul rebuild, with its graph
    layer.register_forward_pre_hook(lambda module, args: seen.setdefault("weight", module.weight))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    assert seen["weight"].grad_fn is not None and layer.coef.grad is not None


# ---------------------------------------------------------------- Sequential / ModuleList roots
def small_sequential() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))


def test_a_sequential_root_converts_in_place_and_keeps_len_indexing_and_iteration(tmp_path):
    torch.manual_seed(0)
    original = small_sequential().eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), n_basis=9, segment_len=9, coef_bits=None, basis_bits=None)
    assert isinstance(model, nn.Sequential) and len(model) == 4
    assert [type(m).__name__ for m in model] == ["BasisConv2d", "ReLU", "Flatten", "BasisLinear"]
    assert isinstance(model[-1], basisn.BasisLinear) and [row["name"] for row in report] == ["0", "3"]
    assert sum(p is model.basisn_bank.weight for p in model.parameters()) == 1
    assert [k for k in model.state_dict() if "bank" in k] == ["basisn_bank.weight"]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-6)
    calls = []
    model.basisn_bank.register_forward_pre_hook(lambda *a: calls.append(1))  # never called: not a child
    model(x).sum().backward()
    assert model.basisn_bank.weight.grad is not None and not calls

    path = tmp_path / "seq.pt"
    basisn.save_basisn(model, path)
    fresh = small_sequential()
    basisn.load_basisn(fresh, path)
    assert torch.equal(fresh(x), model(x)) and len(fresh) == 4
    dense = basisn.to_dense(model)
    assert isinstance(dense, nn.Sequential) and list(dense.state_dict()) == list(original.state_dict())
    torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-6)
    restored = copy.deepcopy(model).to(torch.float64)
    assert restored.basisn_bank.weight.dtype == torch.float64 and restored(x.double()).dtype == torch.float64


def test_a_sequential_root_built_on_meta_loads_with_to_empty_or_assign():
    """The Parameter objects are replaced there; the bank must follow the one the root holds."""
    torch.manual_seed(0)
    model, _ = basisn.to_basisn(small_sequential(), n_basis=4, segment_len=9)
    state, x = model.state_dict(), torch.randn(2, 3, 8, 8)
    for assign in (False, True):
        with torch.device("meta"):
            skeleton = small_sequential()
        skeleton, _ = basisn.to_basisn(skeleton, n_basis=4, segment_len=9, init="none")
        if not assign:
            skeleton.to_empty(device="cpu")
        skeleton.load_state_dict(state, assign=assign)
        assert torch.equal(skeleton[0].weight, model[0].weight)  # outside a forward too
        assert torch.equal(skeleton(x), model(x))
        assert skeleton.basisn_bank.weight is dict(skeleton.named_parameters())["basisn_bank.weight"]
    missing = {k: v for k, v in state.items() if k != "basisn_bank.weight"}
    with pytest.raises(RuntimeError, match='Missing key.*"basisn_bank.weight"'):
        skeleton.load_state_dict(missing)


def test_a_module_list_root_converts_and_its_layers_rebuild_on_their_own():
    torch.manual_seed(0)
    original = nn.ModuleList([nn.Linear(6, 6), nn.Linear(6, 3)])
    model, _ = basisn.to_basisn(copy.deepcopy(original), n_basis=6, segment_len=6, coef_bits=None, basis_bits=None)
    assert len(model) == 2 and all(isinstance(m, basisn.BasisLinear) for m in model)
    x = torch.randn(4, 6)
    torch.testing.assert_close(model[1](model[0](x)), original[1](original[0](x)), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- attention
def test_multihead_attention_is_fully_mapped_and_keeps_its_fast_path(monkeypatch):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    original = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), 8, 8, coef_bits=None, basis_bits=None)
    attention = model.layers[0].self_attn
    assert isinstance(attention, basisn.BasisMultiheadAttention) and isinstance(attention, nn.MultiheadAttention)
    assert [row["name"] for row in report][:4] == [
        "layers.0.self_attn.in_proj", "layers.0.self_attn.out_proj", "layers.0.linear1", "layers.0.linear2",
    ]  # fmt: skip
    matrices = [key for key, value in model.state_dict().items() if value.dim() >= 2 and key != "basisn_bank.weight"]
    assert all(key.endswith(".coef") for key in matrices)  # no dense weight matrix is left
    assert not report.left_dense
    x = torch.randn(3, 5, 16)
    fused = []
    native = torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a: fused.append(1) or native(*a))
    with torch.no_grad():  # inference: PyTorch's fused encoder kernel runs on the rebuilt weights
        torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-5)
    assert len(fused) == 4  # two layers, original and converted
    out = model(x)  # with autograd: the ordinary path, gradients reach every projection's coefficients
    assert len(fused) == 4
    torch.testing.assert_close(out, original(x), rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    assert attention.in_proj.coef.grad.abs().sum() > 0 and attention.out_proj.coef.grad.abs().sum() > 0
    with pytest.raises(AttributeError, match="in_proj_weight is rebuilt"):
        attention.in_proj_weight = nn.Parameter(torch.zeros(48, 16))

    dense = basisn.to_dense(model)
    assert type(dense.layers[0].self_attn) is nn.MultiheadAttention
    assert list(dense.state_dict()) == list(original.state_dict())
    torch.testing.assert_close(dense(x), original(x), rtol=1e-5, atol=1e-5)
    kept, report = basisn.to_basisn(copy.deepcopy(original), 8, 8, exclude=["layers.1.self_attn"])
    assert type(kept.layers[1].self_attn) is nn.MultiheadAttention and "layers.1.linear1" in [r["name"] for r in report]
    assert [(r["name"], r["reason"]) for r in report.left_dense] == [
        ("layers.1.self_attn", "excluded (exclude contains 'layers.1.self_attn')"),
        ("layers.1.self_attn.out_proj", "excluded (exclude contains 'layers.1.self_attn')"),
    ]


def test_attention_with_separate_key_and_value_sizes_maps_its_three_projections(tmp_path):
    torch.manual_seed(0)

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 4, kdim=8, vdim=12)

        def forward(self, q, k, v):
            return self.attention(q, k, v)[0]

    original = Cross().eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), 8, 8, coef_bits=None, basis_bits=None)
    names = [row["name"] for row in report]
    assert names == ["attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj"]
    q, k, v = torch.randn(3, 2, 16), torch.randn(4, 2, 8), torch.randn(4, 2, 12)
    torch.testing.assert_close(model(q, k, v), original(q, k, v), rtol=1e-5, atol=1e-6)
    basisn.save_basisn(model, tmp_path / "cross.pt")
    fresh = Cross()
    basisn.load_basisn(fresh, tmp_path / "cross.pt")
    assert torch.equal(fresh(q, k, v), model(q, k, v))
    assert list(basisn.to_dense(model).state_dict()) == list(original.state_dict())


# ---------------------------------------------------------------- ties, skipped layers, meta, all-or-nothing load
class Tied(nn.Module):
    """A module used twice (`again` is `first`) and two Linears sharing one weight Parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)
        self.second.weight = self.first.weight
        self.again = self.first

    def forward(self, x):
        return self.again(self.second(self.first(x)))


def test_tied_weights_get_one_set_of_coefficients_and_stay_tied_in_to_dense():
    torch.manual_seed(0)
    original = Tied().eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), 8, 8, coef_bits=None, basis_bits=None)
    assert [row["name"] for row in report] == ["first"] and report.shared == {"first": ["again", "second"]}
    assert model.again is model.first and model.second.coef is model.first.coef
    assert model.second.bias is not model.first.bias  # the biases were not tied
    x = torch.randn(3, 8)
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-6)
    dense = basisn.to_dense(model)
    assert dense.again is dense.first and dense.second.weight is dense.first.weight
    assert sum(p.numel() for p in dense.parameters()) == sum(p.numel() for p in original.parameters())


def test_a_tied_bias_is_shared_with_its_weight_and_a_bias_tied_alone_keeps_both_layers_dense():
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)).eval()
    original[1].bias = original[0].bias  # a bias tie alone: one set of coefficients cannot express it
    original[3].weight, original[3].bias = original[2].weight, original[2].bias
    model, report = basisn.to_basisn(copy.deepcopy(original), 4, 4, coef_bits=None, basis_bits=None)
    assert [row["name"] for row in report] == ["2"] and report.shared == {"2": ["3"]}
    assert [row["name"] for row in report.left_dense] == ["0", "1"] and model[1].bias is model[0].bias
    assert model[3].bias is model[2].bias and model[3].coef is model[2].coef
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), original(x), rtol=1e-5, atol=1e-6)
    dense = basisn.to_dense(model)
    assert dense[3].weight is dense[2].weight and dense[3].bias is dense[2].bias


class Doubled(nn.Linear):
    def forward(self, x):
        return 2 * super().forward(x)


class Mixed(nn.Module):
    """One Linear that maps, and every kind of weight that does not."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.tied_head = nn.Linear(8, 20, bias=False)
        self.tied_head.weight = self.embedding.weight
        self.lstm = nn.LSTM(8, 8)
        self.conv1d = nn.Conv1d(8, 8, 3)
        self.conv3d = nn.Conv3d(2, 2, 3)
        self.transposed = nn.ConvTranspose2d(2, 2, 3)
        self.normed = torch.nn.utils.parametrizations.weight_norm(nn.Linear(8, 8))
        self.custom = Doubled(8, 8)
        self.body = nn.Linear(8, 8)

    def forward(self, tokens):
        return self.tied_head(self.custom(self.normed(self.body(self.embedding(tokens)))))


def test_layers_that_cannot_be_mapped_are_left_dense_and_listed_with_the_reason():
    torch.manual_seed(0)
    original = Mixed().eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), 8, 8, coef_bits=None, basis_bits=None)
    assert [row["name"] for row in report] == ["body"]
    reasons = {row["name"]: (row["type"], row["reason"]) for row in report.left_dense}
    assert set(reasons) == {"embedding", "tied_head", "lstm", "conv1d", "conv3d", "transposed", "normed", "custom"}
    assert reasons["normed"] == (
        "ParametrizedLinear",
        "a parametrized weight (torch.nn.utils.parametrize): not basis-mapped",
    )
    assert reasons["custom"] == ("Doubled", "a subclass of nn.Linear with its own forward: not basis-mapped")
    assert "embedding table" in reasons["embedding"][1] and "recurrent" in reasons["lstm"][1]
    assert "tied to 'embedding'" in reasons["tied_head"][1] and "transposed convolution" in reasons["transposed"][1]
    assert reasons["conv3d"] == (
        "Conv3d",
        "a Conv3d: only 2-D convolutions (nn.Conv2d), nn.Linear and attention are mapped",
    )
    assert model.tied_head.weight is model.embedding.weight  # the tie is kept
    assert len(report.notes()) == 8 and all("\n" not in note for note in report.notes())
    tokens = torch.randint(0, 20, (2, 5))
    torch.testing.assert_close(model(tokens), original(tokens), rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"no nn.Conv2d / nn.Linear / nn.MultiheadAttention to convert.*0 \(LSTM\): recurrent"
    ):
        basisn.to_basisn(nn.Sequential(nn.LSTM(4, 4)), 2, 4)


def test_meta_models_convert_structurally_or_refuse_in_one_line():
    with torch.device("meta"):
        model = Net()
    with pytest.raises(ValueError, match=r"^model is on the meta device: .* use init='none'") as info:
        basisn.to_basisn(model, 8, 16)
    assert "\n" not in str(info.value) and not hasattr(model, "basisn_bank")
    model, _ = basisn.to_basisn(model, 8, 16, init="none")
    assert model.stem.coef.is_meta and model(torch.zeros(1, 3, 8, 8, device="meta")).shape == (1, 10)


def test_a_failed_load_leaves_the_model_untouched(tmp_path):
    _, model, _ = converted(0, n_basis=8, segment_len=16)
    path = tmp_path / "model.pt"
    basisn.save_basisn(model, path)
    other = Net()
    other.head = nn.Linear(16, 7)  # another architecture: the checkpoint's head has 10 outputs
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"model.pt does not fit this model \(Net\), which is unchanged: .*head"
    ) as info:
        basisn.load_basisn(other, path)
    assert "\n" not in str(info.value)
    assert isinstance(other.stem, nn.Conv2d) and not hasattr(other, "basisn_bank") and not other._forward_pre_hooks
    assert list(other.state_dict()) == list(before) and all(
        torch.equal(before[k], v) for k, v in other.state_dict().items()
    )
