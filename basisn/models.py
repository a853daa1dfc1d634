"""Model zoo: a small default ResNet for Fashion-MNIST, CIFAR-style ResNet/DenseNet, torchvision ImageNet models.

The paper evaluates ResNet-18/34/50 and DenseNet-121 on CIFAR-100 and ImageNet; the small ResNet keeps the
default pipeline runnable on a laptop CPU. Every model is an ordinary ``nn.Module`` built from ``nn.Conv2d`` and
``nn.Linear``, so ``basisn.to_basisn`` can swap those layers for basis-mapped ones. Nothing is downloaded:
torchvision models are built with ``weights=None``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision import models as tv
from torchvision.models.densenet import _DenseBlock, _Transition
from torchvision.models.resnet import BasicBlock


def _init_like_torchvision(model: nn.Module) -> None:
    """Kaiming-normal convolutions and unit BatchNorm, as torchvision's ResNet does (reproducible given the seed)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)


def _basic_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` torchvision BasicBlocks; the first one changes width/resolution through a 1x1 projection."""
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes),
        )
    layers = [BasicBlock(in_planes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class SmallResNet(nn.Module):
    """Compact ResNet for 28x28 (or 32x32) inputs: the default model, trainable on a 2-core CPU.

    3x3 stem at full resolution, then one stage per width, each starting with a stride-2 BasicBlock, global
    average pooling and a Linear head. With the default widths 16/32/64 and one block per stage it has 78k
    parameters; on Fashion-MNIST (crop+flip augmentation, batch 256, SGD-Nesterov one-cycle to lr 0.2, weight decay
    5e-4) it reached 90.6% test accuracy after 5 epochs at about 13-17 s per epoch on 2 CPU threads.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        widths: tuple[int, ...] = (16, 32, 64),
        blocks: tuple[int, ...] = (1, 1, 1),
        stem_width: int = 16,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths or min(widths) < 1 or min(blocks) < 1 or stem_width < 1:
            raise ValueError(f"widths {widths} / blocks {blocks} / stem_width {stem_width}: need equal-length >= 1")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        stages, planes = [], stem_width
        for width, count in zip(widths, blocks, strict=True):
            stages.append(_basic_stage(planes, width, count, stride=2))
            planes = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        _init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs (He et al. 2016 as adapted in e.g. kuangliu/pytorch-cifar).

    3x3 stem with stride 1 and no max-pool, four stages of torchvision BasicBlocks with widths 64-512 (strides
    1, 2, 2, 2), global average pooling, Linear head. [2,2,2,2] is ResNet-18 (11.2M parameters at 100 classes).
    """

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _basic_stage(64, 64, blocks[0], stride=1)
        self.layer2 = _basic_stage(64, 128, blocks[1], stride=2)
        self.layer3 = _basic_stage(128, 256, blocks[2], stride=2)
        self.layer4 = _basic_stage(256, 512, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        _init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CifarDenseNet(nn.Module):
    """DenseNet-BC for 32x32 inputs, as in kuangliu/pytorch-cifar (DenseNet-121: ~7.0M parameters at 100 classes).

    Stem: one 3x3 convolution with stride 1 to 2*growth channels, no BatchNorm/max-pool (the first dense layer
    normalises). Dense blocks and transitions are torchvision's (bottleneck 4*growth, compression 0.5); written
    here is only the stem and the head (final BatchNorm, ReLU, global average pooling, Linear).
    """

    def __init__(
        self,
        blocks: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        growth_rate: int = 32,
        compression: float = 0.5,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        channels = 2 * growth_rate
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_channels, channels, 3, padding=1, bias=False))
        for i, layers in enumerate(blocks):
            block = _DenseBlock(layers, channels, bn_size=bn_size, growth_rate=growth_rate, drop_rate=0.0)
            self.features.add_module(f"denseblock{i + 1}", block)
            channels += layers * growth_rate
            if i != len(blocks) - 1:
                reduced = int(channels * compression)
                self.features.add_module(f"transition{i + 1}", _Transition(channels, reduced))
                channels = reduced
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.features.add_module("relu5", nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        _init_like_torchvision(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _torchvision(factory: Callable[..., nn.Module]) -> Callable[[int, int], nn.Module]:
    """A torchvision ImageNet model (random init, no download) with its first convolution fitted to the input."""

    def build(num_classes: int, in_channels: int) -> nn.Module:
        model = factory(weights=None, num_classes=num_classes)
        if in_channels != 3:
            owner, attr = (model.features, "conv0") if hasattr(model, "features") else (model, "conv1")
            old = getattr(owner, attr)
            new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            setattr(owner, attr, new)
        return model

    return build


MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "small_resnet": lambda num_classes, in_channels: SmallResNet(num_classes, in_channels),
    "cifar_resnet18": lambda num_classes, in_channels: CifarResNet((2, 2, 2, 2), num_classes, in_channels),
    "cifar_resnet34": lambda num_classes, in_channels: CifarResNet((3, 4, 6, 3), num_classes, in_channels),
    "cifar_densenet121": lambda num_classes, in_channels: CifarDenseNet((6, 12, 24, 16), num_classes, in_channels),
    "resnet18": _torchvision(tv.resnet18),
    "resnet34": _torchvision(tv.resnet34),
    "resnet50": _torchvision(tv.resnet50),
    "densenet121": _torchvision(tv.densenet121),
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def build_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    """A freshly initialised model from ``MODELS`` (seed torch beforehand for reproducible weights)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes {num_classes} must be >= 1")
    if in_channels < 1:
        raise ValueError(f"in_channels {in_channels} must be >= 1")
    return MODELS[name](num_classes, in_channels)
