"""Overlay drawing for saved results and the live preview."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["draw_overlay"]


def _thickness_colour(um: float, lo: float = 20.0, hi: float = 100.0) -> tuple[int, int, int]:
    """BGR colour from thin (red) to thick (green) through yellow."""
    t = float(np.clip((um - lo) / (hi - lo), 0.0, 1.0))
    return (0, int(255 * min(1.0, 2 * t)), int(255 * min(1.0, 2 * (1 - t))))


def draw_overlay(
    frame_bgr: np.ndarray,
    mask: np.ndarray,
    strands: Sequence[tuple[np.ndarray, float]] = (),
    centres: np.ndarray | None = None,
    lines: Sequence[str] = (),
) -> np.ndarray:
    """HxWx3 uint8 BGR copy of the frame with the hair mask tinted, strand skeletons coloured
    by thickness (strands: (K,2) int (x, y) points with thickness in micrometres), hair centres
    as circles and text lines at the top left."""
    out = frame_bgr.copy()
    tint = np.zeros_like(out)
    tint[mask.astype(bool)] = (255, 160, 0)
    out = cv2.addWeighted(out, 1.0, tint, 0.45, 0)
    for points, um in strands:
        if len(points) >= 2:
            cv2.polylines(
                out, [points.reshape(-1, 1, 2).astype(np.int32)], False, _thickness_colour(um), 1, cv2.LINE_AA
            )
    if centres is not None:
        for x, y in np.asarray(centres).reshape(-1, 2):
            cv2.circle(out, (int(round(x)), int(round(y))), 4, (255, 0, 255), 1, cv2.LINE_AA)
    scale = max(0.4, out.shape[1] / 1000)
    for i, text in enumerate(lines):
        org = (8, int(22 * scale * (i + 1)) + 4)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
