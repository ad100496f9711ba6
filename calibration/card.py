"""Add INT8 variants to a model card: quantize, gate on held-out accuracy, time, choose.

A model card (see ``export.bundle``) lists a model's files. ``calibrate_card`` quantizes its
FP32 variant with each recipe, scores every candidate on held-out data, refuses those that
lose more than ``max_drop`` (recorded under ``refused`` with both scores), times the rest
against FP32 on this CPU, and sets ``preferred``: for ONNX Runtime the fastest variant that
passed, for TensorRT the INT8 Q/DQ variant when it passed (else FP32, built as FP16).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from calibration.gate import gate
from calibration.quantize import QuantRecipe, quantize_model
from device.backends import OrtBackend

__all__ = ["calibrate_card", "interleaved_latency"]


def interleaved_latency(paths: list[Path], runs: int = 20, threads: int = 2, warmup: int = 3) -> list[float]:
    """Median ms per model, timing the models in turn (A, B, A, B, ...) so that load on a shared
    machine hits all of them alike. Inputs are fixed random arrays of each model's shapes."""
    backends = [OrtBackend(p, threads=threads) for p in paths]
    rng = np.random.default_rng(0)
    feeds = [
        {n: rng.standard_normal(s).astype(b.input_dtypes.get(n) or np.float32) for n, s in b.input_shapes.items()}
        for b in backends
    ]
    for b, f in zip(backends, feeds, strict=True):
        for _ in range(warmup):
            b.run(f)
    times: list[list[float]] = [[] for _ in backends]
    for _ in range(runs):
        for i, (b, f) in enumerate(zip(backends, feeds, strict=True)):
            start = time.perf_counter()
            b.run(f)
            times[i].append((time.perf_counter() - start) * 1000)
    return [round(statistics.median(t), 2) for t in times]


def calibrate_card(
    card_path: str | Path,
    make_reader: Callable[[], Any],
    score: Callable[[Path], float],
    metric: str,
    recipes: list[QuantRecipe],
    max_drop: float,
    runs: int = 20,
    threads: int = 2,
) -> dict[str, Any]:
    """Quantize the card's FP32 variant with each recipe, gate, time, and rewrite the card.

    make_reader: returns a fresh calibration data reader; score: model path -> held-out score
    in [0, 1] (higher is better) named ``metric``; max_drop: largest allowed score loss.
    Returns the updated card.
    """
    card_path = Path(card_path)
    card: dict[str, Any] = json.loads(card_path.read_text())
    folder = card_path.parent
    fp32 = next((v for v in card["variants"] if v["precision"] == "fp32"), None)
    if fp32 is None:
        raise ValueError(f"{card_path}: no fp32 variant to quantize")
    card["variants"] = [fp32]
    card["refused"] = []
    fp32_path = folder / fp32["file"]
    reference = score(fp32_path)
    print(f"{fp32['file']}: {metric} {reference:.4f}")
    candidates = []
    for recipe in recipes:
        dst = folder / f"{fp32_path.stem}.int8-{recipe.name}.onnx"
        record = quantize_model(fp32_path, dst, make_reader(), recipe)
        verdict = gate(metric, reference, score(dst), max_drop)
        print(f"{dst.name}: {verdict}")
        if verdict.passed:
            variant = {
                "file": dst.name,
                "precision": "int8",
                "targets": list(recipe.targets),
                "quantization": record,
                "gate": verdict.to_dict(),
            }
            candidates.append((dst, variant))
        else:
            dst.unlink()
            card["refused"].append({"recipe": recipe.name, "quantization": record, "gate": verdict.to_dict()})
    latencies = interleaved_latency([fp32_path, *(d for d, _ in candidates)], runs=runs, threads=threads)
    fp32.setdefault("evaluation", {})
    fp32["evaluation"].update({metric: round(reference, 5), "cpu_median_ms": latencies[0], "cpu_threads": threads})
    for (dst, variant), ms in zip(candidates, latencies[1:], strict=True):
        variant["evaluation"] = {
            metric: variant["gate"]["candidate"],
            "cpu_median_ms": ms,
            "cpu_threads": threads,
            "speedup_vs_fp32": round(latencies[0] / ms, 2),
        }
        card["variants"].append(variant)
        print(f"{dst.name}: {ms:.1f} ms vs fp32 {latencies[0]:.1f} ms ({latencies[0] / ms:.2f}x)")
    card["preferred"] = _preferred(card["variants"])
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def _preferred(variants: list[dict[str, Any]]) -> dict[str, str]:
    """Per target: ORT CPU takes the fastest variant meant for it; TensorRT its INT8 variant
    when one passed, else FP32."""
    ort = [v for v in variants if "onnxruntime-cpu" in v["targets"]]
    fastest = min(ort, key=lambda v: v.get("evaluation", {}).get("cpu_median_ms", float("inf")))
    trt = [v for v in variants if "tensorrt" in v["targets"]]
    trt_pick = next((v for v in trt if v["precision"] == "int8"), trt[0] if trt else None)
    out = {"onnxruntime-cpu": fastest["file"]}
    if trt_pick is not None:
        out["tensorrt"] = trt_pick["file"]
    return out
