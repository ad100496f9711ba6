"""Frame quality checks: reject frames that cannot give a trustworthy measurement."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["frame_problem", "DARK_MEAN", "BRIGHT_MEAN", "FLAT_STD"]

DARK_MEAN = 12.0  # grey levels: below this mean the frame is underexposed (lens cap, LED off)
BRIGHT_MEAN = 248.0  # above this the frame is saturated
FLAT_STD = 2.0  # grey-level std below this: a featureless frame (nothing in view)


def frame_problem(frame_bgr: np.ndarray) -> str | None:
    """A short reason why ``frame_bgr`` (HxWx3 uint8) cannot be measured, or None if usable."""
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    mean, std = float(grey.mean()), float(grey.std())
    if mean < DARK_MEAN:
        return f"underexposed frame (mean grey level {mean:.1f} < {DARK_MEAN:g})"
    if mean > BRIGHT_MEAN:
        return f"overexposed frame (mean grey level {mean:.1f} > {BRIGHT_MEAN:g})"
    if std < FLAT_STD:
        return f"featureless frame (grey-level std {std:.2f} < {FLAT_STD:g})"
    return None
