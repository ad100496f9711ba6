"""Do the shipped grader's presence thresholds come out better when chosen on each training
original's sharpest copy? The `scalp-microscope` export blurred every training copy by a random
0-2.5 px and changed its brightness by up to 25 %, and left `valid` alone.

The grader's thresholds were chosen on its held-out fifth of the training originals, all three
copies of each (``holdout_mask``, share 0.2, no salt: the card's training config). This script
scores the shipped bundle's severity classifier on those frames, chooses the F1-maximising
thresholds on all copies (which reproduces the card's) and on the sharpest copy of each
original (the largest variance of the grey Laplacian), and scores `valid` with each.

    .venv/bin/python benchmarks/condition_threshold_copies.py --data ../shared/data/scalp-microscope --out R.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from device.assets import default_bundle_path
from device.capture.imageio import read_frame
from device.models.bundle import Bundle
from device.models.classifiers import SeverityClassifier
from server_train.evaluation.presence_thresholds import best_threshold, presence_scores
from server_train.training.condition_maps import condition_maps, holdout_mask, original_name


def _scores(clf: SeverityClassifier, data: Path, split: str, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(N x 3 presence probabilities, N x 3 labels) of ``paths``."""
    probs, labels = [], []
    for p in paths:
        result = clf.predict(read_frame(p))
        probs.append([result.presence[n] for n in clf.thresholds])
        labels.append(condition_maps(data / split / "labels" / f"{p.stem}.txt", 24, 32)[0])
    return np.array(probs), np.array(labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="scalp-microscope folder (train/, valid/)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    bundle = Bundle.open(default_bundle_path())
    variant = bundle.select("conditions", "onnxruntime-cpu", "auto")
    clf = SeverityClassifier.from_onnx(variant.path, threads=2, card=bundle.model("conditions"))
    names = list(clf.thresholds)
    train = sorted((args.data / "train" / "images").glob("*.jpg"))
    held = [p for p, h in zip(train, holdout_mask(train, 0.2, "", 0.0), strict=True) if h]
    prob, truth = _scores(clf, args.data, "train", held)
    sharpness = [cv2.Laplacian(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), cv2.CV_64F).var() for p in held]
    sharpest: dict[str, int] = {}
    for i, p in enumerate(held):
        if original_name(p) not in sharpest or sharpness[i] > sharpness[sharpest[original_name(p)]]:
            sharpest[original_name(p)] = i
    keep = np.array(sorted(sharpest.values()))
    valid = sorted((args.data / "valid" / "images").glob("*.jpg"))
    vprob, vtruth = _scores(clf, args.data, "valid", valid)
    rules = {
        "card": [clf.thresholds[n] for n in names],
        "all_copies": [best_threshold(prob[:, c], truth[:, c])[0] for c in range(len(names))],
        "sharpest_copy": [best_threshold(prob[keep, c], truth[keep, c])[0] for c in range(len(names))],
    }
    report = {
        "bundle": bundle.version,
        "held_out_frames": len(held),
        "held_out_originals": len(keep),
        "valid_frames": len(valid),
        "rules": {rule: presence_scores(vprob, vtruth, t, names) for rule, t in rules.items()},
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({rule: r["macro_f1"] for rule, r in report["rules"].items()}))


if __name__ == "__main__":
    main()
