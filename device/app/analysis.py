"""One frame in, segmentation and hair metrics out: the measuring step of the device.

``analyse_frame`` runs a frame through all of it (evaluation, ``scalpedge segment``);
``analyse_segmentation`` measures a segmentation already made (the scanner's frame loop makes it
once, in its live path). The count follows the segmenter's ``CountStrategy`` (``head_count``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from device.app.overlay import draw_overlay
from device.contracts.constants import (
    CENTRE_THRESHOLD,
    DEFAULT_UM_PER_PX,
    DENSITY_SIGMA_PX,
    LINE_THRESHOLD,
    MIN_STRAND_PX,
    MODEL_UM_PER_PX,
    SCALE_TOLERANCE,
    THIN_HAIR_UM,
)
from device.contracts.preprocess import prepare_frame, source_px_per_frame_px
from device.measure.hair_metrics import HairMetrics, HeadCount, find_centres, measure, split_strands
from device.measure.quality import frame_problem
from device.measure.strand_measures import skeleton_diameters
from device.models.hair_classes import HairClassifier
from device.models.segmentation import CountStrategy, Segmenter, SegOutput

__all__ = [
    "FrameAnalysis",
    "LocatedHairs",
    "analyse_frame",
    "locate_hairs",
    "hair_points",
    "mask_independent",
    "analyse_segmentation",
    "rejected_analysis",
    "head_count",
    "hair_centres",
    "centres_on_hair",
    "scaled_um_per_px",
    "scale_problem",
    "model_pixel_scale",
    "segment_at_scale",
    "DENSITY_PEAK_SHARE",
]

# A frame with finer pixels than the models learnt is shrunk and padded (``segment_at_scale``):
# the density within this many px of the padding is dropped (see there). Chosen on 60
# training-subject frames zoomed 1.25x and 1.5x (hairs per cm2 vs the unzoomed frames: +15 % with
# 8 px, +9 % with 12, +6 / +4 % with 16): `benchmarks/count_scale.py --split train`.
PADDED_EDGE_PX = 16

# A hair is located where the hair density, smoothed (Gaussian, DENSITY_PEAK_SMOOTH_PX), peaks at
# >= DENSITY_PEAK_SHARE of a lone hair's smoothed peak, at least DENSITY_PEAK_SPACING_PX from a
# stronger peak. The learnt density is broader than its targets (the loss forgives a few px):
# on 40 held-out frames these values give as many peaks as the density's sum (11.5 vs 11.1 a
# frame), correlating 0.77 with the boxes.
DENSITY_PEAK_SHARE = 0.1
DENSITY_PEAK_SMOOTH_PX = 3.0
DENSITY_PEAK_SPACING_PX = 8


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
        """(H + bar) x W x 3 uint8 BGR: this analysis drawn on its frame (camera geometry: the
        input centre-cropped to 4:3, never stretched) above a label bar with the one hair count,
        thickness figures, the rejection reason if any, and a colour legend (``draw_overlay``).
        Other counts (visible strands) are in the metrics only."""
        m = self.metrics
        frame_bgr = self.frame
        mask = self.seg.mask() if self.seg is not None else np.zeros(frame_bgr.shape[:2], bool)
        strands = [(s.points, s.thickness_px * m.um_per_px) for s in m.strands]
        text = f"hairs {m.count}"
        if m.median_thickness_um is not None:
            text += f"   median thickness {m.median_thickness_um:.0f} um"
        if m.thin_ratio is not None:
            text += f"   thin {100 * m.thin_ratio:.0f}%"
        notes = [self.problem] if self.problem else []
        centres = self.centres if len(self.centres) else None
        return draw_overlay(frame_bgr, mask, strands, centres, [text], notes)


def analyse_frame(
    segmenter: Segmenter,
    frame_bgr: np.ndarray,
    um_per_px: float = DEFAULT_UM_PER_PX,
    thin_um: float = THIN_HAIR_UM,
    problem: str | None = None,
    hair_classes: HairClassifier | None = None,
) -> FrameAnalysis:
    """Quality gate, segmentation, hair metrics. frame_bgr: HxWx3 uint8 BGR of any size;
    um_per_px refers to the pixels of this frame. A rejected frame gets count 0 and the reason.
    problem: a reason from an earlier gate (focus, motion: ``device.measure.quality.assess``) that
    rejects the frame without segmenting it. hair_classes: the per-hair class model (see
    ``analyse_segmentation``).

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
    problem = problem or scale_problem(um_per_px) or frame_problem(frame)
    timings["quality_ms"] = (time.perf_counter() - t) * 1000
    if problem is not None:
        return rejected_analysis(frame, problem, um_per_px, thin_um, timings)
    t = time.perf_counter()
    seg = segment_at_scale(segmenter, frame, um_per_px)
    timings["segment_ms"] = (time.perf_counter() - t) * 1000
    return analyse_segmentation(frame, seg, um_per_px, thin_um, timings=timings, hair_classes=hair_classes)


