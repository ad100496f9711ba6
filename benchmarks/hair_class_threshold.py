"""The hair-class model's threshold on P(miniaturised), chosen on the device's own path.

``scalpedge train hair-classes`` picks its threshold on patches cut at the labelled box centres
of its tuning subjects. The device classifies the hairs the segmenter *locates* instead, some
of which are not hairs at all (a scale, a pore, a hair's far end), so the best threshold there
may differ. This script runs the device's measuring step (``analyse_frame``: segmenter, located
hairs, the class model) on the same tuning subjects (training subjects the class model never
trained on), records P(miniaturised) of every located hair, and picks the threshold whose
per-frame thin share best matches the labelled ``undersize`` share (``choose_threshold``, the
grid training uses, with its share scale). Nothing here reads the held-out subjects. A model
trained with ``--refit`` has trained on these subjects too, so its figures here are in-sample.

    .venv/bin/python benchmarks/hair_class_threshold.py --model runs/release_counts/segmenter.onnx \\
        --hair-classes runs/hair_release/hair_classes.onnx --out runs/eval/hair_class_threshold.json \\
        --data ../shared/data/follicle-counts/train,../shared/data/follicle-counts/val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from device.app.analysis import analyse_frame
from device.capture.imageio import read_frame
from device.models.hair_classes import HairClassifier
from server_train.evaluation.counts_eval import TEXT_BAR_PX, THIN_CLASS, TRICHOSCOPY_UM_PER_PX
from server_train.evaluation.loading import load_segmenter
from server_train.training.hair_class_train import HairClassConfig, choose_threshold
from server_train.training.trichoscopy import load_labelled, subject_split


class _Recording(HairClassifier):
    """The class model, keeping every P(miniaturised) it computes (one array per call)."""

    def __init__(self, inner: HairClassifier) -> None:
        self.__dict__.update(inner.__dict__)
        self.seen: list[np.ndarray] = []

    def probabilities(self, frame_bgr: np.ndarray, points: np.ndarray, um_per_px: float) -> np.ndarray:
        p = super().probabilities(frame_bgr, points, um_per_px)
        self.seen.append(p)
        return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="comma-separated follicle-counts folders")
    ap.add_argument("--model", required=True, help="segmenter .onnx (the one the bundle ships)")
    ap.add_argument("--hair-classes", required=True, help="hair_classes.onnx")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cfg = HairClassConfig(data=args.data, out="")
    train, _ = subject_split(load_labelled(args.data.split(",")), cfg.val_percent)
    _, tune = subject_split(train, cfg.tune_percent, salt="scalpedge-hair-classes")
    segmenter = load_segmenter(args.model, args.threads)
    model = _Recording(HairClassifier.from_onnx(args.hair_classes, threads=args.threads))
    probs, frame_of, truth = [], [], []
    for item in tune:
        raw = read_frame(item.image)
        model.seen.clear()
        analyse_frame(segmenter, raw[TEXT_BAR_PX:], um_per_px=TRICHOSCOPY_UM_PER_PX, hair_classes=model)
        p = np.concatenate(model.seen) if model.seen else np.zeros(0)
        if not item.classes or not len(p):  # the device reports no thin ratio without hairs
            continue
        probs.append(p)
        frame_of.append(np.full(len(p), len(truth)))
        truth.append(float(np.mean([c == THIN_CLASS for c in item.classes])))
    prob, frame = np.concatenate(probs), np.concatenate(frame_of)
    choice = choose_threshold(prob, np.zeros(len(prob), bool), frame, truth=np.asarray(truth))
    report = {
        "data": args.data,
        "model": args.model,
        "hair_classes": args.hair_classes,
        "subjects": "tuning subjects of train hair-classes (training subjects it never trained on)",
        "frames": choice["frames"],
        "thin_probability": choice["thin_probability"],
        "thin_ratio_mae": choice["ratio_mae"],
        "thin_share_scale": choice["thin_share_scale"],
        "thin_ratio_mae_unscaled": choice["ratio_mae_unscaled"],
        "thin_ratio_mae_at_0.5": choice["ratio_mae_at_0.5"],
        "graph_threshold": model.thin_probability,
        "graph_share_scale": model.thin_share_scale,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("frames", "thin_probability", "thin_ratio_mae", "graph_threshold")}))


if __name__ == "__main__":
    main()
