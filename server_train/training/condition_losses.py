"""Losses of the condition classifier: per-condition maps against rasterised polygons, and
presence with inverse-frequency class balancing.

- ``map_loss``: BCE (soft targets: polygon share per cell) + soft Dice per frame and condition;
  a frame without the condition pushes its whole map to 0 (Dice with smoothing 1).
- ``balanced_bce``: presence BCE where positives and negatives of each condition weigh
  0.5 / (their share in the labelled set), so a rare condition counts as much as a common one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["map_loss", "dice_loss", "balance_weights", "balanced_bce"]


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss, mean over frames and conditions: logits, target N x C x h x w (target in
    [0, 1]) -> scalar."""
    p = torch.sigmoid(logits).flatten(2)
    t = target.flatten(2)
    inter = (p * t).sum(-1)
    return (1.0 - (2.0 * inter + smooth) / (p.sum(-1) + t.sum(-1) + smooth)).mean()


def map_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """BCE (mean over cells) + ``dice_weight`` x Dice: logits, target N x C x h x w -> scalar."""
    if logits.shape != target.shape:
        raise ValueError(f"map logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ")
    return F.binary_cross_entropy_with_logits(logits, target) + dice_weight * dice_loss(logits, target)


def balance_weights(presence: np.ndarray) -> np.ndarray:
    """N x C {0, 1} labels -> 2 x C float32 weights (row 0 negatives, row 1 positives): 0.5 / share
    of that value in the column (a value that never occurs gets 0)."""
    pos = presence.mean(0)
    shares = np.stack([1.0 - pos, pos])
    return np.where(shares > 0, 0.5 / np.maximum(shares, 1e-9), 0.0).astype(np.float32)


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Presence BCE: logits, target N x C; ``weights`` 2 x C from ``balance_weights``."""
    w = torch.where(target > 0.5, weights[1], weights[0])
    return F.binary_cross_entropy_with_logits(logits, target, weight=w)
