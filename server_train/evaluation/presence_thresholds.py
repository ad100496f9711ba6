"""Per-condition presence thresholds that maximise F1, and the presence scores they give.

Thresholds are chosen on one split (held-out originals of the training set) and only applied
to another; ``presence_scores`` is the one scoring of presence used by training and evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "best_threshold",
    "prevalence_threshold",
    "choose_thresholds",
    "pool_heldout",
    "presence_auc",
    "presence_scores",
]


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    tp = float(np.sum(truth & pred))
    denom = float(np.sum(truth) + np.sum(pred))
    return 2.0 * tp / denom if denom else 0.0


def best_threshold(prob: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """N probabilities and N {0, 1} labels -> (threshold, F1 of ``prob >= threshold``).

    Candidates lie midway between consecutive distinct probabilities (plus one below the lowest
    and 1.0 above all); among the F1-maximising ones the median is kept, so that a plateau of equal
    F1 yields a threshold inside it rather than at its edge. The threshold is not rounded: a
    barely trained or saturated head puts probabilities closer than 1e-4 apart (erythema's
    shipped threshold is 0.0006), and rounding would move the cut across them."""
    prob = np.asarray(prob, np.float64)
    truth = np.asarray(truth).astype(bool)
    u = np.unique(prob)
    cands = np.concatenate([[max(0.0, u[0] - 1e-6)], (u[:-1] + u[1:]) / 2, [min(1.0, u[-1] + 1e-6)]]) if len(u) else []
    scores = np.asarray([_f1(truth, prob >= t) for t in cands])
    if not len(scores):
        return 0.5, 0.0
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    pick = int(best[len(best) // 2])
    return float(cands[pick]), float(scores[pick])


def prevalence_threshold(prob: np.ndarray, truth: np.ndarray) -> float:
    """N out-of-fold probabilities and N {0, 1} labels -> the threshold above which lies the
    labels' share of positives (rank calibration). Unlike ``best_threshold`` it does not chase
    the F1 optimum of the split it is chosen on, which at a weak out-of-fold AUC sits near
    "always present" and does not transfer (``docs/results/classifiers.md``)."""
    prob = np.asarray(prob, np.float64)
    if not len(prob):
        raise ValueError("prevalence_threshold needs at least one probability")
    share = float(np.mean(np.asarray(truth).astype(bool)))
    return float(np.quantile(prob, 1.0 - share))


def choose_thresholds(prob: np.ndarray, truth: np.ndarray) -> list[float]:
    """N x C probabilities and N x C labels -> C thresholds (``best_threshold`` per column)."""
    return [best_threshold(prob[:, c], truth[:, c])[0] for c in range(prob.shape[1])]


def presence_scores(
    prob: np.ndarray, truth: np.ndarray, thresholds: Sequence[float], names: Sequence[str]
) -> dict[str, Any]:
    """N x C probabilities, N x C {0, 1} labels, C thresholds -> f1, precision, recall, support
    per name and ``macro_f1`` (mean F1 over the C conditions), rounded to 4 digits."""
    truth = np.asarray(truth).astype(bool)
    pred = np.asarray(prob) >= np.asarray(thresholds, np.float64)[None, :]
    f1, prec, rec = {}, {}, {}
    for c, name in enumerate(names):
        t, p = truth[:, c], pred[:, c]
        tp = float(np.sum(t & p))
        f1[name] = round(_f1(t, p), 4)
        prec[name] = round(tp / float(p.sum()), 4) if p.any() else 0.0
        rec[name] = round(tp / float(t.sum()), 4) if t.any() else 0.0
    return {
        "thresholds": {n: float(t) for n, t in zip(names, thresholds, strict=True)},
        "f1": f1,
        "macro_f1": round(float(np.mean(list(f1.values()))), 4),
        "precision": prec,
        "recall": rec,
        "support": {n: int(truth[:, c].sum()) for c, n in enumerate(names)},
    }


def pool_heldout(reports: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Held-out reports of cross-fitted runs (``heldout.json``: ``per_frame`` rows with file,
    truth, p_present; disjoint files) -> one report over all their frames: the thresholds that
    maximise F1 on the pooled probabilities, the scores at them (``presence_scores``) and the
    out-of-fold AUC.
    Raises ValueError when two reports hold the same file (the folds overlap)."""
    rows: list[Mapping[str, Any]] = []
    seen: set[str] = set()
    for report in reports:
        for row in report["per_frame"]:
            if row["file"] in seen:
                raise ValueError(f"{row['file']} is held out by two runs: the folds overlap")
            seen.add(row["file"])
            rows.append(row)
    if not rows:
        raise ValueError("no held-out frames to pool")
    prob = np.asarray([r["p_present"] for r in rows], np.float64)
    truth = np.asarray([r["truth"] for r in rows]).astype(bool)
    thresholds = choose_thresholds(prob, truth)
    return {
        "frames": len(rows),
        "runs": len(reports),
        "folds": [r.get("fold") for r in reports],
        "thresholds": dict(zip(names, thresholds, strict=True)),
        "at_thresholds": presence_scores(prob, truth, thresholds, names),
        "auc": presence_auc(prob, truth, names),
        "per_frame": list(rows),
    }


def presence_auc(prob: np.ndarray, truth: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """N x C probabilities and N x C {0, 1} labels -> ROC AUC per name (threshold-free ranking
    quality; None where a column holds only one class), rounded to 4 digits."""
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(truth).astype(int)
    out: dict[str, float | None] = {}
    for c, name in enumerate(names):
        t = truth[:, c]
        out[name] = round(float(roc_auc_score(t, np.asarray(prob)[:, c])), 4) if 0 < t.sum() < len(t) else None
    return out
