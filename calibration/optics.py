"""Optical calibration: micrometres per pixel from a frame of a ruler or calibration slide.

The frame shows parallel lines at a known spacing (a stage micrometer's 10 um or 100 um
ticks, a printed ruler's mm marks). The line period in pixels is found in two steps:

1. the strongest peak of the 2-D spectrum (Hann-windowed, zero-padded) gives the lines'
   orientation and a coarse period;
2. the frame is projected onto the lines' normal and the period refined to a fraction of a
   percent by maximising the projected profile's Fourier amplitude over a fine frequency grid.

um_per_px = spacing_um / period_px. Frames without a clear periodic pattern are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import cv2
import numpy as np

from device.measure.optics import OpticsProfile

__all__ = ["LinePeriod", "line_period", "profile_from_frame"]

MIN_PERIODS = 4  # the frame must show at least this many line periods
MIN_PEAK_RATIO = 8.0  # spectral peak over the median of the spectrum's ring around it


@dataclass(frozen=True)
class LinePeriod:
    """period_px: line spacing in pixels; orientation_deg: direction of the lines' normal
    (0 = lines are vertical); periods: how many periods the frame spans; peak_ratio: spectral
    peak strength (higher is clearer)."""

    period_px: float
    orientation_deg: float
    periods: float
    peak_ratio: float


def line_period(frame: np.ndarray, min_period_px: float = 3.0) -> LinePeriod:
    """Period of the dominant parallel-line pattern in ``frame`` (HxW or HxWx3 uint8)."""
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if frame.ndim != 2 or min(frame.shape) < 32:
        raise ValueError(f"calibration frame must be an image of at least 32x32 pixels, got {frame.shape}")
    img = frame.astype(np.float64)
    img -= img.mean()
    h, w = img.shape
    img *= np.outer(np.hanning(h), np.hanning(w))
    size = 1 << int(np.ceil(np.log2(max(h, w) * 2)))
    spec = np.abs(np.fft.rfft2(img, s=(size, size)))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.hypot(fx, fy)
    valid = (radius >= MIN_PERIODS / max(h, w)) & (radius <= 1.0 / min_period_px)
    spec_valid = np.where(valid, spec, 0.0)
    iy, ix = np.unravel_index(int(np.argmax(spec_valid)), spec.shape)
    f0, theta = float(radius[iy, ix]), float(np.arctan2(fy[iy, 0], fx[0, ix]))
    ring = valid & (np.abs(radius - f0) < 0.1 * f0)
    peak_ratio = float(spec[iy, ix] / max(np.median(spec[ring]), 1e-12))
    if peak_ratio < MIN_PEAK_RATIO:
        raise ValueError(
            f"no clear periodic line pattern (peak ratio {peak_ratio:.1f} < {MIN_PEAK_RATIO}); "
            "frame the ruler's ticks sharply across most of the view"
        )
    period = _refine(frame.astype(np.float64), theta, f0)
    extent = abs(w * np.cos(theta)) + abs(h * np.sin(theta))
    if extent / period < MIN_PERIODS:
        raise ValueError(f"only {extent / period:.1f} line periods in view; need >= {MIN_PERIODS}")
    return LinePeriod(period, float(np.degrees(theta)) % 180.0, float(extent / period), peak_ratio)


def _refine(gray: np.ndarray, theta: float, f0: float) -> float:
    """Period (px) maximising the Fourier amplitude of the frame projected on direction theta."""
    h, w = gray.shape
    ys, xs = np.mgrid[0:h, 0:w]
    t = (xs * np.cos(theta) + ys * np.sin(theta)).ravel()
    values = (gray - gray.mean()).ravel()
    bin_px = 0.25
    idx = np.round((t - t.min()) / bin_px).astype(np.int64)
    counts = np.bincount(idx)
    profile = np.bincount(idx, values) / np.maximum(counts, 1)
    pos = np.arange(len(profile)) * bin_px
    keep = counts > 0.2 * counts.max()  # the frame's corners project onto few pixels
    pos, profile = pos[keep], profile[keep] * np.hanning(int(keep.sum()))
    best = f0
    for span in (0.08, 0.004, 0.0002):
        freqs = best * (1 + np.linspace(-span, span, 801))
        amp = np.abs(np.exp(-2j * np.pi * np.outer(freqs, pos)) @ profile)
        best = float(freqs[int(np.argmax(amp))])
    return 1.0 / best


def profile_from_frame(frame: np.ndarray, spacing_um: float, source: str = "") -> OpticsProfile:
    """An optics profile from a ruler frame whose lines are ``spacing_um`` micrometres apart."""
    if spacing_um <= 0:
        raise ValueError("spacing_um must be positive")
    found = line_period(frame)
    h, w = frame.shape[:2]
    return OpticsProfile(
        um_per_px=spacing_um / found.period_px,
        frame_width=w,
        frame_height=h,
        spacing_um=spacing_um,
        spacing_px=round(found.period_px, 4),
        orientation_deg=round(found.orientation_deg, 2),
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source=source,
    )
