"""Camera effects of a handheld scalp microscope: defocus, vignetting, colour cast,
brightness/contrast, sensor noise, JPEG re-compression and white letterbox borders.

None of these change the labels except the letterbox, which removes the covered pixels
from the frame (see ``letterbox_rect``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ._noise import white_noise
from .config import SynthConfig

__all__ = ["apply_optics", "letterbox_rect", "apply_letterbox"]


@lru_cache(maxsize=8)
def _radius2(h: int, w: int) -> np.ndarray:
    y = (np.arange(h, dtype=np.float32) - h / 2) / (h / 2)
    x = (np.arange(w, dtype=np.float32) - w / 2) / (w / 2)
    return (x[None, :] ** 2 * 0.6 + y[:, None] ** 2 * 0.4).astype(np.float32)


def apply_optics(rng: np.random.Generator, img: np.ndarray, cfg: SynthConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Camera pipeline on HxWx3 uint8 BGR; returns (new HxWx3 uint8 BGR, meta).

    Works in uint8 with OpenCV primitives (LUT, multiply, add) to stay fast.
    """
    h, w = img.shape[:2]
    meta: dict[str, Any] = {}
    out = img
    if rng.random() < cfg.p_frame_blur:
        sig = float(rng.uniform(*cfg.frame_blur_sigma))
        out = cv2.GaussianBlur(out, (0, 0), sig)
        meta["frame_blur"] = round(sig, 3)
    # colour cast, brightness and contrast as one per-channel lookup table
    gain = rng.uniform(0.95, 1.05, 3) * rng.uniform(0.85, 1.12)
    contrast = rng.uniform(0.8, 1.25)
    mid = float(rng.uniform(110, 170))
    x = np.arange(256, dtype=np.float64)[:, None]
    lut = np.clip(((x - mid) * contrast + mid) * gain[None, :], 0, 255).astype(np.uint8)
    out = cv2.LUT(out, lut.reshape(256, 1, 3))
    if rng.random() < cfg.p_desaturate:  # grey-looking captures (white balance, cheap sensors)
        k = float(rng.uniform(0.4, 1.0))
        grey = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        out = cv2.addWeighted(grey, k, out, 1.0 - k, 0.0)
        meta["desaturate"] = round(k, 3)
    if rng.random() < cfg.p_vignette:
        k = float(rng.uniform(0.1, 0.45))
        v = np.clip(255.0 * (1.0 - k * _radius2((h + 7) // 8, (w + 7) // 8)), 0, 255).astype(np.uint8)
        v = cv2.resize(cv2.cvtColor(v, cv2.COLOR_GRAY2BGR), (w, h), interpolation=cv2.INTER_LINEAR)
        out = cv2.multiply(out, v, scale=1.0 / 255.0)
        meta["vignette"] = round(k, 3)
    sigma = float(rng.uniform(*cfg.noise_sigma))
    hs, ws = (h + 1) // 2, (w + 1) // 2
    n = white_noise(rng, hs, ws) * np.float32(sigma)
    n = cv2.resize(n, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.add(out, cv2.cvtColor(n, cv2.COLOR_GRAY2BGR), dtype=cv2.CV_8U)
    if rng.random() < cfg.p_jpeg:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        meta["jpeg_quality"] = q
    meta["noise_sigma"] = round(sigma, 3)
    return np.ascontiguousarray(out), meta


def letterbox_rect(rng: np.random.Generator, cfg: SynthConfig) -> tuple[int, int, int, int]:
    """Valid image area (x0, y0, x1, y1) px; smaller than the frame when white borders
    (from stretched / padded captures) are drawn around it."""
    h, w = cfg.height, cfg.width
    if rng.random() >= cfg.p_letterbox:
        return 0, 0, w, h
    x0, y0, x1, y1 = 0, 0, w, h
    sides = rng.random(4) < np.array([0.25, 0.25, 0.6, 0.6])
    if not sides.any():
        sides[2] = True
    if sides[0]:
        x0 = int(rng.integers(2, w // 12))
    if sides[1]:
        y0 = int(rng.integers(2, h // 12))
    if sides[2]:
        x1 = w - int(rng.integers(2, w // 12))
    if sides[3]:
        y1 = h - int(rng.integers(2, h // 12))
    return x0, y0, x1, y1


def apply_letterbox(img: np.ndarray, rect: tuple[int, int, int, int]) -> None:
    """Paint near-white borders outside ``rect`` into HxWx3 uint8 ``img`` (in place)."""
    x0, y0, x1, y1 = rect
    h, w = img.shape[:2]
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return
    keep = img[y0:y1, x0:x1].copy()
    img[...] = 250
    img[y0:y1, x0:x1] = keep
