"""Procedural hair-free scalp backgrounds and follicle openings.

Skin is built in float32 BGR [0, 255]: a base tone, low-frequency blotches, multi-octave
texture, a fine skin-line network, pores, whitish stratum-corneum speckle and optional
erythema. Follicle openings (dark/bluish pits with the hair shaft showing through the skin
and whitish scale around it) are composited in one pass. Nothing here is ever hair.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ._noise import fractal_noise, ridge_lines, soft_blobs, value_noise, white_noise

__all__ = ["SKIN_TONES", "procedural_skin", "draw_follicles", "Follicle"]

# Skin tones as seen through scalp microscopes (BGR), including grey white-balance casts.
SKIN_TONES: dict[str, tuple[float, float, float]] = {
    "beige": (176, 192, 214),
    "pink": (168, 174, 210),
    "tan": (140, 164, 194),
    "pale": (204, 210, 222),
    "grey": (188, 190, 192),
    "peach": (160, 178, 212),
}

TONE_WEIGHTS = {"beige": 0.3, "pink": 0.1, "tan": 0.1, "pale": 0.2, "grey": 0.15, "peach": 0.15}

Follicle = tuple[float, float, float, float]  # (x, y, angle rad, hair width px)


def procedural_skin(
    rng: np.random.Generator, h: int, w: int, magnified: bool, erythema: bool, px: float = 1.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render a hair-free scalp background of HxW working pixels.

    ``px`` = working pixels per output pixel (0.5 renders at half resolution; sizes are
    given in output pixels). ``magnified`` (trimmed mode) makes skin lines coarser and
    more visible. Returns (HxWx3 float32 BGR in [0, 255], meta).
    """
    names = list(SKIN_TONES)
    c = np.cumsum([TONE_WEIGHTS[n] for n in names])
    tone = names[min(int(np.searchsorted(c, rng.random() * c[-1], side="right")), len(names) - 1)]
    base = np.array(SKIN_TONES[tone], np.float32) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    base *= np.float32(rng.uniform(0.85, 1.1))
    lum = np.ones((h, w), np.float32)
    lum += np.float32(rng.uniform(0.02, 0.07)) * value_noise(rng, h, w, rng.uniform(150, 320) * px)
    lum += np.float32(rng.uniform(0.02, 0.06)) * fractal_noise(rng, h, w, rng.uniform(24, 60) * px, 2)
    # skin-line network (two scales) darkens the surface slightly
    line_cell = (rng.uniform(90, 180) if magnified else rng.uniform(50, 120)) * px
    depth = rng.uniform(0.05, 0.14) if magnified else rng.uniform(0.015, 0.07)
    lum -= np.float32(depth) * ridge_lines(rng, h, w, line_cell, rng.uniform(0.02, 0.05))
    lum -= np.float32(depth * 0.6) * ridge_lines(rng, h, w, line_cell / 2.5, 0.04)
    # pores / tiny dark dots
    n_pores = int(rng.integers(0, 30))
    if n_pores:
        dots = np.zeros((h, w), np.float32)
        for _ in range(n_pores):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.8, 2.5) * px
            cv2.circle(dots, (int(x * 4), int(y * 4)), max(1, int(r * 4)), 1.0, -1, cv2.LINE_AA, 2)
        lum *= 1.0 - np.float32(rng.uniform(0.1, 0.3)) * dots
    # whitish flaky speckle of the stratum corneum (added in grey levels)
    sp = cv2.GaussianBlur(white_noise(rng, h, w), (0, 0), 0.6)
    gate = np.clip(value_noise(rng, h, w, 60 * px) + 0.3, 0.0, 1.0)
    sp = np.clip(sp - 0.3, 0.0, None) * gate * np.float32(rng.uniform(15, 70))
    # colour blotches (redness) and erythema as per-channel factors
    red = np.float32(rng.uniform(0.01, 0.035)) * value_noise(rng, h, w, rng.uniform(80, 200) * px)
    fb, fg, fr = 1.0 - red, 1.0 - 0.6 * red, np.ones_like(red)
    if erythema:
        k = np.float32(rng.uniform(0.05, 0.14)) * soft_blobs(
            rng, h, w, rng.uniform(90, 220) * px, rng.uniform(0.15, 0.5)
        )
        fb *= 1.0 - k
        fg *= 1.0 - 0.8 * k
        fr *= 1.0 + 0.04 * k
    if erythema:  # a few small red spots (petechiae / irritated openings)
        spots = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(0, 12))):
            c = (int(rng.uniform(0, w) * 4), int(rng.uniform(0, h) * 4))
            r = max(1, int(rng.uniform(1.0, 5.0) * px * 4))
            cv2.circle(spots, c, r, float(rng.uniform(0.3, 0.8)), -1, cv2.LINE_AA, 2)
        spots = cv2.GaussianBlur(spots, (0, 0), 1.0)
        fb *= 1.0 - 0.55 * spots
        fg *= 1.0 - 0.6 * spots
    img = cv2.merge([lum * fb * base[0] + sp, lum * fg * base[1] + 0.97 * sp, lum * fr * base[2] + 0.93 * sp])
    np.clip(img, 0, 255, out=img)
    return img, {"skin_tone": tone, "erythema": bool(erythema)}


