"""Hair counts and the thin-hair share against real trichoscopy labelled with one box per hair
(Pascal VOC), as in the Huashan follicle set (``follicle-counts``).

Every frame goes through the device's own measuring step (``analyse_frame``: text bar cut, 4:3
centre crop, 640x480, the scale gate, the count strategy of the model). The truth is the boxes
whose centre lies in the frame the device keeps. With ``split="val"`` only the subjects that
``subject_split`` holds out are scored (the frames a counting run never trained on); with
``split="all"`` every frame (a set kept back elsewhere). Scores: MAE, bias, Pearson r and
Bland-Altman limits of agreement of the count; MAE and r of the thin ratio; the same for
predicting the training split's mean; and, for a model that locates hairs, per-hair detection
and thin-class precision/recall against the boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from device.app.analysis import analyse_frame
from device.capture.imageio import read_frame
from device.contracts.preprocess import crop_box, source_px_per_frame_px
from device.measure.located_hairs import HAIR_CLASSES
from device.models.hair_classes import HairClassifier
from device.models.segmentation import Segmenter
from server_train.training.trichoscopy import (
    TEXT_BAR_PX,
    THIN_CLASS,
    LabelledFrame,
    load_labelled,
    read_voc,
    subject_split,
)

__all__ = [
    "evaluate_counts",
    "count_scores",
    "match_hairs",
    "frame_boxes",
    "thin_cut",
    "plot_counts",
    "read_voc_boxes",
    "TEXT_BAR_PX",
    "THIN_CLASS",
    "TRICHOSCOPY_UM_PER_PX",
    "SPLITS",
]

TRICHOSCOPY_UM_PER_PX = 2.8  # 70x at 1280x1024: the burned-in 1.0 mm scale bar spans ~358 px
SPLITS = ("all", "val", "train")


def read_voc_boxes(path: Path) -> list[str]:
    """Class names of the boxes in a Pascal VOC annotation file."""
    return list(read_voc(path)[1])


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else None


def count_scores(pred: Sequence[float], true: Sequence[float]) -> dict[str, Any]:
    """MAE, bias (mean of pred - true), Pearson r and the Bland-Altman 95% limits of agreement
    (bias +- 1.96 SD of the differences) of per-frame counts."""
    p, t = np.asarray(pred, float), np.asarray(true, float)
    diff = p - t
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    bias = float(diff.mean()) if len(diff) else 0.0
    return {
        "mae": float(np.abs(diff).mean()) if len(diff) else None,
        "bias": bias,
        "pearson_r": _pearson(p, t),
        "limits_of_agreement": [bias - 1.96 * sd, bias + 1.96 * sd],
    }


def match_hairs(points: np.ndarray, boxes: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (point index, box index): each located hair (x, y) is matched to at most one box
    that contains it, nearest box centre first, each box at most once."""
    pairs: list[tuple[float, int, int]] = []
    for i, (x, y) in enumerate(np.asarray(points, float).reshape(-1, 2)):
        inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
        for j in np.flatnonzero(inside):
            cx, cy = (boxes[j, 0] + boxes[j, 2]) / 2, (boxes[j, 1] + boxes[j, 3]) / 2
            pairs.append((float(np.hypot(x - cx, y - cy)), i, int(j)))
    used_p, used_b, out = set(), set(), []
    for _, i, j in sorted(pairs):
        if i not in used_p and j not in used_b:
            used_p.add(i)
            used_b.add(j)
            out.append((i, j))
    return out


