"""Losses for hair segmentation with a centre head, and for distillation.

Logits and targets are Nx2xHxW: channel 0 = hair mask, channel 1 = the instance target
(per-hair centre heatmap, centre-line map, or strand-end density).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from device.contracts.constants import END_DENSITY_SCALE

__all__ = ["seg_loss", "distill_loss", "density_loss", "count_density_loss", "CENTRE_LOSSES"]


def _soft_dice(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    union = p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (1 - (2 * inter + eps) / (union + eps)).mean()


def _centre_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE on the Gaussian heatmap, weighted up near centres (they cover <1% of pixels)."""
    weight = 1.0 + 20.0 * target
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def _centre_focal(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on a Gaussian heatmap: peaks (target ~1) pull
    p up, everything else pushes p down, less so near a peak ((1 - target)^beta) and less for
    easy pixels (p^alpha). Normalised by the number of peaks. Gives sharp, separable peaks."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.ge(0.999).float()  # the one pixel per centre where the heatmap is 1
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p**alpha * (1 - target) ** beta * (1 - pos)
    n_pos = pos.sum().clamp(min=1.0)
    return (pos_loss.sum() + neg_loss.sum()) / n_pos


def _line_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary centre-line map: BCE + soft Dice, like the mask."""
    return F.binary_cross_entropy_with_logits(logits, target) + _soft_dice(logits, target)


def _end_density_loss(pred: torch.Tensor, target: torch.Tensor, count_weight: float = 0.5) -> torch.Tensor:
    """``density_loss`` on the strand-end density (mass END_DENSITY_SCALE per end)."""
    return density_loss(pred, target, END_DENSITY_SCALE, count_weight)


def density_loss(pred: torch.Tensor, target: torch.Tensor, scale: float, count_weight: float = 0.5) -> torch.Tensor:
    """A density (Nx1xHxW, a linear output, not a logit; mass ``scale`` per object), three terms:

    - squared error relative to the target's energy (1.0 for an all-zero prediction): the
      shape of every peak;
    - absolute error relative to the target's mass: a faint floor spread over the background
      costs in proportion to its mass, which is what a count summed over a whole frame (8x a
      training crop) amplifies;
    - the per-crop error of the summed density in ends, relative to the number of ends.

    An empty crop counts as one end's worth of mass and energy, so false ends there cost."""
    err = ((pred - target) ** 2).sum() / (target**2).sum().clamp(min=1.0)
    mass = (pred - target).abs().sum() / (target.sum() + END_DENSITY_SCALE)
    pred_n = pred.sum(dim=(1, 2, 3)) / END_DENSITY_SCALE
    true_n = target.sum(dim=(1, 2, 3)) / END_DENSITY_SCALE
    count = (pred_n - true_n).abs().sum() / (true_n.sum() + 1.0)
    return err + mass + count_weight * count


def count_density_loss(
    pred: torch.Tensor, target: torch.Tensor, scale: float, cell: int = 16, peak_weight: float = 0.1
) -> torch.Tensor:
    """A density learnt from labelled points whose exact pixel the image does not fix (a box
    centre is a human's guess of mid-shaft): Nx1xHxW, mass ``scale`` per object. Three terms,
    each about 1 for an all-zero prediction:

    - the squared error of local counts in ``cell`` x ``cell`` px cells, relative to the
      target's: where the hairs are, to within a cell, without demanding the labeller's pixel;
    - the error of each crop's count, relative to its objects (+1);
    - ``peak_weight`` x the squared error relative to the target's energy: the density still
      peaks at each object, so objects can be located one by one.

    Squared errors, not absolute ones, on the maps: an absolute error is minimised by the median,
    which for sparse objects the network cannot yet place is zero everywhere (trained on real
    boxes with the L1 terms of ``density_loss``, the network learnt to count next to nothing).
    """
    pc, tc = F.avg_pool2d(pred, cell) * cell * cell, F.avg_pool2d(target, cell) * cell * cell
    local = ((pc - tc) ** 2).sum() / (tc**2).sum().clamp(min=scale**2)
    pred_n, true_n = pred.sum(dim=(1, 2, 3)) / scale, target.sum(dim=(1, 2, 3)) / scale
    count = ((pred_n - true_n).abs() / (true_n + 1.0)).mean()
    peaks = ((pred - target) ** 2).sum() / (target**2).sum().clamp(min=1.0)
    return local + count + peak_weight * peaks


CENTRE_LOSSES = {"bce": _centre_bce, "focal": _centre_focal, "lines": _line_loss, "ends": _end_density_loss}


def seg_loss(
    logits: torch.Tensor, target: torch.Tensor, centre_weight: float = 1.0, centre_loss: str = "bce"
) -> torch.Tensor:
    """Pseudo ground-truth loss: BCE + soft Dice on the mask, plus the centre heatmap loss
    (``bce``: weighted BCE, ``focal``: CenterNet focal loss, both on the centre heatmap;
    ``lines``: BCE + soft Dice on the binary centre-line map; ``ends``: relative squared and
    absolute error and count error on the strand-end density)."""
    m_logit, m_true = logits[:, :1], target[:, :1]
    loss = F.binary_cross_entropy_with_logits(m_logit, m_true) + _soft_dice(m_logit, m_true)
    return loss + centre_weight * CENTRE_LOSSES[centre_loss](logits[:, 1:2], target[:, 1:2])


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, centre_weight: float = 1.0) -> torch.Tensor:
    """Match the teacher's soft outputs (sigmoid of its logits): BCE + soft Dice on the mask;
    with ``centre_weight`` > 0 also weighted BCE on the teacher's centre heatmap."""
    soft = torch.sigmoid(teacher.detach())
    m_logit, m_soft = student[:, :1], soft[:, :1]
    loss = F.binary_cross_entropy_with_logits(m_logit, m_soft) + _soft_dice(m_logit, m_soft)
    if centre_weight > 0:
        loss = loss + centre_weight * _centre_bce(student[:, 1:2], soft[:, 1:2])
    return loss
