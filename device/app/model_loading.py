"""Loading a verified bundle's models onto a backend: the variant to run (the manifest's
preferred one, a precision asked for, or the fastest on this CPU), opened, and the fallbacks of
optional models. ``device.app.pipeline.ScanPipeline`` loads every model through here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from device.models.backends import Backend, OrtBackend, open_backend
from device.models.bundle import Bundle, BundleError, ModelVariant

__all__ = ["open_model", "open_optional", "fastest_variant", "FASTEST_MARGIN"]

log = logging.getLogger(__name__)

# precision "fastest": another passing variant replaces the manifest's preferred one only when at
# least this much faster on the scanner's CPU (timing noise must not flip the choice between runs).
FASTEST_MARGIN = 1.1


def open_model(
    bundle: Bundle,
    name: str,
    backend: str = "onnxruntime",
    precision: str = "auto",
    threads: int = 2,
    engine_cache: str | Path | None = None,
) -> tuple[Backend, str]:
    """The bundle's variant of model ``name`` for ``backend`` ("onnxruntime" or "tensorrt"),
    loaded, and its description ("file (precision)"). precision: "auto" (the manifest's
    preferred variant), "fp32", "int8", or "fastest": on ONNX Runtime, the variant that runs
    fastest on this CPU (``fastest_variant``), on TensorRT "auto". Raises BundleError when the
    bundle has no such variant, RuntimeError when TensorRT cannot be loaded on this machine."""
    target = "tensorrt" if backend == "tensorrt" else "onnxruntime-cpu"
    if precision == "fastest":
        if backend == "onnxruntime":
            chosen, variant = fastest_variant(bundle, name, threads)
            return chosen, f"{variant.path.name} ({variant.precision}, fastest here)"
        precision = "auto"
    variant = bundle.select(name, target, precision)
    trt_precision = "int8" if variant.precision == "int8" else "fp16"
    loaded = open_backend(
        variant.path, backend, threads, trt_precision, onnx_sha256=variant.sha256, engine_cache=engine_cache
    )
    return loaded, f"{variant.path.name} ({variant.precision})"


def fastest_variant(
    bundle: Bundle, name: str, threads: int = 2, runs: int = 8, margin: float = FASTEST_MARGIN
) -> tuple[Backend, ModelVariant]:
    """Model ``name``'s ONNX Runtime variants (every one in a bundle passed its accuracy gate)
    timed on this CPU, loaded: the manifest's preferred variant unless another one's median over
    ``runs`` runs on zeros (after one warm-up; the variants take turns, so a slow spell of the
    machine hits them alike) is at least ``margin`` x faster. The release sets ``preferred`` by
    the speed on its own CPU, which need not be the scanner's: the shipped student's INT8
    variant is 0.87x FP32 on the release's Xeon and 1.25x on an AMD EPYC."""
    preferred = bundle.select(name, "onnxruntime-cpu", "auto")
    variants = [preferred] + [
        v for v in bundle.variants(name) if "onnxruntime-cpu" in v.targets and v.path != preferred.path
    ]
    loaded: list[Backend] = [OrtBackend(v.path, threads=threads) for v in variants]
    if len(loaded) == 1:
        return loaded[0], preferred
    feeds = [{n: np.zeros(shape, np.float32) for n, shape in b.input_shapes.items()} for b in loaded]
    times: list[list[float]] = [[] for _ in loaded]
    for b in loaded:
        b.warmup(1)
    for _ in range(max(1, runs)):
        for i, b in enumerate(loaded):
            t = time.perf_counter()
            b.run(feeds[i])
            times[i].append((time.perf_counter() - t) * 1000)
    medians = [float(np.median(t)) for t in times]
    best = 0
    for i in range(1, len(loaded)):
        if medians[i] * margin <= medians[best]:
            best = i
    log.info("%s: %s", name, ", ".join(f"{v.path.name} {ms:.1f} ms" for v, ms in zip(variants, medians, strict=True)))
    return loaded[best], variants[best]


def open_optional(
    bundle: Bundle, name: str, backend: str = "onnxruntime", threads: int = 2, engine_cache: str | Path | None = None
) -> tuple[Backend, str] | None:
    """An optional model (a classifier) as ``open_model`` loads it, or None when the bundle has
    none. With TensorRT, a model the bundle has no TensorRT variant of (e.g. a tree ensemble)
    falls back to its ONNX Runtime variant on the CPU; with ONNX Runtime, one without a CPU
    variant is skipped (logged)."""
    if name not in bundle.models:
        return None
    try:
        return open_model(bundle, name, backend, "auto", threads, engine_cache)
    except BundleError as exc:
        if backend == "onnxruntime":
            log.warning("%s skipped: %s", name, exc)
            return None
    loaded, description = open_model(bundle, name, "onnxruntime", "auto", threads)
    return loaded, description.removesuffix(")") + ", onnxruntime)"
