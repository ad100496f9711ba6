"""Segmentation scores against hand-computed values on tiny masks."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.seg_metrics import (
    Confusion,
    accuracy,
    confusion,
    dice,
    f1,
    jaccard,
    miou,
    precision,
    recall,
    summarise,
)

# pred / truth on a 2x3 frame:
#   pred  1 1 0     truth 1 0 0
#         1 0 0           1 1 0
# TP = 2 (0,0),(1,0); FP = 1 (0,1); FN = 1 (1,1); TN = 2
PRED = np.array([[1, 1, 0], [1, 0, 0]], bool)
TRUTH = np.array([[1, 0, 0], [1, 1, 0]], bool)


def test_confusion_counts() -> None:
    assert confusion(PRED, TRUTH) == Confusion(tp=2, fp=1, fn=1, tn=2)


def test_confusion_accepts_uint8_and_checks_shape() -> None:
    assert confusion(PRED.astype(np.uint8) * 255, TRUTH) == Confusion(2, 1, 1, 2)
    with pytest.raises(ValueError, match=r"pred shape \(2, 3\) != truth shape \(2, 2\)"):
        confusion(PRED, TRUTH[:, :2])


def test_confusion_is_addable() -> None:
    assert Confusion(1, 2, 3, 4) + Confusion(10, 20, 30, 40) == Confusion(11, 22, 33, 44)
    assert Confusion(1, 2, 3, 4).total == 10


def test_single_frame_scores_by_hand() -> None:
    c = Confusion(tp=2, fp=1, fn=1, tn=2)
    assert dice(c) == pytest.approx(4 / 6)
    assert jaccard(c) == pytest.approx(2 / 4)
    assert precision(c) == pytest.approx(2 / 3)
    assert recall(c) == pytest.approx(2 / 3)
    assert f1(c) == pytest.approx(2 / 3)
    assert accuracy(c) == pytest.approx(4 / 6)
    # hair IoU 2/4, background IoU 2/(2+1+1)
    assert miou(c) == pytest.approx((0.5 + 0.5) / 2)


def test_miou_asymmetric_case() -> None:
    c = Confusion(tp=1, fp=3, fn=0, tn=6)
    # hair IoU = 1/4, background IoU = 6/(6+0+3) = 2/3
    assert miou(c) == pytest.approx((0.25 + 2 / 3) / 2)


def test_empty_vs_empty_is_perfect() -> None:
    empty = np.zeros((4, 4), bool)
    c = confusion(empty, empty)
    assert c == Confusion(0, 0, 0, 16)
    assert dice(c) == 1.0 and jaccard(c) == 1.0


def test_prediction_on_empty_truth_scores_zero() -> None:
    c = Confusion(tp=0, fp=5, fn=0, tn=11)
    assert dice(c) == 0.0 and jaccard(c) == 0.0 and f1(c) == 0.0


def test_summarise_means_per_frame_but_pools_the_rest() -> None:
    a = Confusion(tp=2, fp=1, fn=1, tn=2)  # dice 2/3, jaccard 1/2
    b = Confusion(tp=0, fp=0, fn=0, tn=6)  # empty vs empty: dice 1, jaccard 1
    c = Confusion(tp=1, fp=0, fn=3, tn=2)  # dice 2/5, jaccard 1/4
    out = summarise([a, b, c])
    assert list(out) == [
        "frames",
        "dice",
        "jaccard",
        "pixel_f1",
        "miou",
        "accuracy",
        "precision",
        "f1",
    ]
    assert out["frames"] == 3
    assert out["dice"] == pytest.approx((2 / 3 + 1 + 2 / 5) / 3)
    assert out["jaccard"] == pytest.approx((1 / 2 + 1 + 1 / 4) / 3)
    # pooled: TP 3, FP 1, FN 4, TN 10
    assert out["pixel_f1"] == pytest.approx(6 / (6 + 1 + 4))
    assert out["precision"] == pytest.approx(3 / 4)
    p, r = 3 / 4, 3 / 7
    assert out["f1"] == pytest.approx(2 * p * r / (p + r))
    assert out["accuracy"] == pytest.approx(13 / 18)
    # pooled per class: hair IoU 3/8, background IoU 10/15 (the per-frame mean dice above,
    # 0.689, differs from the pooled pixel F1, 0.545: the two definitions must not be confused)
    assert out["miou"] == pytest.approx((3 / 8 + 10 / 15) / 2)


def test_summarise_rejects_no_frames() -> None:
    with pytest.raises(ValueError, match="no frames"):
        summarise([])
