"""Skeletonisation and per-strand measurements behind ``device.measure.hair_metrics``: the skeleton
(with Lee's method where Zhang's breaks a component), the local diameter map, strand lengths
and IQR-filtered thicknesses, and the cleaned mask with its skeleton and diameter map
(``skeleton_diameters``) that strands and located hairs are both measured on.

``_``-prefixed helpers are private to ``device.measure``."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import skeletonize

__all__ = ["THICKNESS_OFFSET_PX", "clean_mask", "skeleton_diameters"]

#: Subtracted from the median local diameter to get the shaft diameter, px (calibrated: 0).
THICKNESS_OFFSET_PX: float = 0.0


def _diameter_map(mask: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Local shaft-diameter estimate, px, at the pixels ``where`` (HxW bool; 0 elsewhere).

    Euclidean distance transform of ``mask`` upsampled 2x (nearest), max over each pixel's
    2x2 block; in 2x units that distance is a diameter in original pixels. Working at 2x
    removes the +-0.5 px bias that odd vs even widths give a 1x distance transform.
    Returns HxW float32.
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    dt = cv2.distanceTransform(up, cv2.DIST_L2, cv2.DIST_MASK_5)
    ys, xs = np.nonzero(where)
    y2, x2 = 2 * ys, 2 * xs
    out = np.zeros(mask.shape, np.float32)
    out[ys, xs] = np.maximum(np.maximum(dt[y2, x2], dt[y2, x2 + 1]), np.maximum(dt[y2 + 1, x2], dt[y2 + 1, x2 + 1]))
    return out


# --------------------------------------------------------------------------- graph


def _lengths(pieces: list[np.ndarray], closed: list[bool], stride: int = 4) -> np.ndarray:
    """Arc length of each piece, (S,) float px.

    Sum of Euclidean distances between every ``stride``-th point (and the last; loops are
    closed): unit steps along a digital line overestimate its length by up to 8%
    (staircase), chords over a few pixels do not.
    """
    lens = np.array([len(p) for p in pieces], np.intp)
    q = np.concatenate(pieces).astype(np.float64)
    pid = np.repeat(np.arange(len(lens)), lens)
    local = np.arange(len(q)) - np.repeat(np.cumsum(lens) - lens, lens)
    sel = np.flatnonzero((local % stride == 0) | (local == lens[pid] - 1))
    qs, ps = q[sel], pid[sel]
    d = np.diff(qs, axis=0)
    step = np.hypot(d[:, 0], d[:, 1]) * (ps[1:] == ps[:-1])
    out = np.bincount(ps[1:], weights=step, minlength=len(lens)).astype(np.float64)
    cl = np.flatnonzero(np.asarray(closed))
    if len(cl):
        ends = np.cumsum(lens) - 1
        e = q[ends[cl] - lens[cl] + 1] - q[ends[cl]]
        out[cl] += np.hypot(e[:, 0], e[:, 1])
    return out


def _quantile_sorted(v: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """Linear-interpolated quantile ``q`` of each sorted segment of ``v``."""
    pos = q * (counts - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, counts - 1)
    w = pos - lo
    return v[starts + lo] * (1 - w) + v[starts + hi] * w


def _thicknesses(diam: np.ndarray, pieces: list[np.ndarray]) -> np.ndarray:
    """IQR-filtered median of ``diam`` along each piece, minus the offset; (S,) px."""
    counts = np.array([len(p) for p in pieces], np.intp)
    pts = np.concatenate(pieces)
    sid = np.repeat(np.arange(len(pieces)), counts)
    v = diam[pts[:, 1], pts[:, 0]].astype(np.float64)
    order = np.lexsort((v, sid))
    v, sid = v[order], sid[order]
    starts = np.cumsum(counts) - counts
    q1 = _quantile_sorted(v, starts, counts, 0.25)
    q3 = _quantile_sorted(v, starts, counts, 0.75)
    iqr = q3 - q1
    keep = (v >= (q1 - 1.5 * iqr)[sid]) & (v <= (q3 + 1.5 * iqr)[sid])
    v, sid = v[keep], sid[keep]
    counts = np.bincount(sid, minlength=len(pieces))
    starts = np.cumsum(counts) - counts
    med = _quantile_sorted(v, starts, counts, 0.5)
    return np.maximum(med - THICKNESS_OFFSET_PX, 0.0)


def _skeleton(mask: np.ndarray, lab: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """1-px-wide 8-connected skeleton of ``mask`` (HxW bool), topology-checked.

    lab, stats: 8-connected component labels and stats of ``mask`` (see :func:`_clean`).
    Zhang's thinning (fast) erases some even-width 45-degree staircases, which would delete
    or cut a strand. Every component whose skeleton is not exactly one piece, or is shorter
    than the component's extent less twice its mean width (a skeleton spanning it cannot
    be), is re-thinned alone with Lee's method (slower, rare).
    """
    sk = skeletonize(mask)
    n_m = len(stats)
    n_s, lab_s = cv2.connectedComponents(sk.astype(np.uint8), connectivity=8)
    ys, xs = np.nonzero(sk)
    lm = lab[ys, xs].astype(np.int64)
    pieces = np.bincount(np.unique(lm * n_s + lab_s[ys, xs]) // n_s, minlength=n_m)
    pixels = np.bincount(lm, minlength=n_m)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]).astype(float)
    width = stats[:, cv2.CC_STAT_AREA] / np.maximum(extent, 1.0)
    bad = (pieces != 1) | (pixels < 0.8 * (extent - 2.0 * width) - 2.0)
    bad[0] = False
    bad &= stats[:, cv2.CC_STAT_AREA] > 0
    for label in np.flatnonzero(bad).tolist():
        x0, y0, w, h = (int(v) for v in stats[label, :4])
        comp = (lab[y0 : y0 + h, x0 : x0 + w] == label) & mask[y0 : y0 + h, x0 : x0 + w]
        window = sk[y0 : y0 + h, x0 : x0 + w]
        window[comp] = skeletonize(comp, method="lee")[comp]
    return sk


def clean_mask(mask: np.ndarray, min_object_px: int = 5, max_hole_px: int = 10) -> np.ndarray:
    """Remove specks and fill pinholes.

    mask: HxW, nonzero = hair. Returns HxW bool: 8-connected components with fewer than
    ``min_object_px`` pixels removed, 4-connected background holes (not touching the frame
    border) with at most ``max_hole_px`` pixels filled.
    """
    return _clean(mask, min_object_px, max_hole_px)[0]


def _clean(mask: np.ndarray, min_object_px: int, max_hole_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`clean_mask` plus the 8-connected component labels (HxW int32; filled holes
    keep label 0) and stats (``cv2.connectedComponentsWithStats``) of the kept components.
    Specks and holes are few and small: each is changed inside its own bounding box, not by
    a lookup over the whole frame (-1.8 ms of 4.9 at 640x480, 2-core AMD EPYC)."""
    m = np.asarray(mask) != 0
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {m.shape}")
    u = m.view(np.uint8)  # m is this function's own array: changed in place
    _, lab, stats, _ = cv2.connectedComponentsWithStats(u, connectivity=8)
    small = stats[:, cv2.CC_STAT_AREA] < min_object_px
    small[0] = False
    _paint(u, lab, stats, np.flatnonzero(small), 0, lab)
    stats[small] = 0
    if max_hole_px > 0 and u.any() and not u.all():
        _, lab_bg, stats_bg, _ = cv2.connectedComponentsWithStats(np.equal(u, 0).view(np.uint8), connectivity=4)
        x, y, w, h, area = (stats_bg[:, k] for k in range(5))
        inside = (x > 0) & (y > 0) & (x + w < u.shape[1]) & (y + h < u.shape[0])
        fill = (area <= max_hole_px) & inside
        fill[0] = False  # label 0 is the hair itself
        _paint(u, lab_bg, stats_bg, np.flatnonzero(fill), 1, None)
    return m, lab, stats


