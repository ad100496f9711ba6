"""Alopecia severity from hair features, as ScalpVision's code does: gradient boosting on hair
count, thickness statistics, thin-hair ratio and density, exported to ONNX with skl2onnx.

Features are measured the way the device measures them: the segmenter (default: the shipped
student, its hairs classed by the shipped per-hair class model) and
``device.app.analysis.analyse_frame`` on each synthetic frame, then
``device.models.classifiers.hair_features``. Targets are the frames' synthetic hair-loss levels 0..3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from device.app.analysis import analyse_frame
from device.assets import default_model_path
from device.capture.imageio import read_frame
from device.contracts.constants import (
    ALOPECIA_FEATURES,
    ALOPECIA_INPUT,
    ALOPECIA_OUT_LABEL,
    ALOPECIA_OUT_PROBS,
    LEVEL_NAMES,
)
from device.models.classifiers import hair_features
from device.models.hair_classes import HairClassifier
from device.models.onnx_segmenter import ModelSegmenter

__all__ = ["measure_features", "fit_grader", "export_grader", "train_alopecia"]


def measure_features(
    folder: str | Path,
    segmenter: ModelSegmenter,
    cache: Path | None = None,
    limit: int | None = None,
    hair_classes: HairClassifier | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N x F float32 features, N int64 hair-loss levels) of a condition set; cached in ``cache``.
    hair_classes: the per-hair class model that decides the thin share (as on the device)."""
    root = Path(folder)
    recs = [json.loads(x) for x in (root / "labels.jsonl").read_text().splitlines() if x.strip()][:limit]
    y = np.asarray([r["hair_loss"] for r in recs], np.int64)
    if cache is not None and cache.is_file():
        x = np.load(cache)
        if len(x) == len(y):
            return x, y
    rows = []
    for r in recs:
        res = analyse_frame(segmenter, read_frame(root / "images" / f"{r['stem']}.jpg"), hair_classes=hair_classes)
        rows.append(hair_features(res.metrics)[0])
    x = np.asarray(rows, np.float32).reshape(-1, len(ALOPECIA_FEATURES))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, x)
    return x, y


def fit_grader(x: np.ndarray, y: np.ndarray, seed: int = 0) -> GradientBoostingClassifier:
    """Gradient boosting (150 trees of depth 3, learning rate 0.1, subsample 0.8)."""
    model = GradientBoostingClassifier(
        n_estimators=150, max_depth=3, learning_rate=0.1, subsample=0.8, random_state=seed
    )
    return model.fit(x, y)


def export_grader(model: GradientBoostingClassifier, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """skl2onnx export with a static 1xF input ``ALOPECIA_INPUT`` and outputs ``ALOPECIA_OUT_LABEL``
    ((1,) int64) and ``ALOPECIA_OUT_PROBS`` (1x4 float32); full checker and ORT parity (1e-4)."""
    import onnx
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    if list(model.classes_) != list(range(len(LEVEL_NAMES))):
        raise ValueError(f"grader must be fitted on all levels 0..3, has classes {list(model.classes_)}")
    proto = convert_sklearn(
        model,
        initial_types=[(ALOPECIA_INPUT, FloatTensorType([1, len(ALOPECIA_FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    rename = {proto.graph.output[0].name: ALOPECIA_OUT_LABEL, proto.graph.output[1].name: ALOPECIA_OUT_PROBS}
    for node in proto.graph.node:
        node.output[:] = [rename.get(o, o) for o in node.output]
    for out in proto.graph.output:
        out.name = rename.get(out.name, out.name)
    proto.graph.output[1].type.tensor_type.shape.dim[0].dim_value = 1
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = np.asarray([[30, 40, 38, 10, 0.3, 120, 0.1]], np.float32)[:, : len(ALOPECIA_FEATURES)]
    got = sess.run([ALOPECIA_OUT_PROBS], {ALOPECIA_INPUT: probe})[0]
    diff = float(np.abs(got - model.predict_proba(probe)).max())
    if diff > 1e-4:
        raise RuntimeError(f"ONNX Runtime differs from scikit-learn by {diff:.2e} for {path}")
    return path


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    f1 = f1_score(y, p, labels=[0, 1, 2, 3], average=None, zero_division=0)
    return {
        "frames": len(y),
        "f1": {lv: round(float(v), 4) for lv, v in zip(LEVEL_NAMES, f1, strict=True)},
        "macro_f1": round(float(np.mean(f1)), 4),
        "accuracy": round(float(np.mean(y == p)), 4),
        "support": {lv: int(np.sum(y == k)) for k, lv in enumerate(LEVEL_NAMES)},
        "confusion": confusion_matrix(y, p, labels=[0, 1, 2, 3]).tolist(),
    }


def train_alopecia(
    data: str | Path,
    out: str | Path,
    segmenter: str | Path | None = None,
    heldout: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure features on ``data`` (and ``heldout``), report 5-fold CV (and held-out) scores,
    fit on all of ``data`` and export ``out/alopecia.onnx``; writes ``out/report.json``."""
    out = Path(out)
    seg_path = Path(segmenter) if segmenter else default_model_path()
    seg = ModelSegmenter.from_onnx(seg_path, threads=1)
    # The shipped segmenter's hairs are classed by the shipped class model, as on the scanner.
    hair_classes = None if segmenter else HairClassifier.shipped()
    x, y = measure_features(data, seg, out / "features_train.npy", limit, hair_classes)
    folds = min(5, int(np.bincount(y, minlength=4).min()))
    report: dict[str, Any] = {
        "data": str(data),
        "segmenter": str(seg_path),
        "hair_classes": "shipped" if hair_classes is not None else None,
        "features": list(ALOPECIA_FEATURES),
    }
    if folds >= 2:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        report["cv"] = {"folds": folds, **_scores(y, cross_val_predict(fit_grader(x, y, seed), x, y, cv=cv))}
    model = fit_grader(x, y, seed)
    if heldout:
        hx, hy = measure_features(heldout, seg, out / "features_heldout.npy", limit, hair_classes)
        report["heldout"] = {"data": str(heldout), **_scores(hy, model.predict(hx))}
    report["importances"] = {
        k: round(float(v), 4) for k, v in zip(ALOPECIA_FEATURES, model.feature_importances_, strict=True)
    }
    meta = {"features": list(ALOPECIA_FEATURES), "levels": list(LEVEL_NAMES), "data": str(data), "seed": seed}
    report["onnx"] = str(export_grader(model, out / "alopecia.onnx", meta))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
