"""Frame quality gate: reject frames that cannot give a trustworthy measurement, with a reason.

Checks, in order (the first failure is the reason):

- exposure: mean grey level (lens cap, LED off, saturated), then the share of clipped pixels
  (underexposed <= ``dark_level``, overexposed >= ``bright_level``);
- content: a featureless frame (grey-level std), nothing in view;
- focus: variance of the Laplacian of the grey frame;
- motion, against the previous frame: the image shift (phase correlation at 1/4 scale) and the
  change left after undoing that shift (mean absolute grey difference): a swipe too fast to
  register, or a different view, leaves a large residual even when the shift estimate is small.

All thresholds live in ``QualityThresholds`` (defaults tuned at 640x480). ``assess`` is the pure
function; ``QualityGate`` keeps the previous frame for the motion check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "frame_problem",
    "assess",
    "QualityGate",
    "QualityReport",
    "QualityThresholds",
    "DEFAULT_THRESHOLDS",
    "DARK_MEAN",
    "BRIGHT_MEAN",
    "FLAT_STD",
    "FOCUS_MIN",
    "MOTION_MAX_PX",
]

_SCALE = 4  # motion is measured on the grey frame shrunk by this factor


@dataclass(frozen=True)
class QualityThresholds:
    """Every threshold of the gate (grey levels are 0-255, sizes in px at 640x480)."""

    dark_mean: float = 12.0  # mean grey below this: underexposed (lens cap, LED off)
    bright_mean: float = 248.0  # mean grey above this: saturated
    dark_level: int = 8  # a pixel at or below this grey level is clipped black
    bright_level: int = 250  # a pixel at or above this grey level is clipped white
    dark_fraction_max: float = 0.6  # share of clipped-black pixels above this: underexposed
    bright_fraction_max: float = 0.25  # share of clipped-white pixels above this: glare / overexposed
    flat_std: float = 2.0  # grey-level std below this: a featureless frame
    # Variance of the Laplacian (grey levels^2) below this: out of focus. Sharp synthetic and real
    # microscope frames measure 14-840; the same frames blurred with sigma 3 px measure 2-5.
    focus_min: float = 6.0
    # Image shift since the previous frame above this: the scanner moved too fast.
    motion_max_px: float = 24.0
    # Mean absolute grey difference to the previous frame after undoing the shift, above this:
    # the view changed (a swipe too fast to register). Steady 6-11 px pans of the shipped clip and
    # scene leave 1-9; two unrelated synthetic views leave 23-67.
    change_max: float = 15.0


DEFAULT_THRESHOLDS = QualityThresholds()
# The defaults under their historical names (read-only aliases of DEFAULT_THRESHOLDS).
DARK_MEAN = DEFAULT_THRESHOLDS.dark_mean
BRIGHT_MEAN = DEFAULT_THRESHOLDS.bright_mean
FLAT_STD = DEFAULT_THRESHOLDS.flat_std
FOCUS_MIN = DEFAULT_THRESHOLDS.focus_min
MOTION_MAX_PX = DEFAULT_THRESHOLDS.motion_max_px


def frame_problem(frame_bgr: np.ndarray, thresholds: QualityThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """A short reason why ``frame_bgr`` (HxWx3 uint8 BGR) cannot be measured for exposure or
    content, or None if usable (focus and motion are checked by ``assess``)."""
    return _exposure_problem(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), thresholds)


def _exposure_problem(grey: np.ndarray, t: QualityThresholds) -> str | None:
    mean, std = float(grey.mean()), float(grey.std())
    if mean < t.dark_mean:
        return f"underexposed frame (mean grey level {mean:.1f} < {t.dark_mean:g})"
    if mean > t.bright_mean:
        return f"overexposed frame (mean grey level {mean:.1f} > {t.bright_mean:g})"
    dark = float(np.count_nonzero(grey <= t.dark_level)) / grey.size
    if dark > t.dark_fraction_max:
        return f"underexposed frame ({dark:.0%} of pixels black > {t.dark_fraction_max:.0%})"
    bright = float(np.count_nonzero(grey >= t.bright_level)) / grey.size
    if bright > t.bright_fraction_max:
        return f"overexposed frame ({bright:.0%} of pixels saturated > {t.bright_fraction_max:.0%})"
    if std < t.flat_std:
        return f"featureless frame (grey-level std {std:.2f} < {t.flat_std:g})"
    return None


@dataclass(frozen=True)
class QualityReport:
    """accepted / reason; focus: variance of the Laplacian (grey levels^2); exposure: mean
    brightness 0-1; motion: image shift since the previous frame, px at 640x480 (None for the
    first); underexposed / overexposed: share of clipped pixels 0-1; change: mean absolute grey
    difference to the previous frame after undoing the shift (None for the first)."""

    accepted: bool
    reason: str | None
    focus: float
    exposure: float
    motion: float | None
    underexposed: float = 0.0
    overexposed: float = 0.0
    change: float | None = None

    def to_dict(self) -> dict[str, object]:
        """The fields the result record carries (its schema's ``quality`` object)."""
        out: dict[str, object] = {
            "accepted": self.accepted,
            "reason": self.reason,
            "focus": round(self.focus, 2),
            "exposure": round(self.exposure, 4),
        }
        if self.motion is not None:
            out["motion"] = round(self.motion, 2)
        return out


def assess(
    frame_bgr: np.ndarray,
    previous_grey: np.ndarray | None = None,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
) -> tuple[QualityReport, np.ndarray]:
    """Exposure, focus and motion of a 640x480 HxWx3 uint8 BGR frame. previous_grey: the grey
    image this function returned for the previous frame (motion is measured against it).
    Returns the report and this frame's small float32 grey image (pass it back next time)."""
    t = thresholds
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    focus = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    exposure = float(grey.mean()) / 255.0
    under = float(np.count_nonzero(grey <= t.dark_level)) / grey.size
    over = float(np.count_nonzero(grey >= t.bright_level)) / grey.size
    small = cv2.resize(grey, (grey.shape[1] // _SCALE, grey.shape[0] // _SCALE), interpolation=cv2.INTER_AREA)
    small = small.astype(np.float32)
    motion, change = None, None
    if previous_grey is not None and previous_grey.shape == small.shape:
        motion, change = _motion(previous_grey, small)
    reason = _exposure_problem(grey, t)
    if reason is None and focus < t.focus_min:
        reason = f"out of focus (Laplacian variance {focus:.1f} < {t.focus_min:g})"
    if reason is None and motion is not None and motion > t.motion_max_px:
        reason = f"moving too fast ({motion:.0f} px since the previous frame > {t.motion_max_px:g})"
    if reason is None and change is not None and change > t.change_max:
        reason = f"view changed since the previous frame (residual difference {change:.1f} > {t.change_max:g})"
    return QualityReport(reason is None, reason, focus, exposure, motion, under, over, change), small


def _motion(previous: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """(shift in px at full scale, mean absolute difference after undoing the shift) between
    two small grey float32 frames of the same shape."""
    h, w = current.shape
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    # phaseCorrelate applies the window to its inputs in place (OpenCV 4.x): give it copies.
    (dx, dy), _ = cv2.phaseCorrelate(previous.copy(), current.copy(), window)
    aligned = cv2.warpAffine(previous, np.array([[1, 0, dx], [0, 1, dy]], np.float32), (w, h))
    mx, my = min(int(np.ceil(abs(dx))) + 1, w // 2 - 1), min(int(np.ceil(abs(dy))) + 1, h // 2 - 1)
    residual = np.abs(aligned - current)[my : h - my, mx : w - mx]
    return _SCALE * float(np.hypot(dx, dy)), float(residual.mean())


@dataclass
class QualityGate:
    """The gate over a stream: ``check(frame)`` assesses a HxWx3 uint8 BGR frame against the
    previous one seen (accepted or not) and counts rejections by reason (the text before its
    figures, e.g. "out of focus")."""

    thresholds: QualityThresholds = DEFAULT_THRESHOLDS
    checked: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    _previous: np.ndarray | None = field(default=None, repr=False)

    def check(self, frame_bgr: np.ndarray) -> QualityReport:
        """Assess one frame; see ``assess``."""
        report, self._previous = assess(frame_bgr, self._previous, self.thresholds)
        self.checked += 1
        if report.reason is not None:
            key = report.reason.split(" (")[0]
            self.rejected[key] = self.rejected.get(key, 0) + 1
        return report

    def reset(self) -> None:
        """Forget the previous frame (after a source reconnect or a gap in the stream)."""
        self._previous = None
