"""Pixel-level segmentation scores for binary hair masks (pure numpy).

All scores are computed from per-frame confusion counts over pixels, with *hair* as the
positive class: TP = hair predicted and hair in truth, FP = hair predicted on background,
FN = background predicted on hair, TN = background predicted and background in truth.

Definitions (as reported by the papers we compare with):

* **dice** (ScalpVision): mean over frames of the per-frame Dice coefficient
  ``2 TP / (2 TP + FP + FN)``.
* **jaccard** (ScalpVision): mean over frames of the per-frame Jaccard index (IoU of hair)
  ``TP / (TP + FP + FN)``.
  For both per-frame scores, a frame where prediction and truth are both empty
  (TP + FP + FN = 0) scores 1.0.
* **pixel_f1** (ScalpVision): F1 of hair pixels pooled over all frames, i.e.
  ``2 TP / (2 TP + FP + FN)`` with TP, FP, FN summed over every frame first.
* **miou** (diffusion-feature segmentation paper, eq. 7): mean over the two classes, hair
  and background, of the pooled IoU ``TP / (TP + FP + FN)``; for the background class the
  roles swap (its TP is our TN, its FP is our FN, its FN is our FP):
  ``(TP / (TP + FP + FN) + TN / (TN + FN + FP)) / 2``.
* **accuracy** (eq. 8): pooled ``(TP + TN) / (TP + FP + FN + TN)``.
* **precision** (eq. 9): pooled ``TP / (TP + FP)``.
* **recall**: pooled ``TP / (TP + FN)``.
* **f1** (eq. 10): ``2 P R / (P + R)`` from pooled precision and recall (numerically the
  same as ``pixel_f1``; both are reported because both papers name it).

Any ratio whose denominator is zero is defined as 1.0: there was nothing to get wrong
(e.g. precision with TP + FP = 0, no hair predicted, raised no false alarm). This matches the
empty-vs-empty convention above; F1 is 0.0 when P + R = 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "Confusion",
    "SegScores",
    "confusion",
    "dice",
    "jaccard",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "miou",
    "scores",
    "summarise",
]


@dataclass(frozen=True)
class Confusion:
    """Pixel confusion counts of one frame (or a sum of frames); add with ``+``."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: Confusion) -> Confusion:
        if not isinstance(other, Confusion):
            return NotImplemented
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        """Number of pixels counted."""
        return self.tp + self.fp + self.fn + self.tn

    @staticmethod
    def zero() -> Confusion:
        """The additive identity."""
        return Confusion(0, 0, 0, 0)


def confusion(pred: np.ndarray, truth: np.ndarray) -> Confusion:
    """Confusion counts of a predicted mask against the true mask.

    pred, truth: HxW bool (any dtype is cast with ``!= 0``), same shape.
    """
    p = np.asarray(pred) != 0
    t = np.asarray(truth) != 0
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} != truth shape {t.shape}")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(p.size - tp - fp - fn)
    return Confusion(tp, fp, fn, tn)


def _ratio(num: int, den: int) -> float:
    """num / den, 1.0 when den == 0 (nothing to get wrong)."""
    return 1.0 if den == 0 else num / den


def dice(c: Confusion) -> float:
    """Dice ``2TP / (2TP + FP + FN)``; 1.0 when both masks are empty."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def jaccard(c: Confusion) -> float:
    """Jaccard / IoU of hair ``TP / (TP + FP + FN)``; 1.0 when both masks are empty."""
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def precision(c: Confusion) -> float:
    """``TP / (TP + FP)``; 1.0 when nothing is predicted as hair."""
    return _ratio(c.tp, c.tp + c.fp)


def recall(c: Confusion) -> float:
    """``TP / (TP + FN)``; 1.0 when there is no hair in the truth."""
    return _ratio(c.tp, c.tp + c.fn)


def f1(c: Confusion) -> float:
    """``2PR / (P + R)`` from :func:`precision` and :func:`recall`; 0.0 when P + R = 0."""
    p, r = precision(c), recall(c)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def accuracy(c: Confusion) -> float:
    """``(TP + TN) / all``; 1.0 for zero pixels."""
    return _ratio(c.tp + c.tn, c.total)


def miou(c: Confusion) -> float:
    """Mean of hair IoU and background IoU (two classes)."""
    iou_bg = _ratio(c.tn, c.tn + c.fn + c.fp)
    return (jaccard(c) + iou_bg) / 2.0


@dataclass(frozen=True)
class SegScores:
    """Scores over a set of frames (see the module docstring for definitions)."""

    frames: int
    dice: float
    jaccard: float
    pixel_f1: float
    miou: float
    accuracy: float
    precision: float
    f1: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict with keys ``frames, dice, jaccard, pixel_f1, miou, accuracy,
        precision, f1``."""
        return asdict(self)


def scores(per_frame: Iterable[Confusion]) -> SegScores:
    """Aggregate per-frame confusions into :class:`SegScores`.

    Raises ValueError on an empty list (no frames, no scores).
    """
    frames = list(per_frame)
    if not frames:
        raise ValueError("no frames to summarise")
    pooled = sum(frames, Confusion.zero())
    return SegScores(
        frames=len(frames),
        dice=float(np.mean([dice(c) for c in frames])),
        jaccard=float(np.mean([jaccard(c) for c in frames])),
        pixel_f1=dice(pooled),
        miou=miou(pooled),
        accuracy=accuracy(pooled),
        precision=precision(pooled),
        f1=f1(pooled),
    )


def summarise(per_frame: Iterable[Confusion]) -> dict[str, float | int]:
    """Dict with keys exactly ``frames, dice, jaccard, pixel_f1, miou, accuracy, precision,
    f1`` (see the module docstring)."""
    return scores(per_frame).to_dict()
