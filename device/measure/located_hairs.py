"""Per located hair (a point a hair-density model found): its shaft diameter, measured once per
hair on the mask's skeleton, and its class (vellus-like / intermediate / terminal), by diameter or
as the per-hair class model (``device.models.hair_classes``) decided."""

from __future__ import annotations

import numpy as np

from device.contracts.constants import HAIR_CLASS_UM
from device.measure.strand_measures import THICKNESS_OFFSET_PX, skeleton_diameters

__all__ = ["HAIR_CLASSES", "hair_class", "located_class", "hair_diameters"]

HAIR_CLASSES = ("vellus-like", "intermediate", "terminal")


def hair_class(diameter_um: float, bounds_um: tuple[float, float] = HAIR_CLASS_UM) -> str:
    """``vellus-like`` below bounds[0], ``terminal`` from bounds[1] up, else ``intermediate``."""
    if diameter_um < bounds_um[0]:
        return HAIR_CLASSES[0]
    return HAIR_CLASSES[2] if diameter_um >= bounds_um[1] else HAIR_CLASSES[1]


def located_class(diameter_um: float | None, miniaturised: bool | None) -> str | None:
    """A located hair's class: by diameter alone (``hair_class``; None without a diameter) when
    ``miniaturised`` is None, else as the per-hair class model decided: ``terminal`` when not
    miniaturised, else ``vellus-like`` below HAIR_CLASS_UM[0] and ``intermediate`` otherwise
    (also when the mask missed the hair's diameter)."""
    if miniaturised is None:
        return None if diameter_um is None else hair_class(diameter_um)
    if not miniaturised:
        return HAIR_CLASSES[2]
    return HAIR_CLASSES[0] if diameter_um is not None and diameter_um < HAIR_CLASS_UM[0] else HAIR_CLASSES[1]


def hair_diameters(
    mask: np.ndarray,
    points: np.ndarray,
    radius_px: float = 6.0,
    skeleton: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Shaft diameter (px) of the hair at each located point: the median local diameter
    (``_diameter_map``) of the mask's skeleton pixels within ``radius_px`` of the point, so one
    hair gets one diameter however its skeleton branches. mask: HxW bool; points: (N, 2) (x, y)
    px. Returns (N,) float64, NaN where no skeleton lies that close (the mask missed the hair).
    skeleton: ``skeleton_diameters`` of this mask when already made."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    out = np.full(len(pts), np.nan)
    if not len(pts):
        return out
    _, sk, diam = skeleton if skeleton is not None else skeleton_diameters(mask)
    h, w = sk.shape
    # Every pixel within radius_px of a point lies in the square of side 2 ceil(r) + 2 px from
    # floor(point) - ceil(r): its (N, side^2) candidates, kept where they are skeleton, inside
    # the frame and within the radius; the rest are NaN, so a NaN-median takes each point's own.
    reach = int(np.ceil(radius_px))
    steps = np.arange(-reach, reach + 2)
    cx = (np.floor(pts[:, :1]).astype(np.intp) + steps)[:, None, :]  # N x 1 x side
    cy = (np.floor(pts[:, 1:]).astype(np.intp) + steps)[:, :, None]  # N x side x 1
    inside = (cx - pts[:, 0, None, None]) ** 2 + (cy - pts[:, 1, None, None]) ** 2 <= radius_px**2
    inside &= (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
    xi, yi = np.clip(cx, 0, w - 1), np.clip(cy, 0, h - 1)
    values = diam[yi, xi].astype(np.float64)
    keep = inside & sk[yi, xi] & (values < max(mask.shape))  # a mask without background has no diameter
    found = keep.any(axis=(1, 2))
    if found.any():
        values = np.where(keep, values, np.nan).reshape(len(pts), -1)[found]
        out[found] = np.maximum(np.nanmedian(values, axis=1) - THICKNESS_OFFSET_PX, 0.0)
    return out
