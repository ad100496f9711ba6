"""How fast a diagnosis could be on this CPU with the bundle's models: the work of one diagnosis,
split into the time inside each model's ONNX Runtime runs and the host's own work (numpy and
OpenCV: quality gate, prompts, metrics, skeletons, pre- and post-processing), and the floors
that work sets on N cores.

    .venv/bin/python benchmarks/diagnosis_floor.py --out R.json [--runs 30] [--cores 2]

Everything runs in one thread, one piece after another (``ScanPipeline(threads=1,
parallel=False)``), so no piece waits for another; ``OrtBackend.run`` is wrapped to add up each
model file's run time per diagnosis. Floors, ms: ``all_work / cores`` (every piece overlapped
perfectly), ``(grader + host) / cores`` and ``(segmentation models) / cores`` (the student, the
prompt refiner's encoder and decoder, the pixel refiner, the hair classifier): what a diagnosis
would cost with perfect overlap if everything else were free.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from device.app.pipeline import MODEL_NAMES, ScanPipeline
from device.assets import default_bundle_path, sample_frames
from device.capture.imageio import read_frame
from device.models.backends import OrtBackend
from device.models.bundle import Bundle
from server_train.evaluation.speed import cpu_name

WARMUP = 3


def measure(bundle_dir: str | Path, runs: int, precision: str) -> dict[str, Any]:
    """Median wall ms of a serial one-thread diagnosis (live path with diagnose=True, then
    ``diagnose``), median ms inside each model file's runs, and the host's work (wall - models)."""
    pipe = ScanPipeline(Bundle.open(bundle_dir), precision=precision, threads=1, parallel=False)
    spent: dict[str, float] = {}
    run = OrtBackend.run

    def timed_run(self: OrtBackend, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> Any:
        result = run(self, inputs, outputs)
        spent[self.path.name] = spent.get(self.path.name, 0.0) + self.last_ms
        return result

    frames = [read_frame(f) for f in sample_frames()]
    walls: list[float] = []
    per_model: dict[str, list[float]] = {}
    OrtBackend.run = timed_run  # type: ignore[method-assign]
    try:
        for i in range(runs + WARMUP):
            spent.clear()
            pipe.forget_motion()
            t = time.perf_counter()
            diagnosis = pipe.diagnose(pipe.live(frames[i % len(frames)], diagnose=True))
            wall = (time.perf_counter() - t) * 1000
            if not diagnosis.accepted:
                raise RuntimeError(f"sample frame {i % len(frames)} was rejected: {diagnosis.analysis.problem}")
            if i < WARMUP:
                continue
            walls.append(wall)
            for name, ms in spent.items():
                per_model.setdefault(name, []).append(ms)
            per_model.setdefault("host", []).append(wall - sum(spent.values()))
    finally:
        OrtBackend.run = run  # type: ignore[method-assign]
        pipe.close()
    return {
        "variants": dict(pipe.variants),
        "wall_ms": round(float(np.median(walls)), 2),
        "work_ms": {k: round(float(np.median(v)), 2) for k, v in per_model.items()},
    }


def floors(work: dict[str, float], variants: dict[str, str], cores: int) -> dict[str, float]:
    """The floors of the module docstring from ``work`` (piece -> ms) and the variant files."""
    files = {role: desc.split(" ")[0] for role, desc in variants.items()}
    grader = work.get(files.get("conditions", ""), 0.0)
    seg_roles = ("segmenter", "refiner_encoder", "refiner_decoder", "pixel_refiner", "hair_classes")
    segmentation = sum(work.get(files[r], 0.0) for r in seg_roles if r in files)
    return {
        "all_work": round(sum(work.values()) / cores, 1),
        "grader_and_host": round((grader + work.get("host", 0.0)) / cores, 1),
        "segmentation_models": round(segmentation / cores, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--bundle", default=str(default_bundle_path()))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--precision", default="fastest", choices=("fastest", "auto", "fp32", "int8"))
    args = ap.parse_args()
    if args.runs < 1 or args.cores < 1:
        ap.error("--runs and --cores must be at least 1")
    result = measure(args.bundle, args.runs, args.precision)
    report = {
        "cpu": cpu_name(),
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle": args.bundle,
        "bundle_version": Bundle.open(args.bundle).version,
        "runs": args.runs,
        "models": {role: MODEL_NAMES.get(role, role) for role in result["variants"]},
        **result,
        "cores": args.cores,
        "floor_ms": floors(result["work_ms"], result["variants"], args.cores),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
