"""Hair count and shaft thickness from a binary hair mask (numpy, OpenCV, scikit-image).

Shared by the server (evaluation) and the device (per-frame metrics), so it must stay
torch-free and deterministic.

Pipeline of :func:`split_strands` (all coordinates are pixel (x, y), origin top-left):

1. *Clean*: drop mask specks smaller than ``min_object_px`` and fill holes smaller than
   ``max_hole_px`` (holes would turn into skeleton loops).
2. *Skeletonize* (``skimage.morphology.skeletonize``, Zhang; components it breaks or
   erases, e.g. even-width 45-degree staircases, are redone with Lee's method) and classify skeleton pixels by their
   8-neighbour count: 1 = end, 2 = path, >= 3 = junction. Junction pixels that touch form
   one junction *node*.
3. *Branches*: skeleton minus junction pixels splits into simple paths (or isolated loops);
   each is ordered with one ``cv2.findContours`` call over all of them (the outer border of a
   1-pixel-wide path runs end -> end -> back, so half of it is the ordered path).
4. *Bridges*: junction-to-junction branches no longer than the two nodes' radii together
   are contracted into one node. After spur pruning (5), longer bridges (up to 6 x the
   radii + 4 px) are contracted too when the branches on either side continue straight
   through each other: two lines crossing at a shallow angle share a stretch of about
   width / sin(angle / 2) px, which the skeleton renders as two nodes and a bridge.
5. *Spurs*: branches from a free end to a node of degree >= 3 shorter than
   ``spur_length_px`` + node radius are removed, repeatedly (bumps and stubs on a shaft).
6. *Pairing*: at every node, incident branches are paired greedily by direction continuity
   (directions measured over ``direction_px`` pixels just outside the node): the pair
   closest to straight-through is merged first, as long as it deviates from 180 degrees by
   at most ``pair_tolerance_deg``. So an X is two strands, and a Y (one strand with a second
   one touching it) is two.
7. *Chains*: paired branches are joined into strands; strands turning by more than
   ``corner_deg`` over ``direction_px`` pixels are cut there (two hairs meeting in a V).
8. Strands shorter than ``min_length_px`` are dropped.

Thickness of a strand: a local diameter map sampled at the strand's skeleton pixels,
outliers beyond 1.5 IQR dropped (crossings inflate it, strand ends deflate it), median,
minus :data:`THICKNESS_OFFSET_PX`. The map is the Euclidean distance transform of the mask
upsampled 2x (nearest), max over each pixel's 2x2 block, which in 2x units *is* a diameter
in original pixels. A plain 1x ``2 * dt`` is off by +1 px for odd and 0 px for even widths
(it measures to the centre of the nearest background pixel); at 2x every width is even and
that bias vanishes. Calibration on strands rendered with exact diameters d = 2..12 px
(pixels whose centre lies within d/2 of the centre line; 12 angles x 4 sub-pixel offsets):
mean error -0.06 px, median 0.0 px, all errors within [-0.61, +1.0] px (+1.0 only where the
rendering itself is d + 1 px wide), so the offset is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from device.contracts.constants import CENTRE_THRESHOLD, DEFAULT_UM_PER_PX, THIN_HAIR_UM
from device.measure.located_hairs import HAIR_CLASSES, hair_diameters, located_class
from device.measure.skeleton_graph import (
    _build_graph,
    _chains,
    _contract_bridges,
    _contract_crossings,
    _cut_corners,
    _pair_ends,
    _prune_spurs,
)
from device.measure.strand_measures import (
    THICKNESS_OFFSET_PX,
    _lengths,
    _thicknesses,
    skeleton_diameters,
)

__all__ = [
    "THICKNESS_OFFSET_PX",
    "Strand",
    "HairMetrics",
    "HeadCount",
    "split_strands",
    "find_centres",
    "measure",
]


@dataclass(frozen=True)
class Strand:
    """One hair strand.

    points: (K, 2) int32 (x, y) skeleton pixels in order along the strand; consecutive
        points are 8-neighbours except where the strand passes through a junction.
    length_px: arc length along ``points``, pixels.
    thickness_px: shaft diameter, pixels (see the module docstring).
    """

    points: np.ndarray
    length_px: float
    thickness_px: float

    def summary(self, um_per_px: float) -> dict[str, Any]:
        """JSON-ready summary: endpoints (px), length and thickness in px and micrometres."""
        start = self.points[0]
        end = self.points[-1]
        return {
            "start_xy_px": [int(start[0]), int(start[1])],
            "end_xy_px": [int(end[0]), int(end[1])],
            "length_px": round(float(self.length_px), 2),
            "length_um": round(float(self.length_px * um_per_px), 2),
            "thickness_px": round(float(self.thickness_px), 2),
            "thickness_um": round(float(self.thickness_px * um_per_px), 2),
        }


@dataclass(frozen=True)
class HeadCount:
    """A frame's hair count and where it came from.

    value: hairs (>= 0). With strand ends it is a counting frame: a hair the frame's edge cuts
        counts a half on average.
    source: "ends", "centrelines", "centres" or "skeleton" (``CountStrategy`` values).
    visible: with strand ends, every visible strand including those the edge cuts (each as one
        hair); None for other sources.
    thin_ratio: with a hair density, the thin-hair density's share of it (learnt from labelled
        miniaturised hairs), in [0, 1]; None for other sources.
    """

    value: int
    source: str
    visible: int | None = None
    thin_ratio: float | None = None

    def __post_init__(self) -> None:
        if self.source not in _NONE_FOUND:
            raise ValueError(f"unknown count source {self.source!r}")
        if self.value < 0:
            raise ValueError(f"a hair count is >= 0, got {self.value}")


# Why a count is zero, by count source.
_NONE_FOUND = {
    "density": "no hairs found",
    "ends": "no hair ends found",
    "centrelines": "no hair centre lines found",
    "centres": "no hair centres found",
    "skeleton": "no strand long enough",
}


@dataclass(frozen=True)
class HairMetrics:
    """Hair metrics of one frame.

    count: number of hairs (see ``count_source`` and ``HeadCount``).
    strands: the skeleton strands (drawn on overlays; thickness comes from them only when the
        model locates no hairs).
    thickness_um: shaft diameter, micrometres: one per located hair (``hairs``) when the model
        locates hairs, else one per strand (same order as ``strands``).
    mean_thickness_um, median_thickness_um: over those; None without any.
    thin_ratio: share of thin hairs: the count's thin share when it has one
        (``HeadCount.thin_ratio``), else the share of located hairs that are not terminal
        (``hair_class``), else the share of strands thinner than ``thin_um``; None without any.
    density_per_cm2: ``count / area_cm2``.
    area_cm2: imaged scalp area (frame size x ``um_per_px``^2).
    hair_fraction: share of mask pixels that are hair, in [0, 1].
    um_per_px: optical calibration used, micrometres per pixel.
    count_source: "ends", "centres", "centrelines" or "skeleton" (``HeadCount.source``).
    reason: why metrics are missing or doubtful (e.g. "no hair detected"), else None.
    thin_um: thin-hair threshold used, micrometres.
    visible_count: with strand ends, every visible strand including those the edge cuts (each
        as one hair); None for other count sources.
    hairs: located hairs, each ((x, y) px, diameter um or None where the mask misses it, class:
        ``hair_class``); empty when the model locates none.
    """

    count: int
    strands: tuple[Strand, ...]
    thickness_um: tuple[float, ...]
    mean_thickness_um: float | None
    median_thickness_um: float | None
    thin_ratio: float | None
    density_per_cm2: float | None
    area_cm2: float
    hair_fraction: float
    um_per_px: float
    count_source: str
    reason: str | None
    thin_um: float = THIN_HAIR_UM
    visible_count: int | None = None
    hairs: tuple[tuple[tuple[float, float], float | None, str | None], ...] = ()

    @property
    def thickness_source(self) -> str:
        """ "hairs" (one diameter per located hair) or "strands" (one per skeleton strand)."""
        return "hairs" if self.hairs else "strands"

    def class_counts(self) -> dict[str, int]:
        """Located hairs per class (``hair_class``; hairs without a diameter are left out)."""
        out = {name: 0 for name in HAIR_CLASSES}
        for _, _, klass in self.hairs:
            if klass is not None:
                out[klass] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; units in the keys; strands summarised (no point lists)."""

        def _r(v: float | None, nd: int = 3) -> float | None:
            return None if v is None else round(float(v), nd)

        return {
            "count": int(self.count),
            "count_source": self.count_source,
            "visible_count": self.visible_count,
            "mean_thickness_um": _r(self.mean_thickness_um, 2),
            "median_thickness_um": _r(self.median_thickness_um, 2),
            "thin_ratio": _r(self.thin_ratio, 4),
            "thin_um": float(self.thin_um),
            "density_per_cm2": _r(self.density_per_cm2, 1),
            "area_cm2": round(float(self.area_cm2), 6),
            "hair_fraction": round(float(self.hair_fraction), 5),
            "um_per_px": float(self.um_per_px),
            "thickness_source": self.thickness_source,
            "hair_classes": self.class_counts() if self.hairs else None,
            "hairs": [
                {"xy_px": [round(x, 1), round(y, 1)], "diameter_um": _r(d, 1), "class": k}
                for (x, y), d, k in self.hairs
            ],
            "strand_count": len(self.strands),
            "strands": [s.summary(self.um_per_px) for s in self.strands],
            "reason": self.reason,
        }


