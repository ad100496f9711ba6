"""One frame in, segmentation and hair metrics out: the measuring step of the device.

``analyse_frame`` runs a frame through all of it (evaluation, ``scalpedge segment``);
``analyse_segmentation`` measures a segmentation already made (the scanner's frame loop makes it
once, in its live path). The count follows the segmenter's ``CountStrategy`` (``head_count``).
"""

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
    MIN_STRAND_PX,
    THIN_HAIR_UM,
)
from device.contracts.preprocess import prepare_frame
from device.measure.hair_metrics import HairMetrics, HeadCount, find_centres, measure, split_strands
from device.measure.quality import frame_problem
from device.models.segmentation import CountStrategy, Segmenter, SegOutput

__all__ = [
    "FrameAnalysis",
    "analyse_frame",
    "analyse_segmentation",
    "rejected_analysis",
    "head_count",
    "hair_centres",
    "centres_on_hair",
    "scaled_um_per_px",
]


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
    problem: str | None = None,
) -> FrameAnalysis:
    """Quality gate, segmentation, hair metrics. frame_bgr: HxWx3 uint8 BGR of any size;
    um_per_px refers to the pixels of this frame. A rejected frame gets count 0 and the reason.
    problem: a reason from an earlier gate (focus, motion: ``device.measure.quality.assess``) that
    rejects the frame without segmenting it.

    Every frame is first brought to the camera geometry (FRAME_HEIGHT x FRAME_WIDTH, see
    ``prepare_frame``) and measured there, with um_per_px scaled by the same factor, so all
    segmenters and the hair metrics see one pixel scale. Use ``FrameAnalysis.frame`` (the
    resized frame) to draw overlays. (The scanner's frame loop gates and segments each frame
    once in its live path and measures that segmentation with ``analyse_segmentation``.)
    """
    timings: dict[str, float] = {}
    frame = prepare_frame(frame_bgr)
    um_per_px = scaled_um_per_px(um_per_px, frame_bgr.shape, frame.shape)
    t = time.perf_counter()
    problem = problem or frame_problem(frame)
    timings["quality_ms"] = (time.perf_counter() - t) * 1000
    if problem is not None:
        return rejected_analysis(frame, problem, um_per_px, thin_um, timings)
    t = time.perf_counter()
    seg = segmenter.segment(frame)
    timings["segment_ms"] = (time.perf_counter() - t) * 1000
    return analyse_segmentation(frame, seg, um_per_px, thin_um, timings=timings)


def analyse_segmentation(
    frame: np.ndarray,
    seg: SegOutput,
    um_per_px: float,
    thin_um: float = THIN_HAIR_UM,
    *,
    count: HeadCount | None = None,
    timings: dict[str, float] | None = None,
) -> FrameAnalysis:
    """Hair metrics of a segmentation of ``frame`` (HxWx3 uint8 BGR, camera geometry; um_per_px
    refers to its pixels), with the thresholds of ``device.contracts.constants``. The count
    follows ``seg.count_strategy`` (``head_count``); count: that count when already taken on
    this segmentation (the live path's), so it is not taken twice. timings: stage times so far
    (ms), extended with ``metrics_ms``."""
    timings = dict(timings or {})
    t = time.perf_counter()
    mask = seg.mask()
    centres = hair_centres(seg, mask)
    if count is None:
        count = head_count(seg, mask, centres)
    metrics = measure(mask, um_per_px=um_per_px, thin_um=thin_um, count=count)
    timings["metrics_ms"] = (time.perf_counter() - t) * 1000
    return FrameAnalysis(frame, metrics, seg, centres, None, timings)


def rejected_analysis(
    frame: np.ndarray,
    problem: str,
    um_per_px: float,
    thin_um: float = THIN_HAIR_UM,
    timings: dict[str, float] | None = None,
) -> FrameAnalysis:
    """The analysis of a frame the quality gate rejected for ``problem``: not segmented, count 0."""
    metrics = measure(np.zeros(frame.shape[:2], np.uint8), um_per_px=um_per_px, thin_um=thin_um)
    metrics = dataclasses.replace(metrics, reason=problem)
    return FrameAnalysis(frame, metrics, None, np.zeros((0, 2), np.float32), problem, dict(timings or {}))


def head_count(
    seg: SegOutput,
    mask: np.ndarray,
    centres: np.ndarray | None = None,
    centre_threshold: float = CENTRE_THRESHOLD,
    line_threshold: float = LINE_THRESHOLD,
    min_strand_px: float = MIN_STRAND_PX,
) -> HeadCount | None:
    """The hair count ``seg.count_strategy`` reads off the model's instance output: half the
    strand ends (ends), strands of the centre lines inside the HxW bool ``mask`` longer than
    ``min_strand_px`` (centrelines), or the centre heatmap's peaks on the hair (centres; the
    (N,2) ``centres`` when already found). None for a segmenter without an instance output:
    ``measure`` counts the mask's skeleton strands."""
    strategy = seg.count_strategy
    if strategy is CountStrategy.ENDS and seg.hairs is not None:
        visible = None if seg.hairs_visible is None else int(round(seg.hairs_visible))
        return HeadCount(int(round(seg.hairs)), strategy.value, visible)
    if strategy is CountStrategy.CENTRELINES and seg.lines is not None:
        lines = (seg.lines >= line_threshold) & mask
        return HeadCount(len(split_strands(lines, min_length_px=min_strand_px)), strategy.value)
    if strategy is CountStrategy.CENTRES:
        found = hair_centres(seg, mask, centre_threshold) if centres is None else centres
        return HeadCount(len(found), strategy.value)
    return None


def hair_centres(seg: SegOutput, mask: np.ndarray, threshold: float = CENTRE_THRESHOLD) -> np.ndarray:
    """(N,2) float32 (x, y) px peaks of the centre heatmap on the HxW bool hair mask (drawn on
    overlays, and the count of the centres strategy); empty without a centre heatmap."""
    if seg.centre is None:
        return np.zeros((0, 2), np.float32)
    return centres_on_hair(find_centres(seg.centre, threshold=threshold), mask)


def scaled_um_per_px(um_per_px: float, source_shape: tuple[int, ...], frame_shape: tuple[int, ...]) -> float:
    """Micrometres per pixel of a frame of ``frame_shape`` (H, W, ...) resized from one of
    ``source_shape`` whose pixels measure ``um_per_px``: scaled by the geometric mean of the
    two resize factors."""
    (h, w), (fh, fw) = source_shape[:2], frame_shape[:2]
    return um_per_px * float(np.sqrt((w / fw) * (h / fh)))


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
