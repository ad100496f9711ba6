"""Add INT8 variants to a model card: quantize, gate on held-out accuracy, time, choose.

A model card (see ``export.bundle``) lists a model's files. ``calibrate_card`` quantizes its
FP32 variant with each recipe (``calibration.rules`` says which, and which nodes stay FP32),
judges every candidate against FP32 (``calibration.gate``), refuses those that lose more than
the allowed drop (recorded under ``refused`` with both scores), times the rest
against FP32 on this CPU, and sets ``preferred``: for ONNX Runtime the fastest variant that
passed if it is at least ``min_speedup`` times faster than FP32 (else FP32), for TensorRT the
INT8 Q/DQ variant when it passed (else FP32, built as FP16).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from calibration.gate import GateResult, Judge
from calibration.quantize import QuantRecipe, quantize_model
from device.models.backends import OrtBackend

__all__ = ["calibrate_card", "quantize_gated", "interleaved_latency"]


def interleaved_latency(paths: list[Path], runs: int = 20, threads: int = 2, block: int = 5) -> list[float]:
    """Median ms per model over ``runs`` timed runs, taken in rounds of ``block`` runs per model
    (A x5, B x5, A x5, ...) so that load on a shared machine hits all models alike. Each block
    starts with 2 untimed runs (ONNX Runtime's idle worker threads of the previous session
    would otherwise skew its first runs). Inputs: fixed random arrays of each model's shapes."""
    backends = [OrtBackend(p, threads=threads) for p in paths]
    rng = np.random.default_rng(0)
    feeds = [
        {n: rng.standard_normal(s).astype(b.input_dtypes.get(n) or np.float32) for n, s in b.input_shapes.items()}
        for b in backends
    ]
    times: list[list[float]] = [[] for _ in backends]
    while len(times[0]) < runs:
        for i, (b, f) in enumerate(zip(backends, feeds, strict=True)):
            for _ in range(2):
                b.run(f)
            for _ in range(min(block, runs - len(times[i]))):
                start = time.perf_counter()
                b.run(f)
                times[i].append((time.perf_counter() - start) * 1000)
    return [round(statistics.median(t), 2) for t in times]


def quantize_gated(
    fp32: Path, dst: Path, reader: Any, recipe: QuantRecipe, judge: Judge
) -> tuple[dict[str, Any], GateResult]:
    """Quantize ``fp32`` to ``dst`` with ``recipe`` calibrated on ``reader`` and judge it against
    FP32; a refused ``dst`` is deleted. Returns (quantization record, verdict)."""
    record = quantize_model(fp32, dst, reader, recipe)
    verdict = judge(fp32, dst, recipe)
    print(f"{dst.name}: {verdict}")
    if not verdict.passed:
        dst.unlink()
    return record, verdict


def calibrate_card(
    card_path: str | Path,
    make_reader: Callable[[], Any],
    judge: Judge,
    recipes: list[QuantRecipe],
    runs: int = 20,
    threads: int = 2,
    min_speedup: float = 1.2,
) -> dict[str, Any]:
    """Quantize the card's FP32 variant with each recipe, gate, time, and rewrite the card.

    make_reader: returns a fresh calibration data reader; judge: scores a candidate against
    FP32 (``calibration.gate.DiceGate`` or ``AgreementGate``); min_speedup: an INT8 variant is
    preferred on ONNX Runtime only if at least this much faster than FP32 (else FP32 keeps its
    accuracy). Returns the updated card.
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
    candidates, reference = [], {}
    for recipe in recipes:
        dst = folder / f"{fp32_path.stem}.int8-{recipe.name}.onnx"
        record, verdict = quantize_gated(fp32_path, dst, make_reader(), recipe, judge)
        reference = {verdict.metric: round(verdict.reference, 5)}
        if verdict.passed:
            variant: dict[str, Any] = {
                "file": dst.name,
                "precision": "int8",
                "targets": list(recipe.targets),
                "quantization": record,
                "gate": verdict.to_dict(),
            }
            candidates.append((dst, variant))
        else:
            card["refused"].append({"recipe": recipe.name, "quantization": record, "gate": verdict.to_dict()})
    latencies = interleaved_latency([fp32_path, *(d for d, _ in candidates)], runs=runs, threads=threads)
    fp32.setdefault("evaluation", {})
    fp32["evaluation"].update(reference | {"cpu_median_ms": latencies[0], "cpu_threads": threads})
    for (dst, variant), ms in zip(candidates, latencies[1:], strict=True):
        variant["evaluation"] = {
            variant["gate"]["metric"]: variant["gate"]["candidate"],
            "cpu_median_ms": ms,
            "cpu_threads": threads,
            "speedup_vs_fp32": round(latencies[0] / ms, 2),
        }
        card["variants"].append(variant)
        print(f"{dst.name}: {ms:.1f} ms vs fp32 {latencies[0]:.1f} ms ({latencies[0] / ms:.2f}x)")
    card["preferred"] = _preferred(card["variants"], min_speedup)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def _preferred(variants: list[dict[str, Any]], min_speedup: float) -> dict[str, str]:
    """Per target: ONNX Runtime takes the fastest variant meant for it if it beats FP32 by
    ``min_speedup``, else FP32; TensorRT takes its INT8 Q/DQ variant when one passed, else FP32
    (built as an FP16 engine)."""
    fp32 = next(v for v in variants if v["precision"] == "fp32")
    ort = [v for v in variants if "onnxruntime-cpu" in v["targets"] and v is not fp32]
    fastest = min(ort, key=lambda v: v["evaluation"]["cpu_median_ms"], default=None)
    ort_pick = fastest if fastest and fastest["evaluation"]["speedup_vs_fp32"] >= min_speedup else fp32
    trt_pick = next((v for v in variants if "tensorrt" in v["targets"] and v["precision"] == "int8"), fp32)
    return {"onnxruntime-cpu": ort_pick["file"], "tensorrt": trt_pick["file"]}
