"""Disease-type classifier (alopecia / psoriasis / folliculitis) on clinical scalp photos.

The small-CNN paper's recipe on a pretrained backbone: preprocessing (denoise, histogram
equalisation, enhancement: ``device.models.classifiers.disease_preprocess``), class balancing (every
photo contributes augmented views - flips, 90-degree turns, a centre zoom - and the head weighs
classes inversely to their size), frozen EfficientNet-Lite0 ImageNet features and a linear head
(multinomial logistic regression). ``disease_lite0`` (the default) sees the photo at 224 px;
``disease_lite0_tiles`` resizes it to a 3 x 3 grid of 224 px tiles and averages the tiles'
features. Over three CV shuffles both score about the same (0.745 vs 0.749), so the single
view, 9x cheaper, is the default. Scored by stratified K-fold cross-validation: a fold's test
photos are never seen by its head, only their original view is scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import StratifiedKFold

from device.capture.imageio import IMAGE_SUFFIXES, read_frame
from device.contracts.constants import CLS_PIXEL_MEAN, CLS_PIXEL_STD, DISEASE_NAMES, DISEASE_SIZE
from device.models.classifiers import disease_preprocess
from server_train.models.classifier import DiseaseClassifier, create_classifier

__all__ = ["load_photos", "view_features", "fit_head", "cross_validate", "train_and_export", "VIEWS"]

VIEWS = ("none", "h", "v", "rot90", "rot270", "zoom")


def load_photos(folder: str | Path) -> tuple[list[Path], np.ndarray]:
    """(photo paths, int64 labels in DISEASE_NAMES order) of a folder with one sub-folder per class."""
    root = Path(folder)
    paths, labels = [], []
    for k, name in enumerate(DISEASE_NAMES):
        sub = root / name
        if not sub.is_dir():
            raise FileNotFoundError(f"missing class folder {sub}")
        found = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += found
        labels += [k] * len(found)
    return paths, np.asarray(labels, np.int64)


def _view(img: np.ndarray, view: str) -> np.ndarray:
    if view == "h":
        return cv2.flip(img, 1)
    if view == "v":
        return cv2.flip(img, 0)
    if view == "rot90":
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if view == "rot270":
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if view == "zoom":
        s = img.shape[0]
        m = int(round(s * 0.1))
        return cv2.resize(img[m : s - m, m : s - m], (s, s), interpolation=cv2.INTER_LINEAR)
    return img


def view_features(
    model: DiseaseClassifier, paths: list[Path], views: tuple[str, ...] = VIEWS, preprocess: str = "paper"
) -> np.ndarray:
    """N x V x F pooled (tile-averaged) backbone features of every photo (preprocessed once at
    the model's input side) and view."""
    mean = np.asarray(CLS_PIXEL_MEAN, np.float32).reshape(3, 1, 1)
    std = np.asarray(CLS_PIXEL_STD, np.float32).reshape(3, 1, 1)
    model.eval()
    out = []
    with torch.no_grad():
        for p in paths:
            base = disease_preprocess(read_frame(p), DISEASE_SIZE * model.tiles, mode=preprocess)
            xs = [((_view(base, v)[:, :, ::-1].transpose(2, 0, 1) / 255.0) - mean) / std for v in views]
            out.append(model.features(torch.from_numpy(np.stack(xs).astype(np.float32))).numpy())
    return np.stack(out)


def fit_head(feats: np.ndarray, labels: np.ndarray, c: float = 0.5, seed: int = 0) -> LogisticRegression:
    """Class-balanced multinomial logistic regression on all views (feats N x V x F)."""
    n, v, f = feats.shape
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)
    return clf.fit(feats.reshape(n * v, f), np.repeat(labels, v))


