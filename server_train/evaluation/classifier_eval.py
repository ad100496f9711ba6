"""Evaluation of the condition classifier (on what the device runs: the ONNX graph) and latency.

- ``evaluate_real_conditions``: presence F1 per condition on real frames with YOLO-seg labels
  (dandruff = d or ds, oiliness = o, erythema = s or ds), P(present) against the model's
  per-condition thresholds (the shipped card's for the shipped model, else the graph's
  ``presence_thresholds`` metadata, else 0.5), optionally on one side of the split by original.
- ``evaluate_synthetic_conditions``: per-level F1, macro-F1 and confusion matrices per condition
  on a synthetic condition set (ScalpVision Table 3 style).
- ``bench_latency``: ONNX Runtime CPU latency (median of ``runs``) per model and thread count.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from device.capture.imageio import read_frame
from device.contracts.constants import CLS_OUT_LEVELS, CLS_OUT_PRESENCE, CONDITION_NAMES, LEVEL_NAMES
from device.models.backends import OrtBackend
from device.models.classifiers import (
    SeverityClassifier,
    default_classifier_path,
    default_presence_thresholds,
    prepare_condition_input,
)
from server_train.evaluation.presence_thresholds import choose_thresholds, presence_auc, presence_scores
from server_train.training.classifier_data import load_real, load_synthetic
from server_train.training.condition_maps import holdout_mask, original_name

__all__ = ["evaluate_real_conditions", "evaluate_synthetic_conditions", "bench_latency", "draw_confusion", "REAL_NAMES"]

# report names of the conditions on the real microscope set (its classes: d, ds, o, s)
REAL_NAMES = ("dandruff", "oiliness", "erythema")


def _outputs(model: SeverityClassifier, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(level probabilities Nx3x4, presence probabilities Nx3) for image files."""
    levels, presence = [], []
    for p in paths:
        out = model.raw(prepare_condition_input(read_frame(p), model.size))
        z = out[CLS_OUT_LEVELS][0]
        e = np.exp(z - z.max(-1, keepdims=True))
        levels.append(e / e.sum(-1, keepdims=True))
        presence.append(1.0 / (1.0 + np.exp(-out[CLS_OUT_PRESENCE][0])))
    return np.stack(levels), np.stack(presence)


def _seen_in_training(model: SeverityClassifier, paths: Sequence[Path]) -> int:
    """How many of ``paths`` come from an original the model's presence heads trained on (the
    graph's ``report`` metadata lists them: ``train grader``); 0 when it does not say."""
    meta: dict[str, str] = getattr(model.model.backend, "metadata", {})
    try:
        trained = set(json.loads(meta.get("report", "{}")).get("real_originals", []))
    except (ValueError, AttributeError):
        return 0
    return sum(original_name(p) in trained for p in paths)


def _load(model: str | Path | None, threads: int) -> tuple[SeverityClassifier, str]:
    path = Path(model) if model else default_classifier_path("severity")
    return SeverityClassifier.from_onnx(path, threads=threads), str(path)


def evaluate_real_conditions(
    data: str | Path,
    model: str | Path | None = None,
    threshold: float | None = None,
    threads: int = 1,
    originals: str = "all",
    holdout_share: float = 0.2,
    salt: str = "",
) -> dict[str, Any]:
    """Presence scores on ``data`` (``images/`` + YOLO-seg ``labels/``). ``threshold``: one
    threshold for every condition instead of the model's. ``originals``: "all" frames, or only
    the "holdout" / "train" side of ``condition_maps.holdout_mask(share, salt)``. Keys: frames,
    thresholds, f1 (dandruff, oiliness, erythema), macro_f1, precision, recall, support, auc (ROC,
    threshold-free), macro_f1_thresholds_tuned_here (an upper bound: thresholds chosen on these frames),
    per_frame."""
    clf, name = _load(model, threads)
    labels = load_real(data)
    if originals != "all":
        if originals not in ("holdout", "train"):
            raise ValueError(f"originals must be all, holdout or train, got {originals!r}")
        held = holdout_mask(labels.paths, holdout_share, salt)
        labels = labels.take(held if originals == "holdout" else ~held)
    _, prob = _outputs(clf, labels.paths)
    own = default_presence_thresholds() if model is None else clf.thresholds
    thresholds = [own[c] if threshold is None else threshold for c in CONDITION_NAMES]
    truth = labels.presence.astype(int)
    scores = presence_scores(prob, truth, thresholds, REAL_NAMES)
    scores["auc"] = presence_auc(prob, truth, REAL_NAMES)
    # thresholds chosen on these very frames: an upper bound of what thresholds could do, not a score
    scores["macro_f1_thresholds_tuned_here"] = presence_scores(prob, truth, choose_thresholds(prob, truth), REAL_NAMES)[
        "macro_f1"
    ]
    seen = _seen_in_training(clf, labels.paths)
    if seen:
        print(
            f"eval conditions: WARNING: the model trained on {seen} of these {len(labels.paths)} frames' originals;"
            " their figure is not a held-out one (benchmarks/condition_grader_crossfit.py scores them held out)",
            file=sys.stderr,
        )
    return {
        "model": name,
        "data": str(data),
        "originals": originals if originals == "all" else f"{originals} (share {holdout_share}, salt {salt!r})",
        "frames": len(labels.paths),
        "frames_seen_in_training": seen,
        **scores,
        "per_frame": [
            {"file": p.name, "truth": truth[j].tolist(), "p_present": [round(float(v), 4) for v in prob[j]]}
            for j, p in enumerate(labels.paths)
        ],
    }