def frame_boxes(item: LabelledFrame, raw_shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """The boxes (and classes) whose centre lies in the frame the device keeps, in the pixels of
    the 640x480 frame it measures."""
    x0, y0, w, h = crop_box(raw_shape[0], raw_shape[1])
    scale = 1.0 / source_px_per_frame_px(raw_shape)
    b = item.boxes - np.array([x0, y0 + TEXT_BAR_PX, x0, y0 + TEXT_BAR_PX], np.float32)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    keep = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    return b[keep] * scale, tuple(c for c, k in zip(item.classes, keep, strict=True) if k)


def evaluate_counts(
    segmenter: Segmenter,
    roots: str | Path | Sequence[str | Path],
    um_per_px: float = TRICHOSCOPY_UM_PER_PX,
    limit: int | None = None,
    progress: bool = True,
    split: str = "all",
    val_percent: int = 20,
    hair_classes: HairClassifier | None = None,
) -> dict[str, Any]:
    """Score ``segmenter``'s counts on labelled trichoscopy under ``roots`` (folders with
    ``images/`` and ``annotations/``). um_per_px refers to the original frame's pixels. split:
    "all" frames, or the held-out ("val") or training subjects of ``subject_split``.
    hair_classes: the per-hair class model that tells miniaturised hairs (None: by diameter)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    root_list = [roots] if isinstance(roots, (str, Path)) else list(roots)
    items = load_labelled(root_list)
    train_items, val_items = subject_split(items, val_percent)
    chosen = {"all": items, "val": val_items, "train": train_items}[split][:limit]
    if not chosen:
        raise ValueError(f"no labelled frames in the {split!r} split of {', '.join(map(str, root_list))}")
    rows = []
    located = matched = thin_tp = thin_fp = thin_fn = 0
    for item in tqdm(chosen, disable=not progress, desc="eval counts"):
        raw = read_frame(item.image)
        boxes, classes = frame_boxes(item, raw[TEXT_BAR_PX:].shape)
        result = analyse_frame(segmenter, raw[TEXT_BAR_PX:], um_per_px=um_per_px, hair_classes=hair_classes)
        m = result.metrics
        thin_true = np.array([c == THIN_CLASS for c in classes], bool)
        row: dict[str, Any] = {
            "stem": item.stem,
            "subject": item.subject,
            "true_count": len(classes),
            "pred_count": m.count,
            "count_source": m.count_source,
            "true_thin_ratio": float(thin_true.mean()) if len(classes) else 0.0,
            "pred_thin_ratio": m.thin_ratio,
            "median_thickness_um": m.median_thickness_um,
            "problem": result.problem,
        }
        if m.hairs:
            points = np.array([xy for xy, _, _ in m.hairs], float)
            pairs = match_hairs(points, boxes)
            located += len(points)
            matched += len(pairs)
            pred_thin = np.array([k is not None and k != HAIR_CLASSES[2] for _, _, k in m.hairs], bool)
            row["matched_diameters_um"] = [
                [None if m.hairs[i][1] is None else round(m.hairs[i][1], 1), bool(thin_true[j])] for i, j in pairs
            ]
            for i, j in pairs:
                thin_tp += int(pred_thin[i] and thin_true[j])
                thin_fp += int(pred_thin[i] and not thin_true[j])
                thin_fn += int(not pred_thin[i] and thin_true[j])
            measured = [k for _, _, k in m.hairs if k is not None]
            if measured:  # the share of located hairs whose measured diameter is below terminal
                row["diameter_thin_ratio"] = sum(k != HAIR_CLASSES[2] for k in measured) / len(measured)
            row["located_hairs"] = len(points)
            row["matched_hairs"] = len(pairs)
        rows.append(row)
    true = np.array([r["true_count"] for r in rows], float)
    pred = np.array([r["pred_count"] for r in rows], float)
    thin = np.array([(r["pred_thin_ratio"], r["true_thin_ratio"]) for r in rows if r["pred_thin_ratio"] is not None])
    scores = count_scores(pred, true)
    # The mean predictor knows only the training subjects' mean count and thin ratio.
    train_counts, train_thin = [], []
    for item in train_items:
        train_counts.append(len(item.classes))
        if item.classes:
            train_thin.append(sum(c == THIN_CLASS for c in item.classes) / len(item.classes))
    mean_count, mean_thin = float(np.mean(train_counts)), float(np.mean(train_thin))
    boxes_total = int(true.sum())
    report: dict[str, Any] = {
        "model": getattr(segmenter, "name", type(segmenter).__name__),
        "data": [str(r) for r in root_list],
        "split": split,
        "val_percent": val_percent,
        "um_per_px": um_per_px,
        "frames": len(rows),
        "subjects": len({r["subject"] for r in rows}),
        "count_source": rows[0]["count_source"],
        "count_mae": scores["mae"],
        "count_bias": scores["bias"],
        "pearson_r": scores["pearson_r"],
        "limits_of_agreement": scores["limits_of_agreement"],
        "thin_ratio_mae": float(np.abs(thin[:, 0] - thin[:, 1]).mean()) if len(thin) else None,
        "thin_ratio_r": _pearson(thin[:, 0], thin[:, 1]) if len(thin) else None,
        "mean_true_count": float(true.mean()),
        "mean_predictor": {
            "count": mean_count,
            "count_mae": float(np.abs(true - mean_count).mean()),
            "thin_ratio": mean_thin,
            "thin_ratio_mae": float(np.mean([abs(r["true_thin_ratio"] - mean_thin) for r in rows])),
        },
        "rejected_frames": sum(r["problem"] is not None for r in rows),
        "hair_classes": "model" if hair_classes is not None else "diameter",
    }
    if located:
        report["hairs"] = {
            "located": located,
            "boxes": boxes_total,
            "precision": matched / located,
            "recall": matched / boxes_total if boxes_total else None,
            "thin_precision": thin_tp / (thin_tp + thin_fp) if thin_tp + thin_fp else None,
            "thin_recall": thin_tp / (thin_tp + thin_fn) if thin_tp + thin_fn else None,
        }
    report["per_frame"] = rows
    return report


def thin_cut(report: dict[str, Any]) -> dict[str, Any]:
    """The shaft diameter (um) that best separates the boxes labelled ``undersize`` from the
    rest among the hairs ``evaluate_counts`` located and matched (``matched_diameters_um``):
    the cut with the highest balanced accuracy. Run it on the training subjects' report."""
    pairs = [(d, t) for r in report["per_frame"] for d, t in r.get("matched_diameters_um", []) if d is not None]
    if not pairs:
        raise ValueError("the report has no matched hairs with a diameter")
    d = np.array([p[0] for p in pairs], float)
    thin = np.array([p[1] for p in pairs], bool)
    if thin.all() or not thin.any():
        raise ValueError("both thin and other hairs are needed to place a cut")
    best = (-1.0, 0.0)
    for cut in np.unique(d):
        below = d < cut
        balanced = 0.5 * (below[thin].mean() + (~below[~thin]).mean())
        best = max(best, (float(balanced), float(cut)))
    return {
        "cut_um": best[1],
        "balanced_accuracy": best[0],
        "hairs": len(d),
        "thin_hairs": int(thin.sum()),
        "median_um": {"undersize": float(np.median(d[thin])), "other": float(np.median(d[~thin]))},
    }


def plot_counts(report: dict[str, Any], path: str | Path) -> Path:
    """Write a PNG: predicted vs true counts (with the identity line) and the Bland-Altman plot
    (difference vs mean, bias and 95% limits of agreement) of ``evaluate_counts``'s report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_frame"]
    t = np.array([r["true_count"] for r in rows], float)
    p = np.array([r["pred_count"] for r in rows], float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.5))
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(t))
    a.scatter(t + jitter, p, s=10, alpha=0.6)
    top = max(t.max(), p.max()) + 1
    a.plot([0, top], [0, top], "k--", lw=1)
    a.set(xlabel="true hairs (boxes)", ylabel="predicted hairs", xlim=(0, top), ylim=(0, top))
    r = report["pearson_r"]
    a.set_title(f"MAE {report['count_mae']:.2f}, r {r:.2f}" if r is not None else f"MAE {report['count_mae']:.2f}")
    mean, diff = (p + t) / 2, p - t
    b.scatter(mean + jitter, diff, s=10, alpha=0.6)
    low, high = report["limits_of_agreement"]
    for y, style in ((report["count_bias"], "-"), (low, "--"), (high, "--")):
        b.axhline(y, color="k", ls=style, lw=1)
    b.set(xlabel="mean of predicted and true", ylabel="predicted - true")
    b.set_title(f"bias {report['count_bias']:+.2f}, 95% limits [{low:.1f}, {high:.1f}]")
    fig.suptitle(f"{report['model']}: {report['frames']} frames ({report['split']}), {report['subjects']} subjects")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