def analyse_segmentation(
    frame: np.ndarray,
    seg: SegOutput,
    um_per_px: float,
    thin_um: float = THIN_HAIR_UM,
    *,
    count: HeadCount | None = None,
    timings: dict[str, float] | None = None,
    hair_classes: HairClassifier | None = None,
    located: LocatedHairs | Callable[[], LocatedHairs] | None = None,
) -> FrameAnalysis:
    """Hair metrics of a segmentation of ``frame`` (HxWx3 uint8 BGR, camera geometry; um_per_px
    refers to its pixels), with the thresholds of ``device.contracts.constants``. The count
    follows ``seg.count_strategy`` (``head_count``); count: that count when already taken on
    this segmentation (the live path's), so it is not taken twice. timings: stage times so far
    (ms), extended with ``metrics_ms``. hair_classes: the per-hair class model; with it, each
    located hair is terminal or miniaturised as the model decides and the thin share is scaled
    by the model's ``thin_share_scale`` (its time is part of ``metrics_ms``), without it by its
    measured diameter. located: ``locate_hairs`` of this segmentation made elsewhere (maybe
    beside other work: its time is the caller's to report), or a callable that returns it, asked
    only once the mask's skeleton is made; None: it is done here, inside ``metrics_ms``."""
    timings = dict(timings or {})
    t = time.perf_counter()
    mask = seg.mask()
    skeleton = skeleton_diameters(mask) if mask.any() else None
    if located is None:
        located = locate_hairs(frame, seg, um_per_px, hair_classes, mask)
    elif callable(located):
        waited = time.perf_counter()
        located = located()
        t += time.perf_counter() - waited  # its time (or the wait for it) is the caller's to report
    if count is None:
        count = head_count(seg, mask, located.centres)
    metrics = measure(
        mask,
        um_per_px=um_per_px,
        thin_um=thin_um,
        count=count,
        hair_points=located.points,
        miniaturised=located.miniaturised,
        thin_share_scale=located.thin_share_scale,
        skeleton=skeleton,
    )
    timings["metrics_ms"] = (time.perf_counter() - t) * 1000
    return FrameAnalysis(frame, metrics, seg, located.centres, None, timings)


@dataclass(frozen=True)
class LocatedHairs:
    """Where a segmentation puts its hairs, and their classes.

    centres: (N,2) float32 (x, y) px (``hair_centres``); points: the same when they are the
    hairs measured one by one (a density output), else None; miniaturised: (N,) bool per point,
    the per-hair class model's call, or None; thin_share_scale: its share scale (1 without it);
    ms: wall time spent here."""

    centres: np.ndarray
    points: np.ndarray | None
    miniaturised: np.ndarray | None
    thin_share_scale: float
    ms: float

    @classmethod
    def of(
        cls,
        centres: np.ndarray,
        points: np.ndarray | None,
        probabilities: np.ndarray | None,
        hair_classes: HairClassifier | None,
        ms: float,
    ) -> LocatedHairs:
        """With the per-hair class model's (N,) P(miniaturised) of ``points`` (or None), decided
        at its card's threshold and share scale."""
        if hair_classes is None or probabilities is None:
            return cls(centres, points, None, 1.0, ms)
        miniaturised = np.asarray(probabilities) >= hair_classes.thin_probability
        return cls(centres, points, miniaturised, hair_classes.thin_share_scale, ms)


def locate_hairs(
    frame: np.ndarray,
    seg: SegOutput,
    um_per_px: float,
    hair_classes: HairClassifier | None = None,
    mask: np.ndarray | None = None,
) -> LocatedHairs:
    """The hairs ``seg`` locates on ``frame`` (HxWx3 uint8 BGR, pixels of ``um_per_px``) and,
    with ``hair_classes``, whether each is miniaturised. mask: the HxW bool hair mask the
    centres are kept on (default ``seg.mask()``); with a density output it is not used
    (``mask_independent``), so this may run before the mask is final (before fusion)."""
    t = time.perf_counter()
    centres, points = hair_points(seg, um_per_px, mask)
    probabilities = None
    if hair_classes is not None and points is not None:
        probabilities = hair_classes.probabilities(frame, points, um_per_px)
    return LocatedHairs.of(centres, points, probabilities, hair_classes, (time.perf_counter() - t) * 1000)


