"""Frame quality checks: reject frames that cannot give a trustworthy measurement."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "frame_problem",
    "assess",
    "QualityReport",
    "DARK_MEAN",
    "BRIGHT_MEAN",
    "FLAT_STD",
    "FOCUS_MIN",
    "MOTION_MAX_PX",
]

DARK_MEAN = 12.0  # grey levels: below this mean the frame is underexposed (lens cap, LED off)
BRIGHT_MEAN = 248.0  # above this the frame is saturated
FLAT_STD = 2.0  # grey-level std below this: a featureless frame (nothing in view)
# Variance of the Laplacian (grey levels^2) at 640x480 below this: out of focus. Sharp synthetic
# and real microscope frames measure 14-840; the same frames blurred with sigma 3 px measure 2-5.
FOCUS_MIN = 6.0
# Estimated image shift since the previous frame (px at 640x480) above this: the scanner moved
# too fast for a sharp frame.
MOTION_MAX_PX = 24.0


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


@dataclass(frozen=True)
class QualityReport:
    """accepted / reason; focus: variance of the Laplacian (grey levels^2); exposure: mean
    brightness 0-1; motion: image shift since the previous frame, px (None for the first)."""

    accepted: bool
    reason: str | None
    focus: float
    exposure: float
    motion: float | None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "accepted": self.accepted,
            "reason": self.reason,
            "focus": round(self.focus, 2),
            "exposure": round(self.exposure, 4),
        }
        if self.motion is not None:
            out["motion"] = round(self.motion, 2)
        return out


def assess(frame_bgr: np.ndarray, previous_grey: np.ndarray | None = None) -> tuple[QualityReport, np.ndarray]:
    """Exposure, focus and motion of a 640x480 HxWx3 uint8 BGR frame. previous_grey: the grey
    image this function returned for the previous frame (motion is measured against it).
    Returns the report and this frame's grey image (pass it back next time)."""
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    focus = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    exposure = float(grey.mean()) / 255.0
    motion = None
    small = cv2.resize(grey, (grey.shape[1] // 4, grey.shape[0] // 4), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    if previous_grey is not None and previous_grey.shape == small.shape:
        (dx, dy), _ = cv2.phaseCorrelate(previous_grey, small, cv2.createHanningWindow(small.shape[::-1], cv2.CV_32F))
        motion = 4.0 * float(np.hypot(dx, dy))
    reason = frame_problem(frame_bgr)
    if reason is None and focus < FOCUS_MIN:
        reason = f"out of focus (Laplacian variance {focus:.1f} < {FOCUS_MIN:g})"
    if reason is None and motion is not None and motion > MOTION_MAX_PX:
        reason = f"moving too fast ({motion:.0f} px since the previous frame > {MOTION_MAX_PX:g})"
    return QualityReport(reason is None, reason, focus, exposure, motion), small
