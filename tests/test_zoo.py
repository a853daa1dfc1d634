"""`to_basisn` on torchvision's classification zoo, a Sequential CNN and nn.TransformerEncoder.

With a full basis (n = m) and quantization off the decomposition is exact, so the converted model must compute
what the original computes, to float32 rounding: any layer that is converted wrongly, read as `.weight` by code
that expects a tensor, or silently skipped shows up here. `make test` converts the smallest member of every
family (ViT's as a two-layer torchvision VisionTransformer: vit_b_16's 86M weights alone take 20 s to convert),
in about half a minute on two cores; `make test-full` (BASISN_FULL_TESTS=1) every classification builder of
torchvision.models with at most MAX_FULL_PARAMETERS parameters, vit_b_16 at 224x224 included (75 of the 80
builders, about a quarter of an hour).
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torchvision import models as tv

import basisn
from basisn.hardware import layer_shapes
from basisn.hardware.cost import SCHEMES
from basisn.layers import BANK_KEY
from basisn.stages.hardware import main as hw_eval_main

FULL = os.environ.get("BASISN_FULL_TESTS") == "1"
FULL_BASIS = dict(n_basis=8, segment_len=8, coef_bits=None, basis_bits=None)  # n = m: an exact decomposition
TOLERANCE = 2e-5  # relative (Frobenius) error of the logits: float32 rounding through tens of layers

# The smallest member of each family, and the input it is evaluated on (ViT's position embedding fixes 224).
FAMILIES = {
    "resnet18": 32,
    "densenet121": 32,
    "mobilenet_v2": 32,
    "mobilenet_v3_small": 32,
    "efficientnet_b0": 32,
    "shufflenet_v2_x0_5": 32,
    "squeezenet1_1": 48,
    "regnet_y_400mf": 32,
    "convnext_tiny": 32,
    "googlenet": 32,
    "mnasnet0_5": 32,
    "swin_t": 32,
}
MAX_FULL_PARAMETERS = 150_000_000  # larger builders (vit_h_14, regnet_y_128gf, ...) take minutes and >10 GB
FIXED_SIZE = {"vit": 224, "maxvit": 224, "inception": 75}  # models that need a given input (prefix -> size)


def zoo() -> list[str]:
    if not FULL:
        return list(FAMILIES)
    return sorted(tv.list_models(module=tv))  # the classification builders (not detection, video, ...)


def input_size(name: str) -> int:
    if name in FAMILIES:
        return FAMILIES[name]
    return next((size for prefix, size in FIXED_SIZE.items() if name.startswith(prefix)), 64)


def builder_kwargs(name: str) -> dict:
    return {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = tv.get_model(name, weights=None, **builder_kwargs(name)).eval()
    with torch.no_grad():  # torchvision zero-initialises some heads (ViT): logits of 0 would compare trivially
        for param in model.parameters():
            if param.dim() >= 2 and not param.any():
                param.normal_(0, 0.02)
    return model


def assert_same_outputs(original: nn.Module, converted: nn.Module, *inputs: torch.Tensor) -> None:
    with torch.no_grad():
        expected, got = original(*inputs), converted(*inputs)
    assert expected.abs().amax() > 0
    error = float((got - expected).norm() / expected.norm())
    assert error < TOLERANCE, f"relative error {error:.2e}"


def assert_every_weight_is_mapped_or_reported(model: nn.Module, report: list) -> None:
    """No dense weight matrix is left unless the report names its module (and why)."""
    reported = {row["name"] for row in report.left_dense}
    for name, param in model.named_parameters():
        module_name = name.rpartition(".")[0]
        if param.dim() >= 2 and name != BANK_KEY and not name.endswith(".coef"):
            assert module_name in reported, f"{name} {tuple(param.shape)} left dense without a note"
    assert all(row["reason"] for row in report.left_dense)


@pytest.mark.parametrize("name", zoo())
def test_torchvision_model_converts_exactly_with_a_full_basis(name: str) -> None:
    if FULL:
        try:
            with torch.device("meta"):  # counting parameters costs nothing on meta
                model = tv.get_model(name, weights=None, **builder_kwargs(name))
            parameters = sum(p.numel() for p in model.parameters())
        except NotImplementedError:  # RegNet computes its widths with tensors: it does not build on meta
            parameters = sum(p.numel() for p in build(name).parameters())
        if parameters > MAX_FULL_PARAMETERS:
            pytest.skip(f"{name} has {parameters / 1e6:.0f}M parameters (> {MAX_FULL_PARAMETERS / 1e6:.0f}M)")
    original = build(name)
    size = input_size(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    model, report = basisn.to_basisn(copy.deepcopy(original), **FULL_BASIS)
    assert_same_outputs(original, model.eval(), x)
    assert_every_weight_is_mapped_or_reported(model, report)
    assert len(report) >= 3  # every family has several weight layers


def test_a_small_vit_converts_exactly_and_reports_only_parameters_of_no_layer() -> None:
    """torchvision's VisionTransformer (vit_b_16's class, two layers): its weights are the patch convolution,
    the attention projections, the MLPs and the head; the class token and the position embedding belong to no
    layer and are the only entries of left_dense."""
    torch.manual_seed(0)
    vit = tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    nn.init.normal_(vit.heads.head.weight, std=0.02)  # zero-initialised by torchvision
    original = vit.eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), **FULL_BASIS)
    assert_same_outputs(original, model.eval(), torch.randn(2, 3, 32, 32))
    assert_every_weight_is_mapped_or_reported(model, report)
    attention = model.encoder.layers.encoder_layer_0.self_attention
    assert isinstance(attention, basisn.BasisMultiheadAttention)
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj" in [row["name"] for row in report]
    assert {(row["name"], row["type"]) for row in report.left_dense} == {
        ("", "VisionTransformer"),
        ("encoder", "Encoder"),
    }
    assert all("not a Conv2d/Linear/attention weight" in row["reason"] for row in report.left_dense)
    assert report.notes()[0].startswith("(root) (VisionTransformer) left dense: parameter(s) class_token are not")


def test_sequential_cnn_converts_exactly() -> None:
    torch.manual_seed(0)
    original = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), **FULL_BASIS)
    assert isinstance(model, nn.Sequential) and len(model) == len(original)
    assert_same_outputs(original, model.eval(), torch.randn(2, 1, 28, 28))
    assert [row["name"] for row in report] == ["0", "4", "8"]


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_converts_exactly(batch_first: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first, norm_first=not batch_first)
    original = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False).eval()
    model, report = basisn.to_basisn(copy.deepcopy(original), **FULL_BASIS)
    x = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
    assert_same_outputs(original, model.eval(), x)
    assert len(report) == 3 * 4 and not report.left_dense  # in_proj, out_proj, linear1, linear2 per layer
    with torch.enable_grad():  # the autograd path (no fused kernel) gives the same outputs
        torch.testing.assert_close(model(x), original(x), rtol=1e-4, atol=1e-5)


def readme_own_model_blocks() -> list[str]:
    """The python code blocks of the README's "Using `basisn` on your own model" section."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Using `basisn` on your own model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_readme_examples_of_using_basisn_on_your_own_model_run_as_written(tmp_path, monkeypatch) -> None:
    blocks = readme_own_model_blocks()
    assert len(blocks) == 3  # resnet18, a Sequential, a transformer
    monkeypatch.chdir(tmp_path)  # the first example writes model.pt
    for block in blocks:
        torch.manual_seed(0)
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})  # each block runs on its own
    assert (tmp_path / "model.pt").is_file()


