"""basisn.models: every registered model builds, runs, has the expected size, and bad names are refused."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from torch import nn

from basisn.models import MODELS, SmallResNet, build_model

# name -> (num_classes, in_channels, input height/width) used to run it
SHAPES = {
    "small_resnet": (10, 1, 28),
    "cifar_resnet18": (100, 3, 32),
    "cifar_resnet34": (100, 3, 32),
    "cifar_densenet121": (100, 3, 32),
    "resnet18": (1000, 3, 224),
    "resnet34": (1000, 3, 64),  # the ImageNet models pool adaptively; 64x64 keeps the test fast
    "resnet50": (1000, 3, 64),
    "densenet121": (1000, 3, 64),
}


@cache
def shared_model(name: str, classes: int, channels: int) -> nn.Module:
    """Big models are slow to initialise on a small CPU: build each once per session (tests only read them)."""
    return build_model(name, classes, channels).eval()


def test_every_registered_model_is_covered() -> None:
    assert set(MODELS) == set(SHAPES)


@pytest.mark.parametrize("name", list(SHAPES))
def test_output_shape(name: str) -> None:
    classes, channels, size = SHAPES[name]
    batch = 2 if size <= 32 else 1
    model = shared_model(name, classes, channels)
    with torch.no_grad():
        out = model(torch.randn(batch, channels, size, size))
    assert out.shape == (batch, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet18", "densenet121", "cifar_resnet18", "cifar_densenet121"])
def test_first_convolution_follows_in_channels(name: str) -> None:
    model = build_model(name, 7, 1).eval()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize(
    ("name", "classes", "millions"),
    [
        ("cifar_resnet18", 100, 11.22),
        ("cifar_resnet34", 100, 21.33),
        ("cifar_densenet121", 100, 7.05),
        ("resnet18", 1000, 11.69),
        ("resnet50", 1000, 25.56),
        ("densenet121", 1000, 7.98),
    ],
)
def test_parameter_count_matches_the_published_architecture(name: str, classes: int, millions: float) -> None:
    model = shared_model(name, classes, 3)
    count = sum(p.numel() for p in model.parameters())
    assert count / 1e6 == pytest.approx(millions, rel=0.01)


def test_small_resnet_is_compact_and_not_a_sequential() -> None:
    model = build_model("small_resnet", 10, 1)
    assert isinstance(model, SmallResNet) and not isinstance(model, nn.Sequential)
    assert 50_000 < sum(p.numel() for p in model.parameters()) < 300_000


@pytest.mark.parametrize("name", ["small_resnet", "cifar_resnet18", "cifar_densenet121"])
def test_weights_live_only_in_conv_linear_and_batchnorm(name: str) -> None:
    """The basis mapping replaces Conv2d/Linear; any other weight-holding layer would escape it."""
    model = build_model(name, 10, 3)
    holders = {type(m) for m in model.modules() if any(True for _ in m.parameters(recurse=False))}
    assert holders <= {nn.Conv2d, nn.Linear, nn.BatchNorm2d}


def test_same_seed_gives_the_same_weights() -> None:
    torch.manual_seed(0)
    a = build_model("small_resnet", 10, 1).state_dict()
    torch.manual_seed(0)
    b = build_model("small_resnet", 10, 1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_small_resnet_learns_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = build_model("small_resnet", 10, 1)
    images, labels = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("vgg16", 10, 3), r"unknown model 'vgg16'; allowed: small_resnet, cifar_resnet18, .*densenet121"),
        (("small_resnet", 0, 1), "num_classes 0"),
        (("small_resnet", 10, 0), "in_channels 0"),
    ],
)
def test_bad_arguments_are_refused(args: tuple, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_model(*args)
