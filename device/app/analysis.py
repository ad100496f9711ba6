"""One frame in, segmentation and hair metrics out: the measuring step of the device."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from device.app.overlay import draw_overlay
from device.contracts.constants import (
    CENTRE_THRESHOLD,
    DEFAULT_UM_PER_PX,
    LINE_THRESHOLD,
    MASK_THRESHOLD,
    MIN_STRAND_PX,
    THIN_HAIR_UM,
)
from device.contracts.preprocess import prepare_frame
from device.measure.hair_metrics import HairMetrics, find_centres, measure, split_strands
from device.measure.quality import frame_problem
from device.models.segmentation import Segmenter, SegOutput

__all__ = ["FrameAnalysis", "analyse_frame", "centres_on_hair"]


@dataclass(frozen=True)
class FrameAnalysis:
    """frame: the measured HxWx3 uint8 BGR frame (camera geometry); seg is None when the
    quality gate rejected the frame (``problem`` says why)."""

    frame: np.ndarray
    metrics: HairMetrics
    seg: SegOutput | None
    centres: np.ndarray  # (N,2) float32 (x, y) px of detected hair centres (empty without a centre head)
    problem: str | None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def overlay(self) -> np.ndarray:
        """HxWx3 uint8 BGR overlay of this analysis on its (resized) frame."""
        m = self.metrics
        frame_bgr = self.frame
        mask = self.seg.mask() if self.seg is not None else np.zeros(frame_bgr.shape[:2], bool)
        strands = [(s.points, s.thickness_px * m.um_per_px) for s in m.strands]
        text = [f"hairs: {m.count}" + (f" (visible strands: {m.visible_count})" if m.visible_count is not None else "")]
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
    line_threshold: float = LINE_THRESHOLD,
    min_strand_px: float = MIN_STRAND_PX,
    problem: str | None = None,
) -> FrameAnalysis:
    """Quality gate, segmentation, hair metrics. frame_bgr: HxWx3 uint8 BGR of any size;
    um_per_px refers to the pixels of this frame. A rejected frame gets count 0 and the reason.
    problem: a reason from an earlier gate (focus, motion: ``device.measure.quality.assess``) that
    rejects the frame without segmenting it.

    Every frame is first brought to the camera geometry (FRAME_HEIGHT x FRAME_WIDTH, see
    ``prepare_frame``) and measured there, with um_per_px scaled by the same factor, so all
    segmenters and the hair metrics see one pixel scale. Use ``FrameAnalysis.frame`` (the
    resized frame) to draw overlays.
    """
    timings: dict[str, float] = {}
    h, w = frame_bgr.shape[:2]
    frame_bgr = prepare_frame(frame_bgr)
    um_per_px *= float(np.sqrt((w / frame_bgr.shape[1]) * (h / frame_bgr.shape[0])))
    t = time.perf_counter()
    problem = problem or frame_problem(frame_bgr)
    timings["quality_ms"] = (time.perf_counter() - t) * 1000
    empty = np.zeros((0, 2), np.float32)
    if problem is not None:
        blank = np.zeros(frame_bgr.shape[:2], np.uint8)
        metrics = measure(blank, um_per_px=um_per_px, thin_um=thin_um)
        metrics = dataclasses.replace(metrics, reason=problem)
        return FrameAnalysis(frame_bgr, metrics, None, empty, problem, timings)
    t = time.perf_counter()
    seg = segmenter.segment(frame_bgr)
    timings["segment_ms"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    mask = seg.mask(mask_threshold)
    centres = None
    if seg.centre is not None:
        centres = centres_on_hair(find_centres(seg.centre, threshold=centre_threshold), mask)
    n_lines = None
    if seg.lines is not None and seg.hairs is None:  # hair instances = strands of the predicted centre lines
        n_lines = len(split_strands((seg.lines >= line_threshold) & mask, min_length_px=min_strand_px))
    metrics = measure(
        mask,
        um_per_px=um_per_px,
        thin_um=thin_um,
        centres=centres,
        line_strands=n_lines,
        end_hairs=seg.hairs,
        visible_hairs=seg.hairs_visible,
    )
    timings["metrics_ms"] = (time.perf_counter() - t) * 1000
    return FrameAnalysis(frame_bgr, metrics, seg, centres if centres is not None else empty, None, timings)


def centres_on_hair(centres: np.ndarray, mask: np.ndarray, radius_px: int = 2) -> np.ndarray:
    """Keep the (N,2) (x, y) centres that lie on the HxW bool hair mask or within
    ``radius_px`` of it: a hair centre off every hair is a false peak."""
    if len(centres) == 0:
        return centres
    near = cv2.dilate(mask.astype(np.uint8), np.ones((2 * radius_px + 1,) * 2, np.uint8)) > 0
    xy = np.rint(centres).astype(int)
    xy[:, 0] = np.clip(xy[:, 0], 0, mask.shape[1] - 1)
    xy[:, 1] = np.clip(xy[:, 1], 0, mask.shape[0] - 1)
    return centres[near[xy[:, 1], xy[:, 0]]]
