"""The per-hair class networks: patches of the frame around one located hair -> logit of
P(miniaturised). The device runs their ONNX export (``device.models.hair_classes``).

``HairPatchNet``: four 3x3 conv-BN-ReLU blocks (widths ``widths``) with 2x2 max-pooling between
them, global average pooling and a linear layer: about 45 k parameters at the default widths,
about 2 MFLOP a patch of 40x40. With ``classes`` 3 it learns three classes of located hairs (no
labelled hair there: a scale, a pore, a second peak on one shaft / another hair / `undersize`)
and gives the logit of P(`undersize`); with 1, that logit directly.

``HairFieldPair``: two of them in one graph, reading one HAIR_FIELD_PX square (at
MODEL_UM_PER_PX) around the hair: ``near`` sees its central HAIR_PATCH_PX (the shaft), ``wide``
sees the whole field at half resolution (the shaft's neighbours and where it runs). With
``mirror`` (the default, and every checkpoint whose config does not say otherwise) each also
reads the mirrored view, and the output is the logit of the mean of the four probabilities;
without it, of the two. On tuning subjects this pair beat either member alone; on held-out
subjects the mirrored passes, half the cost, did not help (docs/results/counts.md), so graphs
exported since 2026-12-06 leave them out.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from device.contracts.constants import HAIR_FIELD_PX, HAIR_PATCH_PX

__all__ = ["HairPatchNet", "HairFieldPair", "hair_patch_net", "near_view", "wide_view", "DEFAULT_WIDTHS", "PAIR_CLAMP"]

DEFAULT_WIDTHS = (16, 32, 48, 64)
PAIR_CLAMP = 1e-6  # the pair's mean probability is clamped to [c, 1 - c] before its logit


class HairPatchNet(nn.Module):
    """Nx3xPxP normalised RGB (``device.contracts.preprocess.hair_patches``) -> Nx1 logits."""

    input_px = HAIR_PATCH_PX

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS, classes: int = 1) -> None:
        super().__init__()
        if classes not in (1, 3):
            raise ValueError(f"classes must be 1 or 3, got {classes}")
        layers: list[nn.Module] = []
        prev = 3
        for i, w in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, classes)
        self.widths = tuple(widths)
        self.classes = classes

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Nx``classes`` training logits."""
        return self.head(self.features(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Nx1 logit of P(miniaturised)."""
        z = self.logits(x)
        if self.classes == 1:
            return z
        lsm = torch.log_softmax(z, dim=1)
        return lsm[:, 2:3] - torch.logsumexp(lsm[:, :2], dim=1, keepdim=True)


def near_view(field: torch.Tensor) -> torch.Tensor:
    """Nx3xFxF field -> its central Nx3xPxP (P = HAIR_PATCH_PX)."""
    o = (field.shape[-1] - HAIR_PATCH_PX) // 2
    return field[:, :, o : o + HAIR_PATCH_PX, o : o + HAIR_PATCH_PX]


def wide_view(field: torch.Tensor) -> torch.Tensor:
    """Nx3xFxF field -> Nx3x(F/2)x(F/2): 2x2 means (the field at twice MODEL_UM_PER_PX)."""
    return F.avg_pool2d(field, 2)


class HairFieldPair(nn.Module):
    """Nx3xFxF normalised RGB (F = HAIR_FIELD_PX) -> Nx1 logit of the mean P(miniaturised) of
    ``near`` on ``near_view`` and ``wide`` on ``wide_view`` (with ``mirror``, each also on the
    mirrored view). ``mirror`` changes only inference: training reads each member's own view."""

    input_px = HAIR_FIELD_PX

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS, classes: int = 1, mirror: bool = True) -> None:
        super().__init__()
        self.near = HairPatchNet(widths, classes)
        self.wide = HairPatchNet(widths, classes)
        self.widths = tuple(widths)
        self.classes = classes
        self.mirror = mirror
        # Mirroring as a gather of reversed columns (torch.flip exports a Slice whose INT64_MIN
        # end TensorRT refuses).
        self.register_buffer("near_cols", torch.arange(HAIR_PATCH_PX - 1, -1, -1), persistent=False)
        self.register_buffer("wide_cols", torch.arange(HAIR_FIELD_PX // 2 - 1, -1, -1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        near, wide = near_view(x), wide_view(x)
        if self.mirror:
            p = (
                torch.sigmoid(self.near(near))
                + torch.sigmoid(self.near(near.index_select(3, self.near_cols)))
                + torch.sigmoid(self.wide(wide))
                + torch.sigmoid(self.wide(wide.index_select(3, self.wide_cols)))
            ) * 0.25
        else:
            p = (torch.sigmoid(self.near(near)) + torch.sigmoid(self.wide(wide))) * 0.5
        p = p.clamp(PAIR_CLAMP, 1.0 - PAIR_CLAMP)
        return torch.log(p) - torch.log1p(-p)


def hair_patch_net(config: dict[str, Any]) -> HairPatchNet | HairFieldPair:
    """Rebuild from a checkpoint's model config (``{"widths": [...], "kind": "patch" | "pair",
    "classes": 1 | 3, "mirror": bool}``; checkpoints without ``kind`` hold a single patch network,
    without ``classes`` one logit, without ``mirror`` a pair that reads mirrored views)."""
    widths = tuple(config.get("widths", DEFAULT_WIDTHS))
    kind, classes = config.get("kind", "patch"), int(config.get("classes", 1))
    if kind == "pair":
        return HairFieldPair(widths, classes, mirror=bool(config.get("mirror", True)))
    if kind != "patch":
        raise ValueError(f"unknown hair class network kind {kind!r} (patch or pair)")
    return HairPatchNet(widths, classes)
