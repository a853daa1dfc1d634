"""The paper's networks as shapes: ResNet-18/34/50 and DenseNet-121 at 224x224 (ImageNet, 1000 classes), and
CIFAR-style ResNet-18/34 and DenseNet-121 at 32x32 (CIFAR-100, 100 classes), from `basisn.models`.

Models are built on the `meta` device (no memory, no random initialisation cost) and only their shapes are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from basisn.hardware.shapes import NetworkShapes, layer_shapes


@dataclass(frozen=True)
class PaperNetwork:
    model: str  # basisn.models.build_model name
    input_size: int  # square input, 3 channels
    num_classes: int
    dataset: str


PAPER_NETWORKS: dict[str, PaperNetwork] = {
    "resnet18": PaperNetwork("resnet18", 224, 1000, "ImageNet"),
    "resnet34": PaperNetwork("resnet34", 224, 1000, "ImageNet"),
    "resnet50": PaperNetwork("resnet50", 224, 1000, "ImageNet"),
    "densenet121": PaperNetwork("densenet121", 224, 1000, "ImageNet"),
    "cifar_resnet18": PaperNetwork("cifar_resnet18", 32, 100, "CIFAR-100"),
    "cifar_resnet34": PaperNetwork("cifar_resnet34", 32, 100, "CIFAR-100"),
    "cifar_densenet121": PaperNetwork("cifar_densenet121", 32, 100, "CIFAR-100"),
}


def paper_shapes(name: str) -> NetworkShapes:
    """Shapes of one of PAPER_NETWORKS (a plain model: the basisn scheme maps every layer)."""
    if name not in PAPER_NETWORKS:
        raise ValueError(f"network {name!r} is unknown; allowed: {', '.join(PAPER_NETWORKS)}")
    from basisn.models import build_model  # torchvision: imported only when a network is built

    spec = PAPER_NETWORKS[name]
    with torch.device("meta"):
        model = build_model(spec.model, spec.num_classes, 3)
    return layer_shapes(model, spec.input_size, name=name)