def cross_validate(
    data: str | Path,
    folds: int = 5,
    seed: int = 0,
    figures: str | Path | None = None,
    model: str = "disease_lite0",
    preprocess: str = "paper",
    repeats: int = 3,
) -> dict[str, Any]:
    """Stratified ``folds``-fold accuracy on the photos in ``data``, repeated over ``repeats``
    shuffles (seeds ``seed``, ``seed`` + 1, ...): with 85 photos one shuffle's mean moves by
    several points. Keys: accuracy_mean, accuracy_std (population std over all folds of all
    repeats), repeat_accuracy (mean per shuffle), fold_accuracy, per_class (precision, recall,
    f1, support; predictions pooled over folds and repeats), confusion (pooled; rows truth)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    paths, y = load_photos(data)
    net = create_classifier(model)
    feats = view_features(net, paths, preprocess=preprocess)  # type: ignore[arg-type]
    preds, accs, per_repeat = [], [], []
    for r in range(repeats):
        pred = np.zeros_like(y)
        split = StratifiedKFold(folds, shuffle=True, random_state=seed + r).split(np.zeros(len(y)), y)
        for train, test in split:
            head = fit_head(feats[train], y[train], seed=seed)
            pred[test] = head.predict(feats[test, 0])
            accs.append(float(np.mean(pred[test] == y[test])))
        per_repeat.append(float(np.mean(accs[-folds:])))
        preds.append(pred)
    pooled_true, pooled_pred = np.tile(y, repeats), np.concatenate(preds)
    prec, rec, f1, sup = precision_recall_fscore_support(pooled_true, pooled_pred, labels=[0, 1, 2], zero_division=0)
    report: dict[str, Any] = {
        "data": str(data),
        "photos": len(y),
        "folds": folds,
        "repeats": repeats,
        "seed": seed,
        "model": model,
        "preprocess": preprocess,
        "accuracy_mean": round(float(np.mean(accs)), 4),
        "accuracy_std": round(float(np.std(accs)), 4),
        "accuracy_min": round(float(np.min(accs)), 4),
        "accuracy_max": round(float(np.max(accs)), 4),
        "repeat_accuracy": [round(a, 4) for a in per_repeat],
        "fold_accuracy": [round(a, 4) for a in accs],
        "per_class": {
            name: {
                "precision": round(float(p), 4),
                "recall": round(float(r), 4),
                "f1": round(float(f), 4),
                "support": int(s),
            }
            for name, p, r, f, s in zip(DISEASE_NAMES, prec, rec, f1, sup, strict=True)
        },
        "confusion": confusion_matrix(pooled_true, pooled_pred, labels=[0, 1, 2]).tolist(),
    }
    if figures:
        png = Path(figures) / f"disease_cv_{model}_{preprocess}_cm.png"
        report["figure"] = str(_plot(np.asarray(report["confusion"]), png))
    return report


def _plot(cm: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center")
    ax.set_xticks(range(3), DISEASE_NAMES, rotation=20)
    ax.set_yticks(range(3), DISEASE_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title("disease type, pooled CV folds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def train_and_export(
    data: str | Path,
    out: str | Path,
    int8: str | Path | None = None,
    seed: int = 0,
    model: str = "disease_lite0",
    preprocess: str = "paper",
) -> list[Path]:
    """Fit the head on all photos, put it into the network's linear layer and export ONNX (and
    INT8 calibrated on the photos). Returns the written paths."""
    from export.classifier_export import export_disease_classifier, quantize_int8

    paths, y = load_photos(data)
    torch.manual_seed(seed)  # randomly initialised (test) backbones are reproducible too
    net: DiseaseClassifier = create_classifier(model)  # type: ignore[assignment]
    head = fit_head(view_features(net, paths, preprocess=preprocess), y, seed=seed)
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(head.coef_.astype(np.float32)))
        net.fc.bias.copy_(torch.from_numpy(head.intercept_.astype(np.float32)))
    meta = {
        "classes": list(DISEASE_NAMES),
        "photos": len(y),
        "seed": seed,
        "head": "class-balanced logistic regression C=0.5 on 6 views per photo",
        "model": model,
        "tiles": net.tiles,
        "preprocess": preprocess,
    }
    written = [export_disease_classifier(net.eval(), out, metadata=meta)]
    if int8:
        written.append(quantize_int8(written[0], int8, [data], n=len(y), preprocess=preprocess))
    return written