# ---------------------------------------------------------------- the cost model's view of a transformer
def test_layer_shapes_cost_every_projection_of_a_converted_transformer() -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    dense = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    model, _ = basisn.to_basisn(copy.deepcopy(dense), 16, 32)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    shapes = layer_shapes(model, (1, 7, 32))
    assert torch.backends.mha.get_fastpath_enabled() == fastpath  # switched off for the hooks only
    rows = {s.name: (s.kind, s.P, s.g, s.L, s.O, s.mapped) for s in shapes.layers}
    assert list(rows)[:4] == [
        "layers.0.self_attn.in_proj", "layers.0.self_attn.out_proj", "layers.0.linear1", "layers.0.linear2",
    ]  # fmt: skip
    assert rows["layers.1.self_attn.in_proj"] == ("linear", 7, 1, 32, 96, True)  # 7 tokens, (3E x E)
    assert rows["layers.1.self_attn.out_proj"] == ("linear", 7, 1, 32, 32, True)
    assert rows["layers.1.linear1"] == ("linear", 7, 1, 32, 64, True)
    assert shapes.basis.n_basis == 16 and len(shapes) == 8
    assert shapes.macs == 2 * 7 * 32 * (96 + 32 + 64 + 64)  # weight-stationary matmuls only (no Q.K^T, A.V)
    assert [s.name for s in layer_shapes(dense, (1, 7, 32)).layers] == list(rows)  # dense: same layers, on CPU too
    with torch.device("meta"):
        assert len(layer_shapes(copy.deepcopy(dense).to("meta"), (1, 7, 32))) == 8

    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.MultiheadAttention(16, 2, kdim=8, vdim=12, batch_first=True)

        def forward(self, x):
            memory = x[..., :8].repeat(1, 3, 1)  # 15 key tokens of 8 features
            return self.attention(x, memory, torch.cat([memory, memory[..., :4]], -1))[0]

    cross = layer_shapes(Cross(), (1, 5, 16))
    assert [(s.name, s.P, s.L, s.O) for s in cross.layers] == [
        ("attention.q_proj", 5, 16, 16), ("attention.k_proj", 15, 8, 16), ("attention.v_proj", 15, 12, 16),
        ("attention.out_proj", 5, 16, 16),
    ]  # fmt: skip


