"""A/B of two versions of the device's frame pipeline (``device/app/pipeline.py``) on one shared
2-core VM, whose second core comes and goes: one process, one loaded bundle, and the two
versions' ``ScanPipeline`` methods swapped in every ``--block`` diagnoses, so that a busy spell
hits both alike. Version A is the file at git revision ``--old``; B is the working tree's.

    .venv/bin/python benchmarks/pipeline_ab.py --old HEAD --out R.json [--diagnoses 240]

Writes the median wall time of each version and the median of the paired differences (B - A,
block by block in order). ``--timed diagnose`` (default): ``ScanPipeline.diagnose`` after the
live path, the live path not timed. ``--timed total``: the live path told it will diagnose the
frame (``live(frame, diagnose=True)``, which queues frame-only models beside the segmentation)
and the diagnosis, as ``scalpedge bench diagnosis`` times its ``total_ms``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import device.app.pipeline as current
from device.assets import default_bundle_path, sample_frames
from device.capture.imageio import read_frame
from device.models.bundle import Bundle
from server_train.evaluation.speed import cpu_name


def _old_methods(rev: str) -> dict[str, object]:
    """The functions of ``ScanPipeline`` as the file at ``rev`` defines them."""
    source = subprocess.run(
        ["git", "show", f"{rev}:device/app/pipeline.py"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="scalpedge-ab-")) / "pipeline_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pipeline_old", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_old"] = module
    spec.loader.exec_module(module)
    return {k: v for k, v in vars(module.ScanPipeline).items() if callable(v) and not k.startswith("__")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default="HEAD", help="git revision of version A")
    ap.add_argument("--diagnoses", type=int, default=240)
    ap.add_argument("--block", type=int, default=3, help="diagnoses per turn (the sample frames: 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timed", choices=("diagnose", "total"), default="diagnose")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.diagnoses < 4 * args.block:
        ap.error(f"--diagnoses must be at least 4 x --block ({4 * args.block}): each version's first block is warm-up")
    old = _old_methods(args.old)
    versions = {"A": old, "B": {k: vars(current.ScanPipeline)[k] for k in old if k in vars(current.ScanPipeline)}}
    pipe = current.ScanPipeline(Bundle.open(default_bundle_path()), threads=args.threads)
    frames = [read_frame(f) for f in sample_frames()]
    times: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(args.diagnoses):
        name = "AB"[(i // args.block) % 2]
        for key, fn in versions[name].items():
            setattr(current.ScanPipeline, key, fn)
        pipe.forget_motion()
        t = time.perf_counter()
        live = pipe.live(frames[i % len(frames)], diagnose=args.timed == "total")
        if args.timed == "diagnose":
            t = time.perf_counter()
        pipe.diagnose(live)
        times[name].append((time.perf_counter() - t) * 1000)
    pipe.close()
    n = min(len(times["A"]), len(times["B"]))
    skip = 2 * args.block  # warm-up: each version's first block
    paired = np.array(times["B"][skip:n]) - np.array(times["A"][skip:n])
    report = {
        "cpu": cpu_name(),
        "threads": args.threads,
        "old": args.old,
        "diagnoses": args.diagnoses,
        "timed": args.timed,
        "median_ms": {k: round(float(np.median(v[skip:])), 2) for k, v in times.items()},
        "median_paired_b_minus_a_ms": round(float(np.median(paired)), 2),
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