def draw_follicles(
    rng: np.random.Generator,
    img: np.ndarray,
    follicles: list[Follicle],
    magnified: bool,
    px: float = 1.0,
) -> None:
    """Composite follicle openings into ``img`` (HxWx3 float32 BGR, modified in place).

    Follicles are in output pixels, ``px`` = working pixels per output pixel. Each
    follicle (x, y, angle, width) gets a dark pit at the exit point, a bluish-grey
    shadow of the shaft running under the skin opposite to ``angle``, and whitish scale.
    """
    if not follicles:
        return
    h, w = img.shape[:2]
    sig = (rng.uniform(3.0, 7.0) if magnified else rng.uniform(1.5, 4.0)) * px
    blue = np.array([128, 104, 92], np.float32) * np.float32(rng.uniform(0.7, 1.0))
    cols = (blue, np.array([60, 62, 75], np.float32), np.array([228, 222, 214], np.float32))
    sigmas = (sig, 1.2 * px, 1.5 * px)
    k = float(rng.uniform(0.35, 0.7))
    per_roi = len(follicles) <= 12  # few follicles: small local maps; many: whole frame
    maps = None if per_roi else [np.zeros((h, w), np.float32) for _ in range(3)]
    for x, y, ang, wid in follicles:
        x, y, wid = x * px, y * px, wid * px
        dx, dy = np.cos(ang), np.sin(ang)
        under = rng.uniform(2.0, 6.0) * wid + (rng.uniform(10, 40) if magnified else 5.0) * px
        box = (0, 0, w, h)
        if per_roi:
            pad = 3.0 * wid + 3.0 * sig + 4.0
            x0, y0 = x - dx * under, y - dy * under
            box = (
                max(int(min(x, x0) - pad), 0),
                max(int(min(y, y0) - pad), 0),
                min(int(max(x, x0) + pad) + 1, w),
                min(int(max(y, y0) + pad) + 1, h),
            )
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            maps = [np.zeros((box[3] - box[1], box[2] - box[0]), np.float32) for _ in range(3)]
        assert maps is not None
        _one_follicle(rng, maps, x - box[0], y - box[1], dx, dy, wid, under, k, magnified, px)
        if per_roi:
            _composite(img[box[1] : box[3], box[0] : box[2]], maps, cols, sigmas)
    if not per_roi and maps is not None:
        _composite(img, maps, cols, sigmas)


def _one_follicle(
    rng: np.random.Generator,
    maps: list[np.ndarray],
    x: float,
    y: float,
    dx: float,
    dy: float,
    wid: float,
    under: float,
    k: float,
    magnified: bool,
    px: float,
) -> None:
    """Draw one opening into the (shadow, pit, scale) opacity maps (working pixels)."""
    s = 16
    shadow, pit, scale = maps
    x0, y0 = x - dx * under, y - dy * under
    thick = max(1, int(round(wid * rng.uniform(1.5, 3.0))))
    cv2.line(
        shadow,
        (int(x * s), int(y * s)),
        (int(x0 * s), int(y0 * s)),
        k * float(rng.uniform(0.5, 1.0)),
        thick,
        cv2.LINE_AA,
        4,
    )
    r = max(1.0, wid * rng.uniform(0.6, 1.1))
    cv2.ellipse(
        pit,
        (int(x * s), int(y * s)),
        (int(r * 1.4 * s), int(r * s)),
        float(np.degrees(np.arctan2(dy, dx))),
        0,
        360,
        float(rng.uniform(0.4, 0.9)),
        -1,
        cv2.LINE_AA,
        4,
    )
    for _ in range(int(rng.integers(0, 6 if magnified else 3))):
        fx = x + rng.normal(0, wid * 1.5 + 3 * px) - dx * rng.uniform(0, under * 0.6)
        fy = y + rng.normal(0, wid * 1.5 + 3 * px) - dy * rng.uniform(0, under * 0.6)
        fr = rng.uniform(1.5 * px, 2.0 * px + (wid if magnified else 0.5 * wid))
        cv2.ellipse(
            scale,
            (int(fx * s), int(fy * s)),
            (int(fr * s), int(fr * rng.uniform(0.4, 1.0) * s)),
            float(rng.uniform(0, 180)),
            0,
            360,
            float(rng.uniform(0.15, 0.55)),
            -1,
            cv2.LINE_AA,
            4,
        )


def _composite(
    img: np.ndarray,
    maps: list[np.ndarray],
    cols: tuple[np.ndarray, ...],
    sigmas: tuple[float, ...],
) -> None:
    """Blur each opacity map and lay its colour over ``img`` (HxWx3 float32, in place)."""
    for amap, col, sg in zip(maps, cols, sigmas, strict=True):
        a = np.clip(cv2.GaussianBlur(amap, (0, 0), sg), 0.0, 1.0)
        flat = np.empty_like(img)
        flat[:] = col
        img[...] = cv2.blendLinear(img, flat, 1.0 - a, a)
