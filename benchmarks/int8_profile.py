"""Where the student's time goes, FP32 against INT8 (ONNX Runtime's per-node profile).

Why INT8 pays 1.2-1.4x and not 1.5x on a CPU: the per-node kernel time of each shipped student
variant, summed by operator and by resolution (``full``: nodes whose output is 480 x 640, the
narrow full-resolution head the INT8 rules keep in FP32; ``low``: the encoder and decoder at
stride 2 and below). Kernel times add the threads' work, so a share is of the work, not of the
wall time. The Amdahl bound: with the full-resolution part unchanged, INT8 can speed the whole
graph up by at most total / full.

    python benchmarks/int8_profile.py --out benchmarks/reports/int8_profile.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from device.assets import default_bundle_path
from device.contracts.constants import FRAME_HEIGHT, SEG_INPUT
from device.models.bundle import Bundle


def profile(path: Path, threads: int, runs: int) -> dict[str, Any]:
    """Per-node kernel time of ``runs`` runs on a random frame, by (operator, resolution)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(runs):
        session.run(None, {SEG_INPUT: x})
    trace = session.end_profiling()
    events = json.loads(Path(trace).read_text())
    os.remove(trace)
    by: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        outs = e["args"].get("output_type_shape") or [{}]
        dims = next(iter(outs[0].values()), []) if outs[0] else []
        where = "full" if len(dims) == 4 and dims[2] == FRAME_HEIGHT else "low"
        by[f"{e['args'].get('op_name')}@{where}"] += e["dur"]
    total = sum(by.values())
    full = sum(v for k, v in by.items() if k.endswith("@full"))
    return {
        "kernel_ms_per_run": round(total / runs / 1000, 2),
        "full_res_ms_per_run": round(full / runs / 1000, 2),
        "low_res_ms_per_run": round((total - full) / runs / 1000, 2),
        "share": {k: round(v / total, 3) for k, v in by.most_common()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    bundle = Bundle.open(default_bundle_path())
    variants = [v for v in bundle.variants("segmenter") if "onnxruntime-cpu" in v.targets]
    report: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "bundle_version": bundle.version,
        "threads": args.threads,
        "runs": args.runs,
    }
    for v in variants:
        report[v.precision] = profile(v.path, args.threads, args.runs) | {"file": v.path.name}
    if {"fp32", "int8"} <= set(report):
        fp32, int8 = report["fp32"], report["int8"]
        report["int8_speedup_kernel_time"] = round(fp32["kernel_ms_per_run"] / int8["kernel_ms_per_run"], 2)
        report["low_res_speedup"] = round(fp32["low_res_ms_per_run"] / int8["low_res_ms_per_run"], 2)
        report["bound_if_low_res_were_free"] = round(fp32["kernel_ms_per_run"] / int8["full_res_ms_per_run"], 2)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
