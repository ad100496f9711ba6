"""Does frame colour carry the condition labels of scalp-microscope? A probe, not a product model.

Per frame (resized to 320 px): percentiles of L*a*b*, saturation and value, areas of bright blobs
above the scalp's median lightness (flake candidates), redness above the frame median and the
share of specular pixels. Extra trees per condition (dandruff = d|ds, oiliness = o, erythema =
ds|s), grouped 5-fold CV by original on ``train`` (out-of-fold AUC and F1 at the out-of-fold
F1-maximising threshold), then fitted on all of ``train`` and scored on ``valid`` at that threshold.

    python benchmarks/condition_colour_probe.py --data ../shared/data/scalp-microscope --out R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import GroupKFold

from server_train.training.condition_maps import YOLO_CONDITION_CLASSES, original_name

NAMES = ("dandruff", "oiliness", "erythema")


def labels(path: Path) -> list[int]:
    """Presence per condition from a YOLO-seg label file (missing file: none)."""
    ids = {int(line.split()[0]) for line in path.read_text().splitlines() if line.strip()} if path.is_file() else set()
    return [int(bool(ids & c)) for c in YOLO_CONDITION_CLASSES]


def features(path: Path, side: int = 320) -> list[float]:
    """Colour and bright-blob statistics of one frame."""
    bgr = cv2.resize(cv2.imread(str(path)), (side, side), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).astype(np.float32)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    light, a = lab[..., 0] * 100 / 255, lab[..., 1] - 128
    sat, val = hsv[..., 1] / 255, hsv[..., 2] / 255
    out: list[float] = []
    for ch in (light, a, lab[..., 2] - 128, sat, val):
        out += [*np.percentile(ch, [5, 25, 50, 75, 95, 99]), float(ch.std())]
    scalp = float(np.median(light[light > np.percentile(light, 40)]))  # hair is dark
    local = cv2.GaussianBlur(light, (0, 0), 8)
    for d in (6, 10, 15, 20):
        for m in ((light - scalp) > d, ((light - scalp) > d) & ((light - local) > d / 2)):
            n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
            areas = np.sort(stats[1:, 4])[::-1] if n > 1 else np.zeros(1)
            out += [m.mean(), areas[0] / side**2, areas[:5].sum() / side**2]
            out += [float((areas > 20).sum()), float((areas > 200).sum()), float((areas > 1000).sum())]
    red = a - np.median(a)
    out += [float(np.percentile(red, 99)), float((red > 6).mean()), float((red > 10).mean())]
    out += [float(((val > v) & (sat < 0.15)).mean()) for v in (0.9, 0.95)]
    return out


def load(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    files = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    x = np.array([features(p) for p in files])
    y = np.array([labels(folder / "labels" / f"{p.stem}.txt") for p in files])
    return x, y, np.array([original_name(p) for p in files])


def best_f1(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    scores = [(f1_score(y, p >= t), float(t)) for t in np.unique(p)]
    return max(scores)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="scalp-microscope folder (train/, valid/)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    xt, yt, gt = load(Path(args.data) / "train")
    xv, yv, _ = load(Path(args.data) / "valid")

    def model() -> ExtraTreesClassifier:
        return ExtraTreesClassifier(
            n_estimators=400, min_samples_leaf=3, max_features=0.3, class_weight="balanced", random_state=0, n_jobs=2
        )

    report: dict[str, dict[str, float]] = {}
    for j, name in enumerate(NAMES):
        oof = np.zeros(len(yt))
        for tr, te in GroupKFold(5).split(xt, yt[:, j], gt):
            oof[te] = model().fit(xt[tr], yt[tr, j]).predict_proba(xt[te])[:, 1]
        f1_cv, t = best_f1(yt[:, j], oof)
        p = model().fit(xt, yt[:, j]).predict_proba(xv)[:, 1]
        report[name] = {
            "oof_auc": round(float(roc_auc_score(yt[:, j], oof)), 4),
            "oof_f1": round(float(f1_cv), 4),
            "threshold": round(t, 4),
            "valid_auc": round(float(roc_auc_score(yv[:, j], p)), 4),
            "valid_f1": round(float(f1_score(yv[:, j], p >= t)), 4),
        }
    report["valid_macro_f1"] = round(float(np.mean([report[n]["valid_f1"] for n in NAMES])), 4)  # type: ignore[assignment]
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
