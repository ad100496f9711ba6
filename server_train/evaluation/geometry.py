"""Hair geometry statistics of binary masks, to compare synthetic labels with real hair masks
(e.g. the ScalpVision U²-Net masks): hair fraction, strand width at the skeleton, skeleton
length and endpoint count per frame, as percentiles 5/25/50/75/95."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage.morphology import skeletonize

__all__ = ["mask_geometry", "folder_geometry"]

PERCENTILES = (5, 25, 50, 75, 95)


def mask_geometry(mask: np.ndarray) -> dict[str, Any]:
    """mask: HxW bool at 640x480. Returns hair fraction, skeleton length (px), endpoint count
    and the widths at skeleton pixels (px, 2 x distance transform: reads width + 1 at the
    centre line, as in the ScalpVision statistics)."""
    m = mask.astype(bool)
    sk = skeletonize(m)
    dt = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5)
    nb = cv2.filter2D(sk.astype(np.uint8), -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT) - 1
    return {
        "hair_fraction": float(m.mean()),
        "skeleton_length_px": int(sk.sum()),
        "endpoints": int(((nb == 1) & sk).sum()),
        "widths": 2.0 * dt[sk],
    }


def folder_geometry(folder: str | Path, limit: int | None = None) -> dict[str, Any]:
    """Percentile summary over the ``*.png`` masks in ``folder`` (resized to 640x480)."""
    paths = sorted(Path(folder).glob("*.png"))[:limit]
    if not paths:
        raise FileNotFoundError(f"{folder}: no PNG masks")
    rows = []
    for p in paths:
        m = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if m is None:
            continue
        if m.shape != (480, 640):
            m = cv2.resize(m, (640, 480), interpolation=cv2.INTER_NEAREST)
        rows.append(mask_geometry(m > 127))

    def pct(values: np.ndarray) -> list[float]:
        return [round(float(v), 3) for v in np.percentile(values, PERCENTILES)] if len(values) else []

    widths = np.concatenate([r["widths"] for r in rows]) if rows else np.zeros(0)
    return {
        "folder": str(folder),
        "frames": len(rows),
        "hair_pixel_fraction_p5_25_50_75_95": pct(np.array([r["hair_fraction"] for r in rows])),
        "strand_width_px_at_skeleton_p5_25_50_75_95": pct(widths),
        "skeleton_length_px_per_frame_p5_25_50_75_95": pct(np.array([r["skeleton_length_px"] for r in rows])),
        "skeleton_endpoints_per_frame_p5_25_50_75_95": pct(np.array([r["endpoints"] for r in rows])),
    }
