"""Rasterise strands: shaded anti-aliased image, geometric mask and instance ids.

OpenCV fills every pixel a polygon touches, so a polygon of width w covers about w + 1
pixels (non-AA) and w + 1.3 pixels of AA coverage. Widths are compensated so that the
mask has about ``w`` pixels across (coverage >= 0.5) and the drawn ink integrates to
``w``; strands thinner than ~2 px are drawn at reduced opacity for the same reason.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from .strands import Strand

__all__ = ["outline", "draw_strands", "rasterise_ids"]

_SHIFT = 4
_SCALE = float(1 << _SHIFT)
_AA_PAD = 1.3  # extra AA coverage cv2 adds (px)
_MASK_PAD = 1.0  # extra pixels a non-AA fill adds (px)


def _normals(points: np.ndarray) -> np.ndarray:
    """Unit normals (K, 2) of a polyline (K, 2) from central differences."""
    t = np.empty_like(points)
    t[1:-1] = points[2:] - points[:-2]
    t[0] = points[1] - points[0]
    t[-1] = points[-1] - points[-2]
    norm = np.sqrt(t[:, 0] ** 2 + t[:, 1] ** 2)
    norm[norm < 1e-9] = 1e-9
    return np.stack([-t[:, 1] / norm, t[:, 0] / norm], axis=1)


def outline(
    points: np.ndarray,
    widths: np.ndarray,
    offset: float | np.ndarray = 0.0,
    normals: np.ndarray | None = None,
) -> np.ndarray:
    """Closed polygon (2K, 2) float64 around a centreline (K, 2) with diameters (K,) px,
    its axis shifted sideways by ``offset`` px (scalar or (K,)); ``normals`` (K, 2) may be
    passed to skip recomputing them."""
    n = _normals(points) if normals is None else normals
    c = points if np.isscalar(offset) and offset == 0 else points + n * np.asarray(offset, np.float64).reshape(-1, 1)
    half = (widths / 2.0)[:, None]
    return np.concatenate([c + n * half, (c - n * half)[::-1]], axis=0)


def _fix(poly: np.ndarray) -> np.ndarray:
    return np.round(poly * _SCALE).astype(np.int32)


def rasterise_ids(strands: list[Strand], h: int, w: int) -> np.ndarray:
    """HxW int32 map: id k (1-based, draw order) of the topmost strand covering each
    pixel at >= 0.5, else 0."""
    ids = np.zeros((h, w), np.int32)
    for k, s in enumerate(strands, start=1):
        wm = np.maximum(s.widths - _MASK_PAD, 0.0)
        cv2.fillPoly(ids, [_fix(outline(s.points, wm, normals=s.normals))], k, cv2.LINE_8, _SHIFT)
    return ids


def _thin_alpha(width: float) -> float:
    """Opacity that makes a thin AA polygon integrate to ``width`` px of ink."""
    wa = max(width - _AA_PAD, 0.0)
    return float(min(1.0, width / (1.73 + 0.58 * wa)))


def _paint(dst: np.ndarray, s: Strand, rng: np.random.Generator) -> None:
    """Draw one opaque shaded strand into ``dst`` (HxWx3 uint8, in place).

    Dark hair: a uniform body, sometimes a slightly lighter core, and a faint specular
    line along one side. Light (grey/white/blond) hair: darker rims around a bright core.
    """
    col = np.array(s.colour, np.float64)
    light = s.palette in ("grey", "white", "blond")
    wa = np.maximum(s.widths - _AA_PAD, 0.0)
    wmean = float(np.mean(s.widths))
    body = col * rng.uniform(0.6, 0.8) if light and wmean >= 3.0 else col
    cv2.fillPoly(dst, [_fix(outline(s.points, wa, normals=s.normals))], tuple(body.tolist()), cv2.LINE_AA, _SHIFT)
    if wmean >= 3.5 and (light or rng.random() < 0.35):
        core = np.clip(col * 1.06 if light else col * rng.uniform(1.1, 1.35) + 6, 0, 255)
        cw = np.maximum(s.widths * rng.uniform(0.4, 0.65) - _AA_PAD, 0.0)
        cv2.fillPoly(dst, [_fix(outline(s.points, cw, normals=s.normals))], tuple(core.tolist()), cv2.LINE_AA, _SHIFT)
    if wmean >= 4.0 and s.highlight > 0.05:
        spec = np.array([205, 195, 185], np.float64) if not light else np.array([250, 250, 250])
        hl = col + (spec - col) * s.highlight * 0.7
        side = (1.0 if rng.random() < 0.5 else -1.0) * rng.uniform(0.12, 0.28)
        hw = np.maximum(s.widths * rng.uniform(0.1, 0.2) - _AA_PAD, 0.0)
        cv2.fillPoly(
            dst, [_fix(outline(s.points, hw, side * s.widths, s.normals))], tuple(hl.tolist()), cv2.LINE_AA, _SHIFT
        )
        if wmean >= 5.0 and not light and rng.random() < 0.5:  # faint cuticle sheen, other side
            sheen = col + (spec - col) * s.highlight * rng.uniform(0.2, 0.45)
            sw = np.maximum(s.widths * rng.uniform(0.2, 0.35) - _AA_PAD, 0.0)
            off = -np.sign(side) * rng.uniform(0.1, 0.2) * s.widths
            cv2.fillPoly(dst, [_fix(outline(s.points, sw, off, s.normals))], tuple(sheen.tolist()), cv2.LINE_AA, _SHIFT)


def _bbox(s: Strand, h: int, w: int) -> tuple[int, int, int, int] | None:
    pad = float(np.max(s.widths)) + 3.0
    x0 = max(int(np.floor(s.points[:, 0].min() - pad)), 0)
    y0 = max(int(np.floor(s.points[:, 1].min() - pad)), 0)
    x1 = min(int(np.ceil(s.points[:, 0].max() + pad)) + 1, w)
    y1 = min(int(np.ceil(s.points[:, 1].max() + pad)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _paint_alpha(img: np.ndarray, s: Strand, alpha: float, rng: np.random.Generator) -> None:
    """Draw a strand with opacity ``alpha`` < 1 via a region-of-interest blend."""
    box = _bbox(s, *img.shape[:2])
    if box is None:
        return
    x0, y0, x1, y1 = box
    roi = img[y0:y1, x0:x1]
    moved = replace(s, points=s.points - np.array([x0, y0]))
    drawn = roi.copy()
    _paint(drawn, moved, rng)
    cv2.addWeighted(drawn, alpha, roi, 1.0 - alpha, 0.0, dst=roi)


def _soft(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones run at half resolution (same look, a quarter of the work)."""
    if sigma < 2.5:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    small = cv2.resize(img, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / 2.0)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _blurred_layer(img: np.ndarray, group: list[Strand], rng: np.random.Generator) -> None:
    """Paint ``group`` premultiplied on a layer, blur it with the group's mean sigma and
    lay it over ``img`` (HxWx3 uint8, in place)."""
    h, w = img.shape[:2]
    col = np.zeros_like(img)
    cov = np.zeros((h, w), np.uint8)
    for s in group:
        a = s.alpha * _thin_alpha(float(np.mean(s.widths)))
        tmp = replace(s, colour=tuple(c * a for c in s.colour), alpha=1.0, blur=0.0)
        _paint(col, tmp, rng)
        wa = np.maximum(s.widths - _AA_PAD, 0.0)
        cv2.fillPoly(cov, [_fix(outline(s.points, wa, normals=s.normals))], int(255 * a), cv2.LINE_AA, _SHIFT)
    sigma = float(np.mean([s.blur for s in group]))
    col, cov = _soft(col, sigma), _soft(cov, sigma)
    keep = cv2.cvtColor(255 - cov, cv2.COLOR_GRAY2BGR)
    img[...] = cv2.add(cv2.multiply(img, keep, scale=1.0 / 255.0), col)