def hair_points(
    seg: SegOutput, um_per_px: float, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(centres, points) of ``LocatedHairs``: the (N,2) float32 (x, y) px ``hair_centres``, and
    the same as the hairs measured one by one when ``seg`` counts by its density (else None)."""
    centres = hair_centres(seg, mask, pixel_scale=model_pixel_scale(um_per_px))
    return centres, centres if seg.count_strategy is CountStrategy.DENSITY else None


def mask_independent(seg: SegOutput) -> bool:
    """Whether ``locate_hairs`` and ``head_count`` of ``seg`` read nothing of its hair mask (a
    hair-density output), so that they hold for any later mask of the same frame (fused)."""
    return seg.count_strategy is CountStrategy.DENSITY and seg.density is not None


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
    if strategy is CountStrategy.DENSITY and seg.hairs is not None:
        # The thin share is measured per located hair (``measure``): the model's thin density
        # did not beat predicting the mean on held-out subjects, the hairs' diameters did.
        return HeadCount(int(round(seg.hairs)), strategy.value)
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


def model_pixel_scale(um_per_px: float, tolerance: float = 0.05) -> float:
    """f = um_per_px / MODEL_UM_PER_PX: how much larger the frame's pixels are than those the
    models learnt (1.0 within ``tolerance``, where ``segment_at_scale`` does not resample)."""
    f = um_per_px / MODEL_UM_PER_PX
    return 1.0 if abs(f - 1.0) <= tolerance else f


def hair_centres(
    seg: SegOutput, mask: np.ndarray | None, threshold: float = CENTRE_THRESHOLD, pixel_scale: float = 1.0
) -> np.ndarray:
    """(N,2) float32 (x, y) px of located hairs: peaks of the smoothed hair density (see
    DENSITY_PEAK_SHARE), else peaks of the centre heatmap on the HxW bool hair mask
    (``seg.mask()`` when None; the count of the centres strategy); empty without either
    output. Drawn on overlays. pixel_scale: ``model_pixel_scale`` of the frame
    (a hair of a frame segmented at another scale is a Gaussian of std sigma / pixel_scale)."""
    if seg.density is not None:
        # one lone hair, smoothed like the map: a Gaussian of std sqrt(sigma^2 + s^2) px
        sigma, smooth = DENSITY_SIGMA_PX / pixel_scale, DENSITY_PEAK_SMOOTH_PX / pixel_scale
        lone_peak = 1.0 / (2 * np.pi * (sigma**2 + smooth**2))
        smoothed = cv2.GaussianBlur(seg.density, (0, 0), smooth)
        spacing = max(2, int(round(DENSITY_PEAK_SPACING_PX / pixel_scale)))
        return find_centres(smoothed / lone_peak, threshold=DENSITY_PEAK_SHARE, min_distance_px=spacing)
    if seg.centre is None:
        return np.zeros((0, 2), np.float32)
    return centres_on_hair(find_centres(seg.centre, threshold=threshold), seg.mask() if mask is None else mask)


def scale_problem(um_per_px: float) -> str | None:
    """Why a frame whose pixels measure ``um_per_px`` (at the camera geometry) cannot be
    counted, or None: the models learnt MODEL_UM_PER_PX, and a frame is resampled to it only
    within SCALE_TOLERANCE x either way (further out, hairs would be a few pixels wide, or the
    field a small part of the frame)."""
    ratio = um_per_px / MODEL_UM_PER_PX
    if 1 / SCALE_TOLERANCE <= ratio <= SCALE_TOLERANCE:
        return None
    low, high = MODEL_UM_PER_PX / SCALE_TOLERANCE, MODEL_UM_PER_PX * SCALE_TOLERANCE
    return (
        f"pixel scale {um_per_px:.2f} um/px is outside what the models measure ({low:.1f}-{high:.1f} um/px "
        "at 640x480): check the magnification or run `scalpedge calibrate optics`"
    )


def segment_at_scale(segmenter: Segmenter, frame: np.ndarray, um_per_px: float, tolerance: float = 0.05) -> SegOutput:
    """Segment ``frame`` (HxWx3 uint8 BGR, camera geometry, pixels of ``um_per_px``) at the
    scale the models learnt (MODEL_UM_PER_PX), and return the result on ``frame``'s pixels.

    Within ``tolerance`` of that scale the frame is segmented as it is. A frame with coarser
    pixels (hairs smaller: a wider field) is enlarged by f = um_per_px / MODEL_UM_PER_PX and its
    centre (H x W) segmented: the maps outside that centre are 0, and the hair counts are scaled
    by f^2 to the whole field (a counting frame: the count per area holds). A frame with finer
    pixels is shrunk by f and padded with its mean colour to H x W. Either way the hair count
    follows the physical field, not the pixels (``scale_problem`` refuses what is too far)."""
    f = model_pixel_scale(um_per_px, tolerance)
    if f == 1.0:
        return segmenter.segment(frame)
    h, w = frame.shape[:2]
    sw, sh = max(1, round(w * f)), max(1, round(h * f))
    scaled = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    if f > 1:  # the centre of the enlarged frame
        x0, y0 = (sw - w) // 2, (sh - h) // 2
        seg = segmenter.segment(np.ascontiguousarray(scaled[y0 : y0 + h, x0 : x0 + w]))
        # the segmented centre, at the frame's pixels: (x0 / f, y0 / f) to ((x0 + w) / f, ...)
        box = (x0 / f, y0 / f, w / f, h / f)
        return _placed(seg, box, (h, w), hairs_factor=(sw * sh) / (w * h))
    canvas = np.empty_like(frame)
    canvas[:] = frame.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    x0, y0 = (w - sw) // 2, (h - sh) // 2
    canvas[y0 : y0 + sh, x0 : x0 + sw] = scaled
    seg = segmenter.segment(canvas)
    if seg.density is not None and PADDED_EDGE_PX > 0:
        # The models learnt the labels' rule at a frame's edge (a hair the edge cuts is mostly
        # not counted); the edge of the padding looks like no frame's edge, so drop the density
        # within PADDED_EDGE_PX of it and count the frame as the labels would.
        b = PADDED_EDGE_PX
        keep = np.zeros(seg.density.shape, bool)
        keep[y0 + b : y0 + sh - b, x0 + b : x0 + sw - b] = True
        density = np.where(keep, seg.density, 0.0).astype(np.float32)
        inside = float(seg.density[keep].sum(dtype=np.float64))
        scale = inside / max(float(seg.density.sum(dtype=np.float64)), 1e-9)
        seg = dataclasses.replace(
            seg,
            density=density,
            hairs=None if seg.hairs is None else seg.hairs * scale,
            thin_hairs=None if seg.thin_hairs is None else seg.thin_hairs * scale,
        )
    return _crop_output(seg, (x0, y0, sw, sh), (h, w))


def _maps(seg: SegOutput, remap: Callable[[np.ndarray], np.ndarray]) -> dict[str, np.ndarray | None]:
    """``remap`` applied to each of ``seg``'s HxW maps that is present."""
    return {
        "prob": remap(seg.prob),
        "centre": None if seg.centre is None else remap(seg.centre),
        "lines": None if seg.lines is None else remap(seg.lines),
        "density": None if seg.density is None else remap(seg.density),
    }


def _crop_output(seg: SegOutput, box: tuple[int, int, int, int], size: tuple[int, int]) -> SegOutput:
    """The part ``box`` (x0, y0, w, h) of ``seg``'s maps, resized to ``size`` (H, W); the density
    rescaled so it still sums to the hairs in that part."""
    x0, y0, bw, bh = box

    def cut(m: np.ndarray) -> np.ndarray:
        part = np.ascontiguousarray(m[y0 : y0 + bh, x0 : x0 + bw])
        return cv2.resize(part, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    maps = _maps(seg, cut)
    if (density := maps["density"]) is not None:
        density *= (bw * bh) / (size[0] * size[1])
    return dataclasses.replace(seg, **maps)  # type: ignore[arg-type]


def _placed(
    seg: SegOutput, box: tuple[float, float, float, float], size: tuple[int, int], hairs_factor: float
) -> SegOutput:
    """``seg`` (of a frame's enlarged centre) placed on the frame's pixels (``size``, H x W) at
    ``box`` (x0, y0, w, h, frame px): 0 outside; hair counts scaled by ``hairs_factor``."""
    h, w = size
    x0, y0, bw, bh = box
    affine = np.array([[bw / w, 0, x0], [0, bh / h, y0]], np.float32)

    def place(m: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.warpAffine(m, affine, (w, h), flags=cv2.INTER_LINEAR, borderValue=0))

    maps = _maps(seg, place)
    if (density := maps["density"]) is not None:
        density /= (bw / w) * (bh / h)  # the same hairs on fewer pixels

    def scaled(v: float | None) -> float | None:
        return None if v is None else v * hairs_factor

    return dataclasses.replace(
        seg,
        **maps,  # type: ignore[arg-type]
        hairs=scaled(seg.hairs),
        hairs_visible=scaled(seg.hairs_visible),
        thin_hairs=scaled(seg.thin_hairs),
    )


def scaled_um_per_px(um_per_px: float, source_shape: tuple[int, ...], frame_shape: tuple[int, ...]) -> float:
    """Micrometres per pixel of the frame (``frame_shape``, H, W, ...) that ``prepare_frame`` made
    of an image of ``source_shape`` whose pixels measure ``um_per_px``."""
    return um_per_px * source_px_per_frame_px(source_shape, frame_shape[0])


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
