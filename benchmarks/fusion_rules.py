"""Which rule fuses the student's mask M^ (P(hair) p) and the refiner's M_AP (q) best?

    python benchmarks/fusion_rules.py --tune data/val3_hard --report data/heldout data/seed_new_hard \\
        --out benchmarks/reports/fusion_rules.json

Runs the shipped bundle's student and refiner (auto prompts, ONNX Runtime, 1 thread) on each
synthetic set (``scalpedge synth ... --hard``), keeps p and q per frame (``SET/pq.npz``, reused
on the next run), and scores pooled Dice at 640x480 for: the student alone at thresholds
0.3-0.6, the shipped AND (p >= 0.5 and q >= 0.5), ANDs at other thresholds, and weighted means
w p + (1 - w) q at thresholds. The rule is chosen on ``--tune``; ``--report`` sets only report it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from device.assets import default_bundle_path
from device.capture.imageio import read_frame
from device.contracts.preprocess import prepare_frame
from device.models.bundle import Bundle
from device.models.onnx_segmenter import ModelSegmenter
from device.refine.fusion import RefinedSegmenter
from device.refine.refiner import PromptRefiner
from server_train.evaluation.seg_eval import paired_frames

THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)


def cache(root: Path, student: ModelSegmenter, refined: RefinedSegmenter) -> dict[str, np.ndarray]:
    """p, q (uint8, P x 255) and truth (bool) of every frame of ``root``, NxHxW."""
    out = root / "pq.npz"
    if not out.exists():
        p, q, t = [], [], []
        for image, mask in paired_frames(root):
            frame = prepare_frame(read_frame(image))
            truth = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
            t.append(cv2.resize(truth, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 127)
            p.append((student.segment(frame).prob * 255).astype(np.uint8))
            q.append((refined.segment(frame).prob * 255).astype(np.uint8))
        np.savez_compressed(out, p=np.stack(p), q=np.stack(q), t=np.stack(t))
    with np.load(out) as d:
        return {k: d[k] for k in ("p", "q", "t")}


def rules(p: np.ndarray, q: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    for a in THRESHOLDS:
        yield f"student p>={a}", p >= a
    yield "refiner alone q>=0.5", q >= 0.5
    for a in (0.3, 0.4, 0.5, 0.6):
        for b in (0.2, 0.5, 0.8):
            yield f"AND p>={a} q>={b}", (p >= a) & (q >= b)
    for w in (0.5, 0.7, 0.85):
        for a in THRESHOLDS:
            yield f"mean {w}p+{1 - w:.2f}q>={a}", (w * p + (1 - w) * q) >= a


def dice(mask: np.ndarray, truth: np.ndarray) -> float:
    return float(2 * np.logical_and(mask, truth).sum() / max(1, mask.sum() + truth.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tune", required=True)
    ap.add_argument("--report", nargs="*", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    bundle = Bundle.open(default_bundle_path())
    student = ModelSegmenter.from_onnx(bundle.select("segmenter").path, threads=1)
    refiner = PromptRefiner.from_onnx(
        bundle.select("refiner_encoder").path, bundle.select("refiner_decoder").path, threads=1
    )
    refined = RefinedSegmenter(student, refiner, stage="refined")
    scores: dict[str, dict[str, float]] = {}
    for root in [args.tune, *args.report]:
        d = cache(Path(root), student, refined)
        p, q = d["p"] / np.float32(255), d["q"] / np.float32(255)
        scores[root] = {name: round(dice(m, d["t"]), 4) for name, m in rules(p, q)}
    tune = scores[args.tune]
    best = max(tune, key=lambda k: tune[k])
    best_student = max((k for k in tune if k.startswith("student")), key=lambda k: tune[k])
    summary = {
        root: {
            name: s[name]
            for name in ("student p>=0.5", "AND p>=0.5 q>=0.5", best_student, best, "refiner alone q>=0.5")
        }
        for root, s in scores.items()
    }
    report = {"bundle": bundle.version, "tuned_on": args.tune, "best_rule": best, "best_student": best_student}
    report |= {"summary": summary, "all": scores}
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
