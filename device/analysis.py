"""One frame in, segmentation and hair metrics out: the measuring step of the device."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from device.constants import CENTRE_THRESHOLD, DEFAULT_UM_PER_PX, MASK_THRESHOLD, THIN_HAIR_UM
from device.hair_metrics import HairMetrics, find_centres, measure
from device.overlay import draw_overlay
from device.quality import frame_problem
from device.segmentation import SegOutput, Segmenter

__all__ = ["FrameAnalysis", "analyse_frame"]


@dataclass(frozen=True)
class FrameAnalysis:
    """seg is None when the quality gate rejected the frame (``problem`` says why)."""

    metrics: HairMetrics
    seg: SegOutput | None
    centres: np.ndarray  # (N,2) float32 (x, y) px of detected hair centres (empty without a centre head)
    problem: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def overlay(self, frame_bgr: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 BGR overlay of this analysis on its frame."""
        m = self.metrics
        mask = self.seg.mask() if self.seg is not None else np.zeros(frame_bgr.shape[:2], bool)
        strands = [(s.points, s.thickness_px * m.um_per_px) for s in m.strands]
        text = [f"hairs: {m.count}"]
        if m.median_thickness_um is not None:
            text.append(f"median thickness: {m.median_thickness_um:.0f} um  thin: {100 * (m.thin_ratio or 0):.0f}%")
        if self.problem:
            text.append(self.problem)
        return draw_overlay(frame_bgr, mask, strands, self.centres if len(self.centres) else None, text)


def analyse_frame(
    segmenter: Segmenter,
    frame_bgr: np.ndarray,
    um_per_px: float = DEFAULT_UM_PER_PX,
    thin_um: float = THIN_HAIR_UM,
    mask_threshold: float = MASK_THRESHOLD,
    centre_threshold: float = CENTRE_THRESHOLD,
) -> FrameAnalysis:
    """Quality gate, segmentation, hair metrics. frame_bgr: HxWx3 uint8 BGR; um_per_px refers
    to the pixels of this frame. A rejected frame gets count 0 and the reason."""
    timings: dict[str, float] = {}
    t = time.perf_counter()
    problem = frame_problem(frame_bgr)
    timings["quality_ms"] = (time.perf_counter() - t) * 1000
    empty = np.zeros((0, 2), np.float32)
    if problem is not None:
        blank = np.zeros(frame_bgr.shape[:2], np.uint8)
        metrics = measure(blank, um_per_px=um_per_px, thin_um=thin_um)
        metrics = _with_reason(metrics, problem)
        return FrameAnalysis(metrics, None, empty, problem, timings)
    t = time.perf_counter()
    seg = segmenter.segment(frame_bgr)
    timings["segment_ms"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    centres = find_centres(seg.centre, threshold=centre_threshold) if seg.centre is not None else None
    metrics = measure(seg.mask(mask_threshold), um_per_px=um_per_px, thin_um=thin_um, centres=centres)
    timings["metrics_ms"] = (time.perf_counter() - t) * 1000
    return FrameAnalysis(metrics, seg, centres if centres is not None else empty, None, timings)


def _with_reason(metrics: HairMetrics, reason: str) -> HairMetrics:
    import dataclasses

    return dataclasses.replace(metrics, reason=reason)