def evaluate_synthetic_conditions(
    data: str | Path, model: str | Path | None = None, figures: str | Path | None = None, threads: int = 1
) -> dict[str, Any]:
    """Per condition: F1 per level, macro-F1 over the 4 levels, accuracy and confusion matrix
    (rows truth, columns prediction); ``macro_f1`` = mean of the three conditions' macro-F1.
    With ``figures`` a PNG of the three confusion matrices is written there."""
    clf, name = _load(model, threads)
    labels = load_synthetic(data)
    probs, _ = _outputs(clf, labels.paths)
    pred = probs.argmax(-1)
    per: dict[str, Any] = {}
    for i, cond in enumerate(CONDITION_NAMES):
        t, p = labels.levels[:, i], pred[:, i]
        f1 = f1_score(t, p, labels=[0, 1, 2, 3], average=None, zero_division=0)
        per[cond] = {
            "f1": {lv: round(float(v), 4) for lv, v in zip(LEVEL_NAMES, f1, strict=True)},
            "macro_f1": round(float(np.mean(f1)), 4),
            "accuracy": round(float(np.mean(t == p)), 4),
            "support": {lv: int(np.sum(t == k)) for k, lv in enumerate(LEVEL_NAMES)},
            "confusion": confusion_matrix(t, p, labels=[0, 1, 2, 3]).tolist(),
        }
    report = {
        "model": name,
        "data": str(data),
        "frames": len(labels.paths),
        "conditions": per,
        "macro_f1": round(float(np.mean([v["macro_f1"] for v in per.values()])), 4),
        "severe_f1": {c: per[c]["f1"]["severe"] for c in CONDITION_NAMES},
    }
    if figures:
        report["figure"] = str(_plot_confusions(per, Path(figures) / f"{Path(name).stem}_{Path(data).name}_cm.png"))
    return report


def draw_confusion(ax: Any, cm: np.ndarray, names: Sequence[str], title: str) -> None:
    """Draw confusion matrix ``cm`` (rows truth, columns prediction; counts) on matplotlib axes
    ``ax``: cells shaded by row share, labelled with their counts."""
    ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set(title=title, xlabel="predicted", ylabel="truth")


def _plot_confusions(per: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(per), figsize=(4.2 * len(per), 4))
    for ax, (cond, row) in zip(np.atleast_1d(axes), per.items(), strict=True):
        draw_confusion(ax, np.asarray(row["confusion"]), LEVEL_NAMES, f"{cond} (macro-F1 {row['macro_f1']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def bench_latency(models: Sequence[str | Path], threads: Sequence[int], runs: int = 50) -> dict[str, Any]:
    """Median and p90 latency (ms) of one inference on zeros, per model file and thread count."""
    results = []
    for t in threads:
        for m in models:
            backend = OrtBackend(m, threads=t)
            backend.warmup(5)
            zeros = {n: np.zeros(s, np.float32) for n, s in backend.input_shapes.items()}
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                backend.run(zeros)
                times.append((time.perf_counter() - t0) * 1000)
            results.append(
                {
                    "model": str(m),
                    "threads": t,
                    "input_shapes": {k: list(v) for k, v in backend.input_shapes.items()},
                    "median_ms": round(statistics.median(times), 3),
                    "p90_ms": round(float(np.percentile(times, 90)), 3),
                    "runs": runs,
                }
            )
    return {"cpu": platform.processor() or platform.machine(), "results": results}
