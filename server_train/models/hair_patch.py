"""The per-hair class network: a patch of the frame around one located hair -> logit of
P(miniaturised). The device runs its ONNX export (``device.models.hair_classes``).

Four 3x3 conv-BN-ReLU blocks (widths ``widths``) with 2x2 max-pooling between them, global
average pooling and a linear layer: about 45 k parameters at the default widths, about 2 MFLOP
a patch of 40x40.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["HairPatchNet", "hair_patch_net", "DEFAULT_WIDTHS"]

DEFAULT_WIDTHS = (16, 32, 48, 64)


class HairPatchNet(nn.Module):
    """Nx3xPxP normalised RGB (``device.contracts.preprocess.hair_patches``) -> Nx1 logits."""

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = 3
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, 1)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def hair_patch_net(config: dict[str, Any]) -> HairPatchNet:
    """Rebuild from a checkpoint's model config (``{"widths": [...]}``)."""
    return HairPatchNet(tuple(config.get("widths", DEFAULT_WIDTHS)))
