"""What a PyTorch user of the library hits first (issue 27): no silent no-op on `.weight`, the usual init / weight
decay / prune loops, bounds checked before work, readable outputs for other users, no leftovers, --version and
help texts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import basisn
from basisn import atomic, basis, params

ROOT = Path(__file__).resolve().parents[1]


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


def test_segment_len_has_a_library_bound_checked_before_any_work(monkeypatch):
    monkeypatch.setattr(basis, "_decompose", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"segment_len=100000 is too large; allowed: 1 <= segment_len <= 8192"):
        basisn.to_basisn(tiny(), n_basis=8, segment_len=100_000)
    assert basis.MAX_SEGMENT_LEN == params.MAX_SEGMENT_LEN


def test_a_conversion_that_needs_more_memory_than_the_machine_is_refused_first(monkeypatch):
    monkeypatch.setattr(basis, "_physical_memory", lambda: 2**20)  # a 1 MiB machine
    monkeypatch.setattr(basis, "_decompose", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match=r"needs about .* GiB for these weights, more than this machine's 0\.0 GiB"):
        basisn.to_basisn(tiny(), n_basis=8, segment_len=512)
    weights = [torch.zeros(10, 144), torch.zeros(4, 1, 3, 3)]  # 10 rows of 2 segments, 4 rows of 1, m = 128
    assert basis.conversion_bytes(weights, 8, 128) == 3 * 8 * 24 * 128 + 4 * 8 * 128**2 + 8 * 24 * 8


def test_rebuild_weights_of_a_model_without_basis_layers_says_so():
    with pytest.raises(ValueError, match="Sequential has no basis-mapped layer; convert it with basisn.to_basisn"):
        basisn.rebuild_weights(tiny())


def test_outputs_are_readable_by_other_users_under_the_usual_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic.atomic_write_json(tmp_path / "a.json", {"x": 1})
        with atomic.atomic_directory(tmp_path / "out") as staging:
            (staging / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    old = os.umask(0o077)  # a stricter umask is respected
    try:
        strict = atomic.atomic_write_json(tmp_path / "b.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(strict.stat().st_mode) == 0o600


def test_no_lock_file_is_left_after_a_run_that_fails_or_finishes(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(tmp_path / "out"):
            assert atomic.lock_path(tmp_path / "out").exists()  # held while writing
            raise RuntimeError("the stage failed")
    with atomic.atomic_directory(tmp_path / "out"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_version_and_help_texts():
    run = subprocess.run([sys.executable, "-m", "basisn.cli", "--version"], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == f"basisn {basisn.__version__}"
    assert (ROOT / "basisn" / "py.typed").is_file()
    for command, phrase in (
        ("finetune", "distillation teacher"),
        ("tradeoff", "dense baseline (the train stage's model)"),
        ("evaluate", "fine-tuned BasisN model"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "basisn.cli", command, "--help"], capture_output=True, text=True, check=True
        )
        assert phrase in " ".join(run.stdout.split()), run.stdout


# --------------------------------------------------------------------------------------------------------------
# Item 1: writes to `.weight` raise instead of changing a copy; the usual loops have helpers.
# --------------------------------------------------------------------------------------------------------------
def mapped() -> nn.Module:
    model, _ = basisn.to_basisn(tiny(), n_basis=8, segment_len=16, coef_bits=4)
    return model


@pytest.mark.parametrize(
    "write",
    [
        lambda layer: nn.init.zeros_(layer.weight),
        lambda layer: nn.init.kaiming_uniform_(layer.weight),
        lambda layer: layer.weight.data.zero_(),
        lambda layer: layer.weight.detach().fill_(1.0),
        lambda layer: layer.weight.copy_(torch.zeros_like(layer.weight)),
        lambda layer: layer.weight[0].zero_(),
        lambda layer: layer.weight.__setitem__(0, 1.0),
        lambda layer: setattr(layer.weight, "data", torch.zeros(1)),
        lambda layer: torch.mul(layer.weight, 2, out=layer.weight),
    ],
    ids=[
        "init.zeros_",
        "init.kaiming",
        "data.zero_",
        "detach.fill_",
        "copy_",
        "slice.zero_",
        "setitem",
        "set data",
        "out=",
    ],
)
def test_in_place_writes_to_a_mapped_weight_raise_and_say_how_to_set_weights(write):
    model = mapped()
    for layer in (model[0], model[2]):
        before = layer.weight.detach().clone()
        with torch.no_grad(), pytest.raises(RuntimeError) as caught:
            write(layer)
        message = str(caught.value)
        assert "\n" not in message and f"{type(layer).__name__}.weight cannot be changed in place" in message
        assert ".coef" in message and "basisn.to_dense" in message
        assert torch.equal(layer.weight, before)


def test_the_read_only_weight_still_reads_differentiates_and_saves_as_an_ordinary_tensor(tmp_path):
    model = mapped()
    weight = model[2].weight
    assert type(weight * 2) is torch.Tensor and type(weight.sum()) is torch.Tensor  # results are plain tensors
    out = model(torch.randn(2, 1, 8, 8))
    assert type(out) is torch.Tensor
    weight.square().sum().backward()
    assert model[2].coef.grad.abs().sum() > 0
    torch.save(model[2].weight.detach(), tmp_path / "w.pt")
    loaded = torch.load(tmp_path / "w.pt", weights_only=True)
    assert type(loaded) is torch.Tensor and torch.equal(loaded, model[2].weight.detach())
    plain = torch.zeros_like(loaded)
    plain.copy_(model[2].weight.detach())  # copying *from* the weight is fine
    assert torch.equal(plain, loaded)


def test_type_helpers_find_mapped_layers_for_init_and_weight_decay_loops():
    model = mapped()
    assert not isinstance(model[0], nn.Conv2d)  # why the helpers exist
    assert basisn.is_conv(model[0]) and basisn.is_linear(model[2]) and not basisn.is_conv(model[2])
    assert basisn.is_conv(nn.Conv2d(1, 1, 1)) and basisn.is_linear(nn.Linear(1, 1))
    decay = [
        p for m in model.modules() if basisn.is_conv(m) or basisn.is_linear(m) for p in basisn.weight_parameters(m)
    ]
    assert [id(p) for p in decay] == [id(model[0].coef), id(model[2].coef)]
    others = [p for p in model.parameters() if all(p is not q for q in decay)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.5}, {"params": others, "weight_decay": 0.0}],
                                  lr=0.1)  # fmt: skip
    before = {id(p): p.detach().clone() for p in model.parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient: only weight decay moves a parameter
    optimizer.step()
    assert torch.allclose(model[0].coef, before[id(model[0].coef)] * (1 - 0.1 * 0.5))
    assert all(torch.equal(p, before[id(p)]) for p in others)
    for m in model.modules():  # a custom init written for plain layers, through the helper
        if basisn.is_linear(m):
            for p in basisn.weight_parameters(m):
                nn.init.zeros_(p)
    assert torch.count_nonzero(model[2].weight) == 0


def test_pruning_works_on_the_coefficients_and_refuses_the_rebuilt_weight():
    from torch.nn.utils import prune

    model = mapped()
    with pytest.raises(RuntimeError, match=r"BasisLinear\.weight is rebuilt, not a Parameter.*'coef'"):
        prune.l1_unstructured(model[2], "weight", amount=0.5)
    assert "weight_orig" not in dict(model[2].named_parameters()) and list(model[2]._forward_pre_hooks) == []
    prune.l1_unstructured(model[2], "coef", amount=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 1, 8, 8)
    for _ in range(3):  # training through the rebuild: the mask applies every pass, the graph is fresh each time
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    mask = model[2].coef_mask.bool()
    assert 0.4 < float((~mask).float().mean()) < 0.6
    model(x)
    assert torch.count_nonzero(model[2].coef[~mask]) == 0
    expected = basisn.rebuild_weights(model)["2"]
    prune.remove(model[2], "coef")
    assert torch.equal(basisn.rebuild_weights(model)["2"], expected)
    assert assert_plain_param(model[2].coef)


def assert_plain_param(value: object) -> bool:
    return isinstance(value, nn.Parameter)


# --------------------------------------------------------------------------------------------------------------
# Item 2: the cost model prices the model's own basis.
# --------------------------------------------------------------------------------------------------------------
def test_the_cost_model_prices_the_models_own_basis_and_refuses_a_contradicting_one():
    from basisn.hardware import BasisSpec, evaluate, layer_shapes, preset

    model, _ = basisn.to_basisn(tiny(), n_basis=8, segment_len=16, coef_bits=4)
    shapes = layer_shapes(model, 8)
    assert shapes.basis == BasisSpec(8, 16, 1, coef_bits=4)
    own = evaluate(shapes, preset(), "basisn", 16)
    assert evaluate(shapes, preset(), "basisn", 16, basis=shapes.basis).totals == own.totals  # the same basis: fine
    assert evaluate(shapes, preset(), "basisn", 16, basis={"coef_bits": 4}).totals == own.totals  # a dict fills in
    for scheme in ("basisn", "ideal"):
        with pytest.raises(ValueError, match=r"^basis contradicts the model's own basis: coef_bits=None \(model: 4\);"):
            evaluate(shapes, preset(), scheme, 16, basis=BasisSpec(8, 16, 1))
    with pytest.raises(ValueError, match=r"n_basis=4 \(model: 8\), segment_len=8 \(model: 16\)"):
        evaluate(shapes, preset(), "basisn", 16, basis=BasisSpec(4, 8, 1, coef_bits=4))
    what_if = evaluate(shapes, preset(), "basisn", 16, basis=BasisSpec(8, 16, 1), override_basis=True)
    assert what_if["coef_bits"] is None and what_if["energy_j"] > own["energy_j"]  # 8-bit MACs cost more
    plain = layer_shapes(tiny(), 8)  # no basis of its own: any basis is the user's choice
    assert evaluate(plain, preset(), "basisn", 16, basis=BasisSpec(8, 16, 1))["n_basis"] == 8


# --------------------------------------------------------------------------------------------------------------
# Item 4: layer_shapes errors in one line naming input_size; example inputs for multi-input models.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("input_size", "pattern"),
    [
        (
            (4, 8, 8),
            r"does not run on input_size=\(4, 8, 8\) \(an input of shape \(1, 4, 8, 8\)\): RuntimeError: .*1 channels",
        ),
        (8.0, r"^input_size=8\.0 is not allowed; use an int"),
        ((7,), r"does not run on input_size=\(7,\) .*mat1 and mat2 shapes cannot be multiplied"),
        ((0, 8), r"^input_size=\(0, 8\) is not allowed"),
        ("8", r"^input_size='8' is not allowed"),
    ],
)
def test_layer_shapes_errors_are_one_line_naming_input_size(input_size, pattern):
    from basisn.hardware import layer_shapes

    with pytest.raises(ValueError, match=pattern) as caught:
        layer_shapes(tiny(), input_size)
    assert "\n" not in str(caught.value) and "input_size" in str(caught.value)


class TwoInputs(nn.Module):
    """A forward with two inputs (an image and side features), the second by keyword in one test."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.side, self.head = nn.Conv2d(1, 4, 3), nn.Linear(5, 6), nn.Linear(4 * 6 * 6 + 6, 3)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if bool(features.sum() > 1e9):  # data-dependent: does not run on the meta device
            features = features * 0
        return self.head(torch.cat([self.conv(image).flatten(1), self.side(features)], 1))