# --------------------------------------------------------------------------- cleaning


def split_strands(
    mask: np.ndarray,
    min_length_px: float = 10,
    spur_length_px: float = 8,
    *,
    pair_tolerance_deg: float = 40.0,
    corner_deg: float = 60.0,
    direction_px: int = 8,
    min_object_px: int = 5,
    max_hole_px: int = 10,
    skeleton: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[Strand]:
    """Split a hair mask into individual strands (see the module docstring).

    mask: HxW bool (or any dtype, nonzero = hair).
    min_length_px: strands shorter than this (arc length, px) are dropped.
    spur_length_px: free-end side branches shorter than this (px, plus the junction's
        radius) are pruned as spurs.
    pair_tolerance_deg: at a junction two branches continue each other when their
        directions are within this many degrees of straight-through.
    corner_deg: a strand turning by more than this over ``direction_px`` px is cut there.
    direction_px: span over which directions are measured, px.
    min_object_px, max_hole_px: see ``strand_measures.clean_mask``.
    skeleton: ``skeleton_diameters`` of this mask when already made (``measure`` shares it).
    Returns strands ordered by their first point (row, then column).
    """
    m, sk, diam = skeleton if skeleton is not None else skeleton_diameters(mask, min_object_px, max_hole_px)
    if not m.any():
        return []
    g = _build_graph(sk, diam)
    if len(g.start) == 0:
        return []
    _contract_bridges(g, min_bridge_px=3.0)
    _prune_spurs(g, spur_length_px)
    _contract_crossings(g, direction_px, pair_tolerance_deg)
    partner = _pair_ends(g, direction_px, pair_tolerance_deg)
    chains = _chains(g, partner)
    if not chains:
        return []
    pieces, closed = _cut_corners(chains, direction_px, corner_deg)
    lengths = _lengths(pieces, closed)
    keep = np.flatnonzero(lengths >= min_length_px).tolist()
    if not keep:
        return []
    kept = [pieces[i] for i in keep]
    thick = _thicknesses(diam, kept)
    strands = [
        Strand(points=p.astype(np.int32), length_px=float(lengths[i]), thickness_px=float(t))
        for i, p, t in zip(keep, kept, thick.tolist(), strict=True)
    ]
    strands.sort(key=lambda s: (int(s.points[0, 1]), int(s.points[0, 0]), -s.length_px))
    return strands


# --------------------------------------------------------------------------- centres


def find_centres(centre_prob: np.ndarray, threshold: float = CENTRE_THRESHOLD, min_distance_px: int = 4) -> np.ndarray:
    """Local maxima of a per-hair centre heatmap.

    centre_prob: HxW float in [0, 1], one Gaussian-like peak per hair.
    threshold: peaks below this are ignored.
    min_distance_px: non-maximum suppression radius (Chebyshev window, then Euclidean
        suppression of weaker peaks closer than this), pixels.
    Returns (N, 2) float32 (x, y) peak positions, strongest first; flat-topped peaks are
    reported at their plateau centroid.
    """
    p = np.asarray(centre_prob, dtype=np.float32)
    if p.ndim != 2:
        raise ValueError(f"centre_prob must be HxW, got shape {p.shape}")
    r = max(int(min_distance_px), 1)
    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    local_max = cv2.dilate(p, kernel, borderType=cv2.BORDER_REPLICATE)
    peaks = (p >= local_max) & (p >= threshold)
    if not peaks.any():
        return np.zeros((0, 2), np.float32)
    n, lab, _, cent = cv2.connectedComponentsWithStats(peaks.astype(np.uint8), connectivity=8)
    ys, xs = np.nonzero(peaks)
    val = np.zeros(n, np.float64)
    np.maximum.at(val, lab[ys, xs].astype(np.intp), p[ys, xs])
    order = np.argsort(-val[1:], kind="stable") + 1
    pts = cent[order].astype(np.float64)
    keep: list[int] = []
    for i in range(len(pts)):
        if keep:
            d = np.hypot(*(pts[keep] - pts[i]).T)
            if (d < min_distance_px).any():
                continue
        keep.append(i)
    return pts[keep].astype(np.float32)


# --------------------------------------------------------------------------- metrics


def _thin_ratio(
    count: HeadCount, hairs: tuple[Any, ...], diameters_um: np.ndarray, thin_um: float, scale: float = 1.0
) -> float | None:
    """The model's thin share when it gives one; else, with located hairs, ``scale`` x the share
    of them that are not terminal (``hair_class``); else the share of strands thinner than ``thin_um``."""
    if count.thin_ratio is not None:
        return count.thin_ratio
    classes = [k for _, _, k in hairs if k is not None]
    if classes:
        return scale * sum(k != HAIR_CLASSES[2] for k in classes) / len(classes)
    return float((diameters_um < thin_um).mean()) if len(diameters_um) else None


def measure(
    mask: np.ndarray,
    um_per_px: float = DEFAULT_UM_PER_PX,
    thin_um: float = THIN_HAIR_UM,
    *,
    count: HeadCount | None = None,
    hair_points: np.ndarray | None = None,
    miniaturised: np.ndarray | None = None,
    thin_share_scale: float = 1.0,
    min_length_px: float = 10,
    spur_length_px: float = 8,
    skeleton: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> HairMetrics:
    """Hair metrics of one frame's mask.

    mask: HxW bool hair mask (nonzero = hair).
    um_per_px: optical calibration, micrometres per pixel (> 0).
    thin_um: strands with a shaft diameter below this (micrometres) count as thin.
    count: the count a model's instance output gave (its segmenter's count strategy, see
        ``device.app.analysis.head_count``); None counts the mask's skeleton strands.
    hair_points: (N, 2) (x, y) px of the hairs the model located (peaks of its hair density):
        thickness is then measured once per hair (``hair_diameters``), not per skeleton branch
        (a thick shaft that the skeleton splits into several thin branches stays one hair).
        None: thickness per skeleton strand.
    miniaturised: (N,) bool, per located hair, the per-hair class model's decision
        (``device.models.hair_classes``); None classes the hairs by diameter (``located_class``).
    thin_share_scale: in (0, 1], the per-hair class model's share scale: the thin ratio is it
        times the share of located hairs that are not terminal (the model's MAE-optimal
        estimate of the frame's share; the hairs keep their classes).
    skeleton: ``skeleton_diameters(mask)`` when already made (ignored for an empty mask).
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"mask must be a non-empty HxW array, got shape {m.shape}")
    if not um_per_px > 0:
        raise ValueError(f"um_per_px must be > 0, got {um_per_px}")
    if not 0.0 < thin_share_scale <= 1.0:
        raise ValueError(f"thin_share_scale must lie in (0, 1], got {thin_share_scale}")
    h, w = m.shape
    area_cm2 = h * w * (um_per_px * 1e-4) ** 2
    hair_fraction = float(np.count_nonzero(m)) / m.size
    if not hair_fraction:
        skeleton = None
    elif skeleton is None:
        skeleton = skeleton_diameters(m)  # strands and hairs share it
    strands = tuple(split_strands(m, min_length_px, spur_length_px, skeleton=skeleton)) if skeleton else ()
    hairs: tuple[tuple[tuple[float, float], float | None, str | None], ...] = ()
    if hair_points is not None and len(hair_points):
        diam_um = hair_diameters(m > 0, hair_points, skeleton=skeleton) * um_per_px
        diams = [None if np.isnan(d) else float(d) for d in diam_um]
        if miniaturised is not None and len(miniaturised) != len(diams):
            raise ValueError(f"{len(miniaturised)} miniaturised flags for {len(diams)} located hairs")
        flags = [None] * len(diams) if miniaturised is None else [bool(v) for v in miniaturised]
        hairs = tuple(
            ((float(x), float(y)), d, located_class(d, f))
            for (x, y), d, f in zip(np.asarray(hair_points, float), diams, flags, strict=True)
        )
        thick = tuple(d for _, d, _ in hairs if d is not None)
    else:
        thick = tuple(float(s.thickness_px * um_per_px) for s in strands)
    if count is None:
        count = HeadCount(len(strands), "skeleton")
    reason: str | None = None
    if hair_fraction == 0:
        reason = "no hair detected"
    elif count.value == 0:
        reason = _NONE_FOUND[count.source]
    elif hair_fraction > 0.9:
        reason = "mask is almost all hair; segmentation likely failed"
    arr = np.asarray(thick)
    return HairMetrics(
        count=count.value,
        strands=strands,
        thickness_um=thick,
        mean_thickness_um=float(arr.mean()) if len(arr) else None,
        median_thickness_um=float(np.median(arr)) if len(arr) else None,
        thin_ratio=_thin_ratio(count, hairs, arr, thin_um, thin_share_scale if miniaturised is not None else 1.0),
        density_per_cm2=count.value / area_cm2,
        area_cm2=area_cm2,
        hair_fraction=hair_fraction,
        um_per_px=float(um_per_px),
        count_source=count.source,
        reason=reason,
        thin_um=float(thin_um),
        visible_count=count.visible,
        hairs=hairs,
    )
