"""The frozen-trunk condition grader: ImageNet EfficientNet-Lite0 features at 2x the severity
classifier's resolution, with small trained heads.

Why it exists (``docs/results/classifiers.md``): at 256x192 the fine-tuned grader ranks oily
frames at AUC 0.84 on real ``valid`` frames; frozen ImageNet features at 512x384 rank them at
0.93. Only the heads learn, so the trunk's features are cached once and every fold of the real
originals trains in minutes on a CPU.

- ``GraderTrunk``: Nx3xHxW normalised RGB -> (f16: the stride-16 stage's output, f32: the last
  block's output and the head conv's, concatenated, at stride 32). Frozen.
- ``PresenceHead``: (f16, f32) -> (condition maps Nx3xhxw logits at stride 16, presence logits
  Nx3 = scaled mean of each map's top ``topk`` share of cells). Trained on polygon maps and
  frame presence of real frames.
- ``ConditionGrader``: the exported graph: the trunk once on the frame (and on its mirror with
  ``mirror``), K presence heads (one per fold of the real originals) whose probabilities are
  averaged, a level head on the pooled f32 features (good/mild/moderate/severe per condition,
  trained on synthetic levels), area share = mean of the sigmoid maps. Outputs follow the
  severity classifier's contract (``CLS_OUT_*``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from server_train.models.efficientnet_lite import EfficientNetLite, stride16_split

__all__ = ["GraderTrunk", "PresenceHead", "ConditionGrader", "grader_config", "grader_from_config"]


class GraderTrunk(nn.Module):
    """Frozen backbone with two taps: Nx3xHxW -> (f16 N x C16 x H/16 x W/16, f32 N x C32 x H/32 x
    W/32), C32 = last block channels + head conv channels."""

    def __init__(self, backbone: EfficientNetLite) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.split = stride16_split(backbone)
        blocks = backbone.config["blocks"]
        self.c16 = int(sum(([b[4]] * b[5] for b in blocks), [])[self.split - 1])
        self.c32 = int(blocks[-1][4] + backbone.config["head"])

    def train(self, mode: bool = True) -> GraderTrunk:
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm statistics stay ImageNet's
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bb = self.backbone
        f16 = bb.forward_until(x, self.split)
        x = f16
        for block in bb._blocks[self.split :]:
            x = block(x)
        head = bb.act(bb._bn1(bb._conv_head(x)))
        return f16, torch.cat([x, head], 1)


class PresenceHead(nn.Module):
    """(f16 NxC16xhxw, f32 NxC32x(h/2)x(w/2)) -> (map logits Nx3xhxw, presence logits Nx3).

    One 1x1 conv over [f16, upsampled f32] (the f32 half applied before upsampling: 4x cheaper),
    ReLU, 1x1 conv to one map per condition; presence = mean of the top ``topk`` share of each
    map's cells, times a learnt scale plus a bias."""

    def __init__(self, c16: int, c32: int, hidden: int = 96, topk: float = 0.05, dropout: float = 0.3) -> None:
        super().__init__()
        n = len(CONDITION_NAMES)
        self.a16, self.a32 = nn.Conv2d(c16, hidden, 1), nn.Conv2d(c32, hidden, 1, bias=False)
        self.b, self.drop = nn.Conv2d(hidden, n, 1), nn.Dropout(dropout)
        self.scale, self.bias = nn.Parameter(torch.ones(n)), nn.Parameter(torch.zeros(n))
        self.topk = topk

    def forward(self, f16: torch.Tensor, f32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        coarse = F.interpolate(self.a32(self.drop(f32)), size=f16.shape[-2:], mode="nearest")
        maps = self.b(self.drop(torch.relu(self.a16(self.drop(f16)) + coarse)))
        flat = maps.flatten(2)
        k = max(1, int(self.topk * flat.shape[-1]))
        top = flat.topk(k, dim=-1).values.mean(-1)
        return maps, top * self.scale + self.bias


class ConditionGrader(nn.Module):
    """Nx3xHxW normalised RGB -> (level logits Nx3x4, presence logits Nx3, area share Nx3).

    Presence: the mean over the heads of each head's P(present) (with ``mirror``, of the mean
    logit of the frame and its mirror), returned as a logit. Levels: ``levels`` (Linear C32 ->
    3x4) on the f32 features pooled over the grid (and the two views)."""

    def __init__(self, trunk: GraderTrunk, heads: list[PresenceHead], levels: nn.Linear, mirror: bool = True) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a condition grader needs at least one presence head")
        self.trunk, self.heads, self.levels, self.mirror = trunk, nn.ModuleList(heads), levels, mirror

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        # the mirror as a Gather along the width (a flip exports as a Slice with INT64 bounds,
        # which TensorRT refuses)
        if self.mirror:
            reverse = torch.arange(x.shape[3] - 1, -1, -1, device=x.device)
            views = torch.cat([x, x.index_select(3, reverse)])
        else:
            views = x
        f16, f32 = self.trunk(views)

        def both(t: torch.Tensor) -> torch.Tensor:  # mean over the views of each frame
            return t.reshape(2, n, *t.shape[1:]).mean(0) if self.mirror else t

        probs, areas = [], []
        for head in self.heads:
            maps, logit = head(f16, f32)
            probs.append(torch.sigmoid(both(logit)))
            areas.append(both(torch.sigmoid(maps).mean(dim=(2, 3))))
        p = torch.stack(probs).mean(0).clamp(1e-6, 1 - 1e-6)
        presence = torch.log(p) - torch.log1p(-p)
        levels = self.levels(both(f32.mean(dim=(2, 3)))).view(-1, len(CONDITION_NAMES), len(LEVEL_NAMES))
        return levels, presence, torch.stack(areas).mean(0)


def grader_config(model: ConditionGrader) -> dict[str, Any]:
    """Constructor arguments of a grader (for checkpoints)."""
    h = model.heads[0]
    assert isinstance(h, PresenceHead)
    return {
        "kind": "condition_grader",
        "backbone": model.trunk.backbone.config,
        "heads": len(model.heads),
        "hidden": h.a16.out_channels,
        "topk": h.topk,
        "mirror": model.mirror,
    }


def grader_from_config(config: dict[str, Any]) -> ConditionGrader:
    """Rebuild a grader (random weights) from ``grader_config`` output."""
    b = config["backbone"]
    trunk = GraderTrunk(EfficientNetLite(b["blocks"], b["stem"], b["head"]))
    heads = [PresenceHead(trunk.c16, trunk.c32, config["hidden"], config["topk"]) for _ in range(config["heads"])]
    levels = nn.Linear(trunk.c32, len(CONDITION_NAMES) * len(LEVEL_NAMES))
    return ConditionGrader(trunk, heads, levels, config["mirror"])
