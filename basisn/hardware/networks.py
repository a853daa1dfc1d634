"""The paper's networks as shapes: ResNet-18/34/50 and DenseNet-121 at 224x224 (ImageNet, 1000 classes), and
CIFAR-style ResNet-18/34 and DenseNet-121 at 32x32 (CIFAR-100, 100 classes), from `basisn.models`; and, beside
them, torchvision's ViT-B/16 at 224x224 (a transformer: the paper's abstract names language processing too;
how attention is costed: docs/hardware.md, "Attention and transformers").

Models are built on the `meta` device (no memory, no random initialisation cost) and only their shapes are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from basisn.hardware.shapes import NetworkShapes, layer_shapes


@dataclass(frozen=True)
class PaperNetwork:
    model: str  # basisn.models.build_model name, or a torchvision.models builder when library="torchvision"
    input_size: int  # square input, 3 channels
    num_classes: int
    dataset: str
    library: str = "basisn"  # "basisn" | "torchvision"

    def build(self) -> torch.nn.Module:
        """The model, randomly initialised (build it on the meta device: only shapes are needed)."""
        if self.library == "torchvision":
            from torchvision import models

            return getattr(models, self.model)(weights=None, num_classes=self.num_classes)
        from basisn.models import build_model  # torchvision: imported only when a network is built

        return build_model(self.model, self.num_classes, 3)

    def source(self) -> str:
        """Where the shapes come from, for hw-eval's summary."""
        if self.library == "torchvision":
            call = f"torchvision.models.{self.model}(weights=None, num_classes={self.num_classes})"
        else:
            call = f"basisn.models.build_model({self.model!r}, {self.num_classes}, 3)"
        return f"{call} at {self.input_size}x{self.input_size}"


PAPER_NETWORKS: dict[str, PaperNetwork] = {
    "resnet18": PaperNetwork("resnet18", 224, 1000, "ImageNet"),
    "resnet34": PaperNetwork("resnet34", 224, 1000, "ImageNet"),
    "resnet50": PaperNetwork("resnet50", 224, 1000, "ImageNet"),
    "densenet121": PaperNetwork("densenet121", 224, 1000, "ImageNet"),
    "cifar_resnet18": PaperNetwork("cifar_resnet18", 32, 100, "CIFAR-100"),
    "cifar_resnet34": PaperNetwork("cifar_resnet34", 32, 100, "CIFAR-100"),
    "cifar_densenet121": PaperNetwork("cifar_densenet121", 32, 100, "CIFAR-100"),
}
# Networks hw-eval can evaluate beside the paper's (not in its default list: name them in hardware.networks).
OTHER_NETWORKS: dict[str, PaperNetwork] = {
    "vit_b_16": PaperNetwork("vit_b_16", 224, 1000, "ImageNet", library="torchvision"),
}
NETWORKS: dict[str, PaperNetwork] = PAPER_NETWORKS | OTHER_NETWORKS


def paper_shapes(name: str) -> NetworkShapes:
    """Shapes of one of NETWORKS (a plain model: the basisn scheme maps every layer)."""
    if name not in NETWORKS:
        raise ValueError(f"network {name!r} is unknown; allowed: {', '.join(NETWORKS)}")
    spec = NETWORKS[name]
    with torch.device("meta"):
        model = spec.build()
    return layer_shapes(model, spec.input_size, name=name)