def test_layer_shapes_takes_example_inputs_of_a_multi_input_model():
    from basisn.hardware import layer_shapes

    image, features = torch.zeros(2, 1, 8, 8), torch.zeros(2, 5)
    positional = layer_shapes(TwoInputs(), example_inputs=(image, features))
    keyword = layer_shapes(TwoInputs(), example_inputs={"image": image, "features": features})
    assert positional.layers == keyword.layers
    assert [(s.name, s.P, s.L, s.O) for s in positional.layers] == [
        ("conv", 36, 9, 4),
        ("side", 1, 5, 6),
        ("head", 1, 150, 3),
    ]
    with pytest.raises(ValueError, match=r"^layer_shapes needs exactly one of input_size and example_inputs \(got n"):
        layer_shapes(TwoInputs())
    with pytest.raises(ValueError, match=r"^example_inputs=int is not allowed"):
        layer_shapes(TwoInputs(), example_inputs=3)
    with pytest.raises(ValueError, match=r"does not run on example_inputs \(shapes \(2, 1, 8, 8\)\): TypeError"):
        layer_shapes(TwoInputs(), example_inputs=(image,))


def test_load_basisn_on_a_garbage_file_is_one_line_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as caught:
        basisn.load_basisn(model, garbage)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{garbage} is not a basisn model checkpoint (unreadable")
    assert "weights_only=False" not in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"no such file"):
        basisn.load_basisn(tiny(), tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------------------------
# Item 5: readable cost results.
# --------------------------------------------------------------------------------------------------------------
def test_evaluation_has_a_readable_repr_a_frame_and_an_html_view():
    from basisn.hardware import evaluate, layer_shapes, preset

    evaluation = evaluate(layer_shapes(tiny(), 8), preset(), "basisn", 16)
    text = repr(evaluation)
    assert text.startswith("<Evaluation basisn on Sequential (N = 16, batch 1): cycles ")
    assert "object at 0x" not in text and "J·s" in text and "e-" not in text
    frame = evaluation.to_frame()
    assert len(frame) == 1 and frame.loc[0, "energy_j"] == evaluation["energy_j"]
    html = evaluation._repr_html_()
    assert "<table" in html and "energy: adc" in html and "energy: write" not in html  # only the terms it has


def test_compare_gives_one_tidy_row_per_scheme_with_ratios_and_a_plot():
    import matplotlib

    matplotlib.use("Agg")
    from basisn.hardware import SCHEMES, compare, evaluate, layer_shapes, plot_compare, preset, readable

    model, _ = basisn.to_basisn(tiny(), n_basis=8, segment_len=16, coef_bits=4)
    table = compare(model, n_crossbars=16, input_size=8)
    assert list(table["scheme"]) == list(SCHEMES)
    shapes = layer_shapes(model, 8)
    for row in table.itertuples():
        totals = evaluate(shapes, preset(), row.scheme, 16).totals
        assert (row.cycles, row.energy_j, row.edp_js) == (totals["cycles"], totals["energy_j"], totals["edp_js"])
    best = table.set_index("scheme").loc["reprogram_best"]
    mine = table.set_index("scheme").loc["basisn"]
    assert mine["edp_vs_reprogram_best"] == pytest.approx(mine["edp_js"] / best["edp_js"])
    assert best["cycles_vs_reprogram_best"] == 1.0
    text = readable(table)
    assert text.loc[0, "cycles"].replace(",", "").isdigit() and text.loc[0, "energy_j"].endswith("J")
    assert all(value.endswith(("%", "x")) for value in text["edp_vs_reprogram_best"])
    ax = plot_compare(table)
    assert ax.get_xscale() == "log" and "reprogram_best (= 1)" in [t.get_text() for t in ax.get_legend().get_texts()]
    with pytest.raises(ValueError, match=r"^baseline='nope' is not allowed"):
        compare(model, input_size=8, baseline="nope")
    with pytest.raises(ValueError, match=r"^basis contradicts the model's own basis"):
        compare(model, input_size=8, basis={"coef_bits": 8})


@pytest.mark.parametrize(
    ("ratio", "text"),
    [(7830.4, "7,830x"), (12.34, "12.3x"), (7.83, "783%"), (0.0803, "8.03%"), (0.00153, "0.153%"),
     (1.2e-7, "0.0000120%"), (0.0, "0%"), (float("nan"), "n/a")],
)  # fmt: skip
def test_ratios_are_formatted_by_magnitude_never_with_an_exponent(ratio, text):
    from basisn.hardware import format_ratio

    assert format_ratio(ratio) == text


# --------------------------------------------------------------------------------------------------------------
# Item 6: checkpoints at the stored bit widths.
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        {"coef_bits": 4},
        {"coef_bits": 3, "coef_quant": "pow2"},
        {"coef_bits": 4, "groups": 4},
        {"coef_bits": 8, "coef_scale": "layer", "basis_bits": 6},
        {"coef_bits": 2, "groups": 2, "assignment": "learned"},
    ],
    ids=["uniform4", "pow2", "groups", "layer-scale", "unassigned"],
)
def test_packed_checkpoints_restore_the_quantized_weights_bit_for_bit(tmp_path, settings):
    model, _ = basisn.to_basisn(tiny(), n_basis=8, segment_len=16, **settings)
    basisn.save_basisn(model, tmp_path / "packed.pt")
    checkpoint = torch.load(tmp_path / "packed.pt", weights_only=True)
    assert checkpoint["format"] == "basisn-model/2"
    assert set(checkpoint["packed"]) == {"0.coef", "2.coef", "basisn_bank.weight"}
    fresh = tiny()
    basisn.load_basisn(fresh, tmp_path / "packed.pt")
    for (_, saved), (_, loaded) in zip(basisn.basis_layers(model), basisn.basis_layers(fresh)):
        assert torch.equal(saved.quantized_coefficients(), loaded.quantized_coefficients())
    assert torch.equal(model.basisn_bank.quantized(), fresh.basisn_bank.quantized())
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), fresh(x))


