"""Hairs per cm² at other magnifications: does counting follow the physical scale?

Each held-out trichoscopy frame (the subjects ``subject_split`` keeps out of training) is shown
to the device as a scanner at another magnification would show it, with the optics profile's
micrometres per pixel, and counted by the device's own measuring step (``analyse_frame``):

- s > 1 (zoomed in): the centre 1/s of the field, enlarged back to the full frame;
- s < 1 (zoomed out): four held-out frames side by side (2x2), shrunk by s, the centre frame cut
  out (a wider field than one frame holds).

The truth is the labelled boxes whose centre lies in the field shown. Per scale: the predicted
and true hairs per cm² summed over frames, their ratio, and that ratio relative to scale 1.0 (the
acceptance: within 10%). Also the same frames at 3x, which the quality gate must refuse.

    .venv/bin/python benchmarks/count_scale.py --out benchmarks/reports/count_scale.json \\
        --data ../shared/data/follicle-counts/train,../shared/data/follicle-counts/val [--model M.onnx]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from device.app.analysis import analyse_frame
from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH, MODEL_UM_PER_PX
from server_train.evaluation.loading import load_segmenter
from server_train.training.trichoscopy import frame_and_points, load_labelled, subject_split


def zoom_in(frame: np.ndarray, points: np.ndarray, s: float) -> tuple[np.ndarray, int]:
    """The centre 1/s of a 640x480 frame enlarged to 640x480, and the hairs (points) in it."""
    h, w = frame.shape[:2]
    cw, ch = w / s, h / s
    x0, y0 = (w - cw) / 2, (h - ch) / 2
    crop = frame[int(round(y0)) : int(round(y0 + ch)), int(round(x0)) : int(round(x0 + cw))]
    inside = (points[:, 0] >= x0) & (points[:, 0] < x0 + cw) & (points[:, 1] >= y0) & (points[:, 1] < y0 + ch)
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR), int(inside.sum())


def zoom_out(frames: list[np.ndarray], points: list[np.ndarray], s: float) -> tuple[np.ndarray, int]:
    """Four 640x480 frames as a 2x2 mosaic, shrunk by s, its centre 640x480 cut out, and the
    hairs in that cut."""
    h, w = FRAME_HEIGHT, FRAME_WIDTH
    mosaic = np.concatenate([np.concatenate(frames[:2], 1), np.concatenate(frames[2:], 1)], 0)
    offsets = [(0, 0), (w, 0), (0, h), (w, h)]
    pts = np.concatenate([p + np.array(o, np.float32) for p, o in zip(points, offsets, strict=True)]) * s
    small = cv2.resize(mosaic, (int(round(2 * w * s)), int(round(2 * h * s))), interpolation=cv2.INTER_AREA)
    x0, y0 = (small.shape[1] - w) // 2, (small.shape[0] - h) // 2
    inside = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + w) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + h)
    return small[y0 : y0 + h, x0 : x0 + w], int(inside.sum())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="comma-separated folders with images/ and annotations/")
    p.add_argument("--out", required=True)
    p.add_argument("--model", help="as for scalpedge eval counts (default: the shipped segmenter)")
    p.add_argument("--scales", default="0.75,1.0,1.25,1.5")
    p.add_argument("--limit", type=int, default=60, help="held-out frames per scale")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--split", choices=["val", "train"], default="val", help="held-out (report) or training subjects (tuning)"
    )
    args = p.parse_args()
    seg = load_segmenter(args.model, args.threads)
    train, val = subject_split(load_labelled([r for r in args.data.split(",") if r]))
    items = [frame_and_points(item) for item in (val if args.split == "val" else train)[: args.limit]]
    area_cm2 = FRAME_WIDTH * FRAME_HEIGHT * (MODEL_UM_PER_PX * 1e-4) ** 2  # at scale 1
    scales: dict[str, dict[str, float]] = {}
    t0 = time.time()
    for s in [float(x) for x in args.scales.split(",")]:
        um = MODEL_UM_PER_PX / s
        area = area_cm2 / s**2
        pred = true = 0.0
        n = 0
        for i, (frame, points, _) in enumerate(items):
            if s >= 1:
                shown, truth = zoom_in(frame, points, s)
            else:
                group = [items[(i + k) % len(items)] for k in range(4)]
                shown, truth = zoom_out([g[0] for g in group], [g[1] for g in group], s)
            result = analyse_frame(seg, shown, um_per_px=um)
            if result.problem is not None:
                continue
            pred += result.metrics.count / area
            true += truth / area
            n += 1
        scales[f"{s:g}"] = {"frames": n, "pred_per_cm2": pred / max(n, 1), "true_per_cm2": true / max(n, 1)}
        scales[f"{s:g}"]["ratio"] = pred / true if true else float("nan")
    ref = scales.get("1", {}).get("ratio")
    for v in scales.values():
        v["relative_to_scale_1"] = v["ratio"] / ref if ref else float("nan")
    refused = sum(analyse_frame(seg, f, um_per_px=MODEL_UM_PER_PX * 3).problem is not None for f, _, _ in items[:10])
    report = {
        "model": getattr(seg, "name", "?"),
        "data": args.data,
        "split": args.split,
        "frames": len(items),
        "scales": scales,
        "max_relative_error": max(abs(v["relative_to_scale_1"] - 1) for v in scales.values()),
        "off_scale_3x_refused": f"{refused}/{min(10, len(items))}",
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
