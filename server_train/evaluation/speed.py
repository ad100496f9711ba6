"""Speed of the segmenters at the device frame size, in one run (ONNX Runtime, CPU).

Each model is exported to ONNX with the same wrapper the device uses, then timed: warm-up
runs, then the median of ``runs`` timed runs. Compare by the ratios within one run; the
machines here are noisy.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH, SEG_INPUT
from device.models.backends import OrtBackend

__all__ = ["bench_speed", "cpu_name", "time_backend"]

DEFAULT_MODELS = ("student", "teacher", "u2netp", "u2net")


def cpu_name() -> str:
    """The CPU model string (from /proc/cpuinfo where available) and logical core count."""
    import os

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical cores)"


def time_backend(backend: OrtBackend, runs: int, warmup: int = 3) -> list[float]:
    """Times in ms of ``runs`` runs on a fixed random input after ``warmup`` runs."""
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(s).astype(np.float32) for n, s in backend.input_shapes.items()}
    for _ in range(warmup):
        backend.run(feeds)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        backend.run(feeds)
        times.append((time.perf_counter() - t) * 1000)
    return times


def bench_speed(
    models: tuple[str, ...] = DEFAULT_MODELS,
    threads: tuple[int, ...] = (2,),
    runs: int = 20,
    student_onnx: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """{"cpu", "results": [{name, input, precision, threads, gflop, median_ms, runs}], "ratios"}."""
    from export.onnx_export import export_segmenter
    from server_train.models import count_gflop, create

    tmp = Path(tempfile.mkdtemp(prefix="scalpedge-bench-"))
    results = []
    for name in models:
        model = create(name).eval()
        gflop = count_gflop(model, FRAME_HEIGHT, FRAME_WIDTH)
        if name == "student" and student_onnx is not None:
            path = Path(student_onnx)
        else:
            path = export_segmenter(model, tmp / f"{name}.onnx", check=False)
        for n_threads in threads:
            backend = OrtBackend(path, threads=n_threads)
            times = time_backend(backend, runs)
            row = {
                "name": name,
                "input": "x".join(str(d) for d in backend.input_shapes[SEG_INPUT]),
                "precision": "fp32",
                "threads": n_threads,
                "gflop": round(gflop, 3),
                "median_ms": round(statistics.median(times), 2),
                "runs": runs,
            }
            results.append(row)
            if progress:
                print(f"{name:10s} threads={n_threads} {row['gflop']:8.2f} GFLOP  median {row['median_ms']:9.2f} ms")
    ratios = {}
    for n_threads in threads:
        by = {r["name"]: r["median_ms"] for r in results if r["threads"] == n_threads}
        if "student" in by:
            ratios[f"threads{n_threads}"] = {
                f"{k}_over_student": round(v / by["student"], 2) for k, v in by.items() if k != "student"
            }
    return {"cpu": cpu_name(), "onnxruntime": _ort_version(), "results": results, "ratios": ratios}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def bench_bundle_variants(bundle_dir: str | Path, threads: tuple[int, ...] = (2,), runs: int = 30) -> dict[str, Any]:
    """Latency of every variant of every model in a verified bundle on this CPU (ONNX Runtime),
    timed in turn per model so machine load hits all variants alike; with file sizes and the
    accuracy the calibration gate recorded. {"bundle", "results": [...], "speedups": {...}}."""
    from calibration.card import interleaved_latency
    from device.models.bundle import Bundle

    bundle = Bundle.open(bundle_dir)
    results: list[dict[str, Any]] = []
    speedups: dict[str, dict[str, float]] = {}
    for model in bundle.models:
        entry = bundle.model(model)
        variants = bundle.variants(model)
        evaluation = {v["file"]: v.get("gate", {}) for v in entry["variants"]}
        for n_threads in threads:
            times = interleaved_latency([v.path for v in variants], runs=runs, threads=n_threads)
            base = next((t for v, t in zip(variants, times, strict=True) if v.precision == "fp32"), None)
            for v, ms in zip(variants, times, strict=True):
                gate = evaluation.get(v.path.name) or {}
                results.append(
                    {
                        "model": model,
                        "file": v.path.name,
                        "precision": v.precision,
                        "targets": list(v.targets),
                        "threads": n_threads,
                        "median_ms": ms,
                        "runs": runs,
                        "mb": round(v.path.stat().st_size / 1e6, 3),
                        "gate": gate or None,
                    }
                )
                if base and v.precision != "fp32":
                    speedups.setdefault(f"{model}/threads{n_threads}", {})[v.path.name] = round(base / ms, 2)
    return {
        "cpu": cpu_name(),
        "onnxruntime": _ort_version(),
        "bundle": str(bundle.root),
        "bundle_version": bundle.version,
        "results": results,
        "speedups_vs_fp32": speedups,
    }