def _paint(
    u: np.ndarray, lab: np.ndarray, stats: np.ndarray, labels: np.ndarray, value: int, relabel: np.ndarray | None
) -> None:
    """Set ``u`` (HxW uint8) to ``value`` (0: drop specks, 1: fill holes) on the pixels of each
    of ``labels`` of ``lab`` (with ``stats`` from ``cv2.connectedComponentsWithStats``), and
    ``relabel`` (an HxW label image) to 0 there when given; one bounding box at a time, or over
    the frame when they are many."""
    if len(labels) > 64:  # many specks (a noisy map): one gather over the frame is cheaper
        hit = np.zeros(len(stats), bool)
        hit[labels] = True
        where = hit[lab]
        u[where] = value
        if relabel is not None:
            relabel[where] = 0
        return
    for label in labels.tolist():
        x0, y0, w, h = (int(v) for v in stats[label, :4])
        box = np.s_[y0 : y0 + h, x0 : x0 + w]
        where = lab[box] == label
        u[box][where] = value
        if relabel is not None:
            relabel[box][where] = 0


def skeleton_diameters(
    mask: np.ndarray, min_object_px: int = 5, max_hole_px: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cleaned HxW mask, its HxW bool skeleton, HxW float32 local diameters at the skeleton, px):
    what strands and per-hair thickness are both measured on."""
    m, lab, stats = _clean(mask, min_object_px, max_hole_px)
    if not m.any():
        return m, np.zeros(m.shape, bool), np.zeros(m.shape, np.float32)
    sk = _skeleton(m, lab, stats)
    return m, sk, _diameter_map(m, sk)
