"""Things on the scalp that are NOT hair: dandruff flakes and dots, scales, sebum shine.

Every function composites into a float32 HxWx3 BGR image in place and returns an HxW
float32 opacity map of what it drew (so tests can prove it never enters the hair mask).
Some flakes are long and thin on purpose: hard negatives that look like hair.
"""

from __future__ import annotations

import cv2
import numpy as np

from ._noise import soft_blobs, white_noise

__all__ = ["draw_dandruff", "draw_sebum", "DANDRUFF_LEVELS"]

DANDRUFF_LEVELS = ("none", "mild", "moderate", "severe")
_S = 8  # sub-pixel scale for drawing (shift 3)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, elong: float, ang: float) -> np.ndarray:
    """Irregular star-shaped polygon (M, 2) int32 in 1/8 px around (cx, cy): a smooth
    random radius profile plus fine jagged detail."""
    m = int(rng.integers(18, 40))
    t = np.linspace(0, 2 * np.pi, m, endpoint=False) + rng.uniform(0, 2 * np.pi)
    k = np.arange(1, 5)[:, None]
    smooth = rng.normal(0, 0.35, (4, 1)) / k * np.cos(k * t + rng.uniform(0, 6.3, (4, 1)))
    rad = r * np.exp(smooth.sum(0) + rng.normal(0, 0.12, m))
    x = rad * np.cos(t) * elong
    y = rad * np.sin(t)
    ca, sa = np.cos(ang), np.sin(ang)
    pts = np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], 1)
    return np.round(pts * _S).astype(np.int32)


def draw_dandruff(rng: np.random.Generator, img: np.ndarray, level: int, px: float = 1.0) -> np.ndarray:
    """Draw dandruff at ``level`` 0..3 into ``img`` (HxWx3 float32 BGR [0, 255], in place).

    ``px`` = working pixels per output pixel (sizes below are in output pixels).

    Returns HxW float32 opacity in [0, 1] of the flakes drawn.
    """
    h, w = img.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    if level <= 0:
        return alpha
    n_dots = int(rng.integers(10, 60) * level)
    n_flakes = int(rng.integers(0, 4) * level**1.5)
    n_long = int(rng.integers(0, 3) * level)
    dots = np.stack(
        [
            rng.uniform(0, w, n_dots) * _S,
            rng.uniform(0, h, n_dots) * _S,
            rng.uniform(0.8, 3.0, n_dots) * px * _S,
            rng.uniform(0.5, 1.0, n_dots),
            rng.uniform(0, 180, n_dots),
            rng.uniform(0.4, 0.9, n_dots),
        ],
        1,
    )
    for cx, cy, r, el, ang, op in dots.tolist():
        cv2.ellipse(
            alpha, (int(cx), int(cy)), (max(int(r), 1), max(int(r * el), 1)), ang, 0, 360, op, -1, cv2.LINE_AA, 3
        )
    for _ in range(n_flakes):
        r = float(np.exp(rng.uniform(np.log(3), np.log(12 + 12 * level)))) * px
        poly = _blob(rng, rng.uniform(0, w), rng.uniform(0, h), r, rng.uniform(1, 2.2), rng.uniform(0, np.pi))
        cv2.fillPoly(alpha, [poly], float(rng.uniform(0.45, 0.9)), cv2.LINE_AA, 3)
    if level >= 2:  # patches of loose scale: thresholded fine noise, feathery edges
        cover = 0.01 * level**2 * rng.uniform(0.3, 1.5)
        alpha = np.maximum(alpha, 0.8 * soft_blobs(rng, h, w, rng.uniform(6, 16) * px * 2, cover))
    for _ in range(n_long):  # hair-like elongated flakes
        r = rng.uniform(1.5, 4.0) * px
        poly = _blob(rng, rng.uniform(0, w), rng.uniform(0, h), r, rng.uniform(4, 12), rng.uniform(0, np.pi))
        cv2.fillPoly(alpha, [poly], float(rng.uniform(0.5, 0.9)), cv2.LINE_AA, 3)
    alpha = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(0.5, 1.2) * px)
    # texture inside flakes: brighter rims and folds
    alpha = np.clip(alpha, 0, 1)
    tex = 1.0 + 0.08 * cv2.GaussianBlur(white_noise(rng, h, w), (0, 0), 1.5)
    yellow = rng.uniform(0, 1)
    colour = np.array([235 - 55 * yellow, 240 - 20 * yellow, 242], np.float32)
    a = alpha[..., None]
    img -= (img - colour * tex[..., None]) * a
    return alpha


def draw_sebum(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Oily sheen: soft specular blobs and streaks (in place). Returns HxW float32 strength."""
    h, w = img.shape[:2]
    sheen = np.zeros((h // 4, w // 4), np.float32)
    for _ in range(int(rng.integers(2, 12))):
        c = (int(rng.uniform(0, w / 4) * _S), int(rng.uniform(0, h / 4) * _S))
        ax = (int(rng.uniform(1, 10) * _S), int(rng.uniform(0.5, 3) * _S))
        cv2.ellipse(sheen, c, ax, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.3, 1.0)), -1, cv2.LINE_AA, 3)
    sheen = cv2.GaussianBlur(sheen, (0, 0), rng.uniform(1.0, 3.0))
    sheen = cv2.resize(sheen, (w, h), interpolation=cv2.INTER_LINEAR)
    gain = np.float32(rng.uniform(25, 80))
    img += sheen[..., None] * gain
    np.clip(img, 0, 255, out=img)
    return sheen