def test_layer_shapes_cost_swin_window_attention_and_every_weight_layer_of_vit_and_swin() -> None:
    with torch.device("meta"):
        models = {name: tv.get_model(name, weights=None) for name in ("swin_t", "vit_b_16")}
    for name, model in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a layer that did not run would warn
            shapes = layer_shapes(model, 224)
        layers = sum(isinstance(m, nn.Linear | nn.Conv2d) for m in model.modules())
        attention = sum(isinstance(m, nn.MultiheadAttention) for m in model.modules())
        assert len(shapes) == layers + attention, name  # each Linear/Conv2d, and each attention's in-projection
    swin = {s.name: (s.P, s.L, s.O) for s in layer_shapes(models["swin_t"], 224).layers}
    assert swin["features.1.0.attn.qkv"] == (56 * 56, 96, 288) and swin["features.1.0.attn.proj"] == (56 * 56, 96, 96)
    assert swin["features.7.1.attn.qkv"] == (7 * 7, 768, 2304)


VIT_BLOCK = """
hardware:
  preset: default
  compare_presets: []
  networks: [vit_b_16, cifar_resnet18]
  crossbars: [64]
  report_crossbars: [64]
  batch: 1
  basis: {n_basis: 64, segment_len: 128, groups: 1}
  sweep: {}
"""


def test_hw_eval_evaluates_vit_b_16_beside_the_paper_networks(tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(VIT_BLOCK)
    assert hw_eval_main(["--params", str(params), "--out", str(tmp_path / "hw")]) == 0
    assert "vit_b_16" in capsys.readouterr().out
    summary = pd.read_csv(tmp_path / "hw" / "summary.csv")
    vit = summary[summary.network == "vit_b_16"]
    assert set(vit.scheme) == set(SCHEMES) and (vit.cycles > 0).all()
    shapes = pd.read_csv(tmp_path / "hw" / "shapes.csv")
    vit_shapes = shapes[shapes.network == "vit_b_16"]
    in_proj = vit_shapes[vit_shapes.name.str.endswith("self_attention.in_proj")]
    assert len(vit_shapes) == 1 + 12 * 4 + 1  # patch conv, 12 x (in_proj, out_proj, 2 MLP), head
    assert len(in_proj) == 12 and set(zip(in_proj.P, in_proj.L, in_proj.O)) == {(197, 768, 2304)}
    info = json.loads((tmp_path / "hw" / "hw_eval.json").read_text())
    assert info["networks"]["vit_b_16"]["source"].startswith("torchvision.models.vit_b_16(weights=None")
    assert info["networks"]["cifar_resnet18"]["source"].startswith("basisn.models.build_model('cifar_resnet18'")
