"""Losses for hair segmentation with a centre head, and for distillation.

Logits and targets are Nx2xHxW: channel 0 = hair mask, channel 1 = per-hair centre heatmap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["seg_loss", "distill_loss"]


def _soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    union = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * inter + eps) / (union + eps)).mean()


def _centre_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on the Gaussian heatmap, weighted up near centres (they cover <1% of pixels)."""
    weight = 1.0 + 20.0 * target
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def seg_loss(logits: torch.Tensor, target: torch.Tensor, centre_weight: float = 1.0) -> torch.Tensor:
    """Pseudo ground-truth loss: BCE + soft Dice on the mask, weighted BCE on the centres."""
    m_logit, m_true = logits[:, :1], target[:, :1]
    loss = F.binary_cross_entropy_with_logits(m_logit, m_true) + _soft_dice(m_logit, m_true)
    return loss + centre_weight * _centre_bce(logits[:, 1:2], target[:, 1:2])


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, centre_weight: float = 1.0) -> torch.Tensor:
    """Match the teacher's soft outputs (sigmoid of its logits): BCE + soft Dice on the mask,
    weighted BCE on the centre heatmap."""
    soft = torch.sigmoid(teacher.detach())
    return seg_loss(student, soft, centre_weight)