def draw_strands(img: np.ndarray, strands: list[Strand], rng: np.random.Generator) -> None:
    """Draw strands onto ``img`` (HxWx3 uint8 BGR, in place) in list order.

    Each run of consecutive defocused strands (``blur`` > 0) is painted on one layer,
    blurred and composited at its place in the order (behind or in front of the sharp
    strands), so put out-of-focus strands together at the start and/or the end.
    """
    i = 0
    while i < len(strands):
        if strands[i].blur > 0:
            j = i
            while j < len(strands) and strands[j].blur > 0:
                j += 1
            _blurred_layer(img, strands[i:j], rng)
            i = j
            continue
        s = strands[i]
        thin = _thin_alpha(float(np.mean(s.widths)))
        if s.alpha < 0.995:
            _paint_alpha(img, s, s.alpha * thin, rng)
        elif thin < 0.995:  # opaque but thinner than a pixel: pre-blend with the local skin
            _paint(img, replace(s, colour=_preblend(img, s, thin)), rng)
        else:
            _paint(img, s, rng)
        i += 1


def _preblend(img: np.ndarray, s: Strand, a: float) -> tuple[float, float, float]:
    """Colour ``a * s.colour + (1 - a) * background`` with the background sampled under
    the in-frame centreline (HxWx3 uint8 image)."""
    h, w = img.shape[:2]
    p = s.points[:: max(1, len(s.points) // 8)]
    xi = np.clip(p[:, 0].astype(np.int64), 0, w - 1)
    yi = np.clip(p[:, 1].astype(np.int64), 0, h - 1)
    bg = np.median(img[yi, xi].astype(np.float64), axis=0)
    c = a * np.asarray(s.colour, np.float64) + (1.0 - a) * bg
    return (float(c[0]), float(c[1]), float(c[2]))
