"""``scalpedge classify``: condition levels and alopecia level per frame, as JSON.

    scalpedge classify PATH... --out FILE.json [--precision fp32|int8] [--severity X.onnx]
                      [--alopecia Y.onnx] [--segmenter Z.onnx] [--um-per-px U]

Per frame: dandruff, sebum and erythema level (good, mild, moderate, severe) with
probabilities, P(present) and area share (severity classifier), and the alopecia level from
the hair metrics the segmenter measures (alopecia grader). Unreadable files are listed with
their error and make the exit code 1.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from device.app.analysis import analyse_frame
from device.app.frame_files import read_each, unreadable
from device.assets import default_model_path
from device.capture.imageio import list_images
from device.contracts.constants import ALOPECIA_FEATURES, DEFAULT_UM_PER_PX
from device.models.classifiers import AlopeciaGrader, SeverityClassifier, default_classifier_path, hair_features
from device.models.hair_classes import HAIR_CLASSES_MODEL, HairClassifier
from device.models.onnx_segmenter import ModelSegmenter

__all__ = ["register", "run"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("classify", help="grade scalp conditions and alopecia per frame (JSON)")
    p.add_argument("paths", nargs="+", help="images or folders")
    p.add_argument("--out", required=True, help="JSON file")
    p.add_argument("--precision", choices=("fp32", "int8"), default=None, help="shipped model variant")
    p.add_argument("--severity", default=None, help="severity classifier ONNX (default: shipped)")
    p.add_argument("--alopecia", default=None, help="alopecia grader ONNX (default: shipped)")
    p.add_argument("--segmenter", default=None, help="segmenter ONNX for the hair metrics (default: shipped)")
    p.add_argument("--um-per-px", type=float, default=None, help=f"micrometres per pixel (default {DEFAULT_UM_PER_PX})")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    um_per_px = args.um_per_px if args.um_per_px is not None else DEFAULT_UM_PER_PX
    if um_per_px <= 0:
        raise ValueError("--um-per-px must be positive")
    paths = list_images(args.paths)
    sev_path = Path(args.severity) if args.severity else default_classifier_path("severity", args.precision)
    alo_path = Path(args.alopecia) if args.alopecia else default_classifier_path("alopecia")
    seg_path = Path(args.segmenter) if args.segmenter else default_model_path()
    severity = SeverityClassifier.from_onnx(sev_path, threads=args.threads)
    grader = AlopeciaGrader.from_onnx(alo_path, threads=args.threads)
    segmenter = ModelSegmenter.from_onnx(seg_path, threads=args.threads)
    # The shipped segmenter's hairs are classed by the shipped per-hair class model, as on the
    # scanner; a segmenter given with --segmenter is measured by diameter.
    hair_classes = None if args.segmenter else HairClassifier.shipped(args.threads)
    frames: list[dict[str, Any]] = []
    for path, frame, record in read_each(paths, frames):
        record["conditions"] = severity.predict(frame).to_dict()
        analysis = analyse_frame(segmenter, frame, um_per_px=um_per_px, hair_classes=hair_classes)
        if analysis.problem is None:
            level, probs = grader.predict(analysis.metrics)
            feats = hair_features(analysis.metrics)[0]
            record["alopecia"] = {
                "level": level,
                "probs": [round(p, 4) for p in probs],
                "features": {k: round(float(v), 3) for k, v in zip(ALOPECIA_FEATURES, feats, strict=True)},
            }
        else:
            record["alopecia"] = {"level": None, "reason": analysis.problem}
        levels = record["conditions"]["levels"]
        print(f"{path.name}: {levels} alopecia={record['alopecia']['level']}")
    report = {
        "models": {
            "severity": str(sev_path),
            "alopecia": str(alo_path),
            "segmenter": str(seg_path),
            "hair_classes": HAIR_CLASSES_MODEL if hair_classes is not None else None,
        },
        "um_per_px": um_per_px,
        "frames": frames,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    failures = unreadable(frames)
    print(f"wrote {out} ({len(frames) - failures} classified, {failures} unreadable)")
    return 1 if failures else 0