def test_a_4_bit_resnet18_checkpoint_is_close_to_its_packed_size(tmp_path):
    import torchvision

    model, _ = basisn.to_basisn(torchvision.models.resnet18(), n_basis=64, segment_len=128, coef_bits=4, init="random")
    basisn.save_basisn(model, tmp_path / "packed.pt")
    basisn.save_basisn(model, tmp_path / "float.pt", pack=False)
    coefficients = sum(layer.coef.numel() for _, layer in basisn.basis_layers(model))
    packed_size = coefficients * 4 / 8 + 64 * 128 * 8 / 8  # 4-bit coefficients + the 8-bit basis
    size = (tmp_path / "packed.pt").stat().st_size
    assert size <= 1.3 * packed_size, (size, packed_size)
    assert (tmp_path / "float.pt").stat().st_size > 6 * size  # the float latents: what pack=False keeps
    float_model = torchvision.models.resnet18()
    basisn.load_basisn(float_model, tmp_path / "float.pt")
    assert torch.equal(float_model.fc.coef, model.fc.coef)  # pack=False keeps the latents training resumes from


def test_the_pipelines_model_files_keep_float_latents_and_packed_files_load_as_model_files(tmp_path):
    from basisn.checkpoints import load_model, save_model
    from basisn.models import build_model

    torch.manual_seed(0)
    model, _ = basisn.to_basisn(build_model("small_resnet", 10, 1), n_basis=8, segment_len=9, coef_bits=4)
    meta = {"model": "small_resnet", "num_classes": 10, "in_channels": 1, "input_size": 28, "dataset": "d"}
    save_model(model, tmp_path / "stage.pt", meta)  # decompose -> finetune: training continues from the latents
    stage_file = torch.load(tmp_path / "stage.pt", weights_only=True)
    assert stage_file["format"] == "basisn-model/1"
    name, layer = basisn.basis_layers(model)[0]
    assert torch.equal(stage_file["state_dict"][f"{name}.coef"], layer.coef)
    basisn.save_basisn(model, tmp_path / "packed.pt", extra={"meta": meta})
    loaded, _ = load_model(tmp_path / "packed.pt")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))


def test_layer_repr_says_segments_per_row():
    model, _ = basisn.to_basisn(tiny(), n_basis=8, segment_len=16, coef_bits=4)
    assert "segments_per_row=9" in repr(model[2]) and "segments_per_row=1" in repr(model[0])


def test_the_readme_comparison_table_is_what_its_code_prints():
    import re

    import torchvision

    from basisn.hardware import compare, readable

    section = (ROOT / "README.md").read_text().split("## Using `basisn` on your own model", 1)[1]
    quoted = re.search(r"```text\n(.*?)```", section, flags=re.DOTALL).group(1).rstrip("\n")
    model, _ = basisn.to_basisn(torchvision.models.resnet18(num_classes=100), n_basis=64, segment_len=128,
                                coef_bits=4, coef_quant="uniform", basis_bits=8, groups=1, init="none")  # fmt: skip
    table = compare(model, n_crossbars=64, input_size=(3, 224, 224))  # shapes and basis only: values do not matter
    columns = ["scheme", "cycles", "energy_j", "edp_js", "cycles_vs_reprogram_best", "edp_vs_reprogram_best"]
    assert readable(table)[columns].to_string(index=False) == quoted
