"""Classical (non-learned) hair segmenters: the kind of baselines ScalpVision outperformed.

Both implement :class:`device.models.segmentation.Segmenter`: ``segment(frame_bgr)`` takes an HxWx3
uint8 BGR frame and returns :class:`SegOutput` with ``prob`` HxW float32 in [0, 1] and no
centre heatmap. Each filters the frame to enhance thin dark (optionally light) line
structures, picks a threshold t on the response by Otsu's method (but never below a minimum
contrast, so that a hairless frame is not split into "hair" and skin by noise), and maps
the response r to ``prob = clip(0.5 * r / t, 0, 1)``: ``SegOutput.mask()`` (prob >= 0.5)
is exactly the Otsu mask whenever Otsu's threshold is above the floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import sato

from device.models.segmentation import SegOutput

__all__ = ["BlackHatOtsu", "RidgeFilter", "BASELINES", "check_frame", "otsu_prob"]


def check_frame(frame_bgr: np.ndarray) -> None:
    """Raise ValueError unless ``frame_bgr`` is an HxWx3 uint8 array (BGR)."""
    if not isinstance(frame_bgr, np.ndarray):
        raise ValueError(f"frame must be a numpy array, got {type(frame_bgr).__name__}")
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise ValueError(f"frame must be HxWx3 BGR, got shape {frame_bgr.shape}")
    if frame_bgr.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {frame_bgr.dtype}")
    if frame_bgr.shape[0] < 3 or frame_bgr.shape[1] < 3:
        raise ValueError(f"frame too small: {frame_bgr.shape}")


def otsu_prob(response: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """Map a non-negative line response (HxW float) to probabilities (HxW float32).

    The threshold t = Otsu's threshold of the response maps to 0.5:
    ``prob = clip(0.5 * r / t, 0, 1)``. When Otsu's threshold is below ``floor`` (same
    units as the response), t = floor instead. A flat response gives all zeros.
    """
    r = np.asarray(response, np.float32)
    hi = float(r.max())
    if not hi > 0:
        return np.zeros(r.shape, np.float32)
    # Otsu on an 8-bit quantisation of the response; t is the upper edge of the chosen bin
    # so that r >= t  <=>  quantised value > otsu level.
    q = np.clip(r * (255.0 / hi), 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(q, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if level >= 255 or q.max() == q.min():
        return np.zeros(r.shape, np.float32)
    t = (level + 1) * hi / 255.0
    if t < floor:
        return np.clip(r * (0.5 / floor), 0.0, 1.0).astype(np.float32)
    prob = np.clip(r * (0.5 / t), 0.0, 1.0).astype(np.float32)
    # exact agreement with the quantised Otsu mask at the boundary
    prob[(q > level) & (prob < 0.5)] = 0.5
    prob[(q <= level) & (prob >= 0.5)] = np.nextafter(np.float32(0.5), np.float32(0))
    return prob


@dataclass
class BlackHatOtsu:
    """Morphological black-hat (closing minus image) on grayscale, then Otsu.

    kernel_px: elliptical structuring element size, px (~15-17 at 640x480; must exceed the
        widest hair). light_hair: also take the white top-hat (max of both) so grey/white
        hair is found; off by default because bright dandruff flakes then count as hair.
    blur_px: Gaussian pre-blur kernel (odd, 0 = none) against sensor noise.
    min_contrast: the threshold never drops below this black-hat response (grey levels
        darker than the surroundings).
    """

    kernel_px: int = 15
    light_hair: bool = False
    blur_px: int = 3
    min_contrast: float = 12.0
    name: str = "blackhat_otsu"

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        """frame_bgr: HxWx3 uint8 BGR -> SegOutput(prob HxW float32 in [0, 1])."""
        check_frame(frame_bgr)
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        if self.blur_px > 1:
            gray = cv2.GaussianBlur(gray, (self.blur_px | 1, self.blur_px | 1), 0)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (self.kernel_px, self.kernel_px))
        resp = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, k)
        if self.light_hair:
            resp = np.maximum(resp, cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, k))
        return SegOutput(prob=otsu_prob(resp.astype(np.float32), self.min_contrast))


@dataclass
class RidgeFilter:
    """Sato ridge (tubeness) filter for dark lines at several scales, then Otsu.

    sigmas: filter scales in px at full resolution (hair radius ~ sigma * sqrt(2)).
    work_scale: the filter runs on the frame resized by this factor (sigmas scaled to
        match) for speed; the probability map is resized back to full size.
    light_hair: also respond to bright ridges (max of both).
    min_response: threshold floor on the Sato response (grey in [0, 1]); noise on blank
        skin stays below ~0.007, a faint hair (contrast 40/255) reaches ~0.05.
    """

    sigmas: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
    work_scale: float = 0.5
    light_hair: bool = False
    min_response: float = 0.015
    name: str = "ridge"

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        """frame_bgr: HxWx3 uint8 BGR -> SegOutput(prob HxW float32 in [0, 1])."""
        check_frame(frame_bgr)
        h, w = frame_bgr.shape[:2]
        gray: np.ndarray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
        s = float(self.work_scale)
        if s != 1.0:
            gray = cv2.resize(
                gray,
                (max(int(round(w * s)), 3), max(int(round(h * s)), 3)),
                interpolation=cv2.INTER_AREA,
            )
        sig = [max(x * s, 0.5) for x in self.sigmas]
        resp = sato(gray, sigmas=sig, black_ridges=True, mode="reflect")
        if self.light_hair:
            resp = np.maximum(resp, sato(gray, sigmas=sig, black_ridges=False, mode="reflect"))
        prob = otsu_prob(resp.astype(np.float32), self.min_response)
        if prob.shape != (h, w):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        return SegOutput(prob=np.clip(prob, 0.0, 1.0).astype(np.float32))


BASELINES: dict[str, type] = {"blackhat_otsu": BlackHatOtsu, "ridge": RidgeFilter}
