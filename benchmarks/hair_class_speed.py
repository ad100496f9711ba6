"""Cost of the per-hair class model on the device path: cutting the patches and running the graph
for N located hairs of a real-sized frame, per class-model graph, at the given thread counts.

    .venv/bin/python benchmarks/hair_class_speed.py --models OLD.onnx NEW.onnx --hairs 12,62 \\
        --threads 1,2 --out benchmarks/reports/hair_class_speed.json

The hairs per frame: 12 is about a 70x frame's mean, 62 a dense one. Random hair positions on
the first demo clip frame (the cost does not depend on what is there). Writes JSON: per model,
hair count and thread count the median and p90 ms of ``HairClassifier.probabilities``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

import device.assets
from device.capture.imageio import read_frame
from device.contracts.constants import MODEL_UM_PER_PX
from device.models.hair_classes import HairClassifier
from server_train.evaluation.speed import cpu_name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", required=True, help="hair_classes .onnx files")
    ap.add_argument("--hairs", default="12,62", help="located hairs per frame (comma-separated)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    clip = sorted((Path(device.assets.__file__).parent / "samples" / "clip").glob("*.jpg"))
    frame = read_frame(clip[0])
    rng = np.random.default_rng(0)
    rows = []
    for path, hairs, threads in itertools.product(
        args.models, [int(h) for h in args.hairs.split(",")], [int(t) for t in args.threads.split(",")]
    ):
        points = rng.uniform((0, 0), (frame.shape[1] - 1, frame.shape[0] - 1), (hairs, 2)).astype(np.float32)
        model = HairClassifier.from_onnx(path, threads=threads)
        model.probabilities(frame, points, MODEL_UM_PER_PX)  # warm-up
        ms = []
        for _ in range(args.runs):
            t = time.perf_counter()
            model.probabilities(frame, points, MODEL_UM_PER_PX)
            ms.append((time.perf_counter() - t) * 1000)
        rows.append(
            {
                "model": path,
                "patch_px": model.patch_px,
                "batch": model.batch,
                "hairs": hairs,
                "threads": threads,
                "median_ms": round(float(np.median(ms)), 2),
                "p90_ms": round(float(np.percentile(ms, 90)), 2),
            }
        )
        print(json.dumps(rows[-1]))
    report = {"runs": args.runs, "cpu": cpu_name(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
