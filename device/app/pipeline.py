"""The per-frame path on the device, with the models of one verified bundle.

Two paths share one segmentation:

- ``live(frame)``: quality gate -> segmenter -> hair count (end density, else centre lines); cheap
  enough for every frame of the preview.
- ``diagnose(frame)``: the full diagnosis of ``../shared/DESIGN.md``: quality gate ->
  segmenter -> hair metrics (count, thickness in micrometres from the optics profile, thin
  ratio, density) -> severity classifier (when the bundle has one) -> alopecia grade (when the
  bundle has one) -> the fields of a result record, with per-stage timings.

Models missing from the bundle are skipped, and the diagnosis says so (its ``conditions``
are empty), so a segmenter-only bundle still gives hair metrics.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.app.analysis import FrameAnalysis, analyse_frame
from device.contracts.constants import (
    DEFAULT_UM_PER_PX,
    FRAME_WIDTH,
    LEVEL_NAMES,
    LINE_THRESHOLD,
    MASK_THRESHOLD,
    MIN_STRAND_PX,
)
from device.contracts.preprocess import prepare_frame
from device.measure.hair_metrics import split_strands
from device.measure.optics import OpticsProfile
from device.measure.quality import QualityReport, assess
from device.models.backends import open_backend
from device.models.bundle import Bundle, BundleError
from device.models.onnx_segmenter import ModelSegmenter
from device.models.segmentation import SegOutput

__all__ = ["ScanPipeline", "LiveResult", "Diagnosis", "MODEL_NAMES"]

log = logging.getLogger(__name__)

# Bundle model names the pipeline looks for.
MODEL_NAMES = {"segmenter": "segmenter", "conditions": "conditions", "alopecia": "alopecia"}


@dataclass(frozen=True)
class LiveResult:
    """frame: the 640x480 BGR frame measured; seg None when the quality gate rejected it."""

    frame: np.ndarray
    seg: SegOutput | None
    count: int
    problem: str | None
    timings_ms: dict[str, float]
    quality: QualityReport | None = None


@dataclass(frozen=True)
class Diagnosis:
    """A full diagnosis: the analysis (mask, strands, metrics), condition results by name
    ({"level", "probabilities", ...}), the alopecia grade, record-ready fields, timings."""

    analysis: FrameAnalysis
    conditions: dict[str, dict[str, Any]]
    alopecia: dict[str, Any] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    quality: QualityReport | None = None

    @property
    def accepted(self) -> bool:
        return self.analysis.problem is None

    def record_fields(self) -> dict[str, Any]:
        """metrics / conditions / quality / timings_ms as ``device.contracts.records.build_record`` takes them."""
        m = self.analysis.metrics
        metrics: dict[str, dict[str, Any]] = {
            "hair_count": {"value": int(m.count), "unit": "count"},
            **({"visible_hairs": {"value": m.visible_count, "unit": "count"}} if m.visible_count is not None else {}),
            "mean_thickness": {"value": _round(m.mean_thickness_um), "unit": "um"},
            "median_thickness": {"value": _round(m.median_thickness_um), "unit": "um"},
            "thin_ratio": {"value": _round(m.thin_ratio, 4), "unit": "ratio"},
            "density": {"value": _round(m.density_per_cm2, 1), "unit": "per_cm2"},
            "um_per_px": {"value": _round(m.um_per_px, 5), "unit": "um_per_px"},
        }
        conditions = {k: {"level": v["level"], "probabilities": v["probabilities"]} for k, v in self.conditions.items()}
        # presence / area share are classifier extras the record schema does not carry
        if self.alopecia is not None:
            conditions["alopecia"] = {"level": self.alopecia["level"], "probabilities": self.alopecia["probabilities"]}
        return {
            "metrics": metrics,
            "conditions": conditions,
            "quality": (self.quality.to_dict() if self.quality else {"accepted": self.accepted})
            | {"accepted": self.accepted, "reason": self.analysis.problem},
            "timings_ms": {k.removesuffix("_ms"): round(v, 2) for k, v in self.timings_ms.items()},
        }


def _round(value: float | None, nd: int = 2) -> float | None:
    return None if value is None else round(float(value), nd)


class ScanPipeline:
    """Holds the loaded backends (state) and runs the live and diagnosis paths on frames.

    Construct it in the thread that runs the frame loop (TensorRT contexts are per thread).
    """

    def __init__(
        self,
        bundle: Bundle,
        backend: str = "onnxruntime",
        precision: str = "auto",
        threads: int = 2,
        optics: OpticsProfile | None = None,
        engine_cache: str | Path | None = None,
    ) -> None:
        self.bundle = bundle
        self.backend_kind = backend
        self.optics = optics
        target = "tensorrt" if backend == "tensorrt" else "onnxruntime-cpu"
        self.variants: dict[str, str] = {}
        self._previous_grey: np.ndarray | None = None
        self._live_count = 0

        def load(name: str) -> Any:
            variant = bundle.select(name, target, precision if name == "segmenter" else "auto")
            self.variants[name] = f"{variant.path.name} ({variant.precision})"
            trt_precision = "int8" if variant.precision == "int8" else "fp16"
            return open_backend(
                variant.path, backend, threads, trt_precision, onnx_sha256=variant.sha256, engine_cache=engine_cache
            )

        self.segmenter = ModelSegmenter(load(MODEL_NAMES["segmenter"]), name="segmenter")
        self.severity: Any = None
        self.alopecia: Any = None

        def optional(name: str) -> Any:
            """The backend of an optional model, or None (logged) when the bundle has no
            variant of it for this backend (with TensorRT: falls back to ONNX Runtime)."""
            if name not in bundle.models:
                return None
            try:
                return load(name)
            except BundleError as exc:
                if backend == "onnxruntime":
                    log.warning("%s skipped: %s", name, exc)
                    return None
            # No TensorRT variant (e.g. a tree ensemble): run its ONNX Runtime variant on the CPU.
            variant = bundle.select(name, "onnxruntime-cpu")
            self.variants[name] = f"{variant.path.name} ({variant.precision}, onnxruntime)"
            return open_backend(variant.path, "onnxruntime", threads)

        from device.models.classifiers import AlopeciaGrader, SeverityClassifier

        if (severity := optional(MODEL_NAMES["conditions"])) is not None:
            self.severity = SeverityClassifier(severity)
        if (alopecia := optional(MODEL_NAMES["alopecia"])) is not None:
            self.alopecia = AlopeciaGrader(alopecia)

    def um_per_px(self, frame_width: int) -> float:
        """Micrometres per pixel of a frame ``frame_width`` wide (optics profile, else default)."""
        if self.optics is not None:
            return self.optics.um_per_px_at(frame_width)
        return DEFAULT_UM_PER_PX * FRAME_WIDTH / frame_width

    def live(self, frame_bgr: np.ndarray, count: bool = True) -> LiveResult:
        """Quality gate, segmentation and a hair count (no thickness measurement): read off an
        end-density head, else strands of the centre lines. count=False skips the count (with
        centre lines about as costly as segmentation on a CPU) and reports the
        last one: the frame loop refreshes it a few times a second."""
        t0 = time.perf_counter()
        frame = prepare_frame(frame_bgr)
        quality, self._previous_grey = assess(frame, self._previous_grey)
        problem = quality.reason
        t1 = time.perf_counter()
        if problem is not None:
            return LiveResult(frame, None, 0, problem, {"quality_ms": (t1 - t0) * 1000}, quality)
        seg = self.segmenter.segment(frame)
        t2 = time.perf_counter()
        if count and seg.hairs is not None:  # an end-density head counts for free
            self._live_count = int(round(seg.hairs))
        elif count and seg.lines is not None:
            lines = (seg.lines >= LINE_THRESHOLD) & (seg.prob >= MASK_THRESHOLD)
            self._live_count = len(split_strands(lines, min_length_px=MIN_STRAND_PX))
        t3 = time.perf_counter()
        timings = {"quality_ms": (t1 - t0) * 1000, "segment_ms": (t2 - t1) * 1000}
        if count:
            timings["count_ms"] = (t3 - t2) * 1000
        return LiveResult(frame, seg, self._live_count, None, timings, quality)

    def diagnose(self, frame_bgr: np.ndarray, quality: QualityReport | None = None) -> Diagnosis:
        """The full diagnosis of one frame (see the module docstring). quality: the live path's
        report for this frame (its motion estimate needs the previous frame); computed when None."""
        t0 = time.perf_counter()
        if quality is None:
            quality, _ = assess(prepare_frame(frame_bgr))
        analysis = analyse_frame(
            self.segmenter, frame_bgr, um_per_px=self.um_per_px(frame_bgr.shape[1]), problem=quality.reason
        )
        timings = dict(analysis.timings_ms)
        conditions: dict[str, dict[str, Any]] = {}
        alopecia = None
        if analysis.problem is None and self.severity is not None:
            t = time.perf_counter()
            result = self.severity.predict(analysis.frame)
            conditions = {
                name: {
                    "level": result.levels[name],
                    "probabilities": dict(zip(LEVEL_NAMES, result.level_probs[name], strict=True)),
                    "presence": result.presence[name],
                    "area_share": result.area_share[name],
                }
                for name in result.levels
            }
            timings["classify_ms"] = (time.perf_counter() - t) * 1000
        if analysis.problem is None and self.alopecia is not None:
            t = time.perf_counter()
            level, probs = self.alopecia.predict(analysis.metrics)
            alopecia = {"level": level, "probabilities": dict(zip(LEVEL_NAMES, probs, strict=True))}
            timings["alopecia_ms"] = (time.perf_counter() - t) * 1000
        timings["total_ms"] = (time.perf_counter() - t0) * 1000
        return Diagnosis(analysis, conditions, alopecia, timings, quality)
