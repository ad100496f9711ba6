"""Strand geometry: power-function curves for long hair, straight stubs for trimmed hair.

A strand is a centreline (K x 2 float64, (x, y) px in the output frame), a diameter per
centreline point (K,) px, and appearance (colour, alpha, highlight, defocus). Long hair
follows y = c * L * u**p (+ a gentle wobble) in a local frame, rotated and translated to
leave a follicle; strands leave follicles in groups of 1-4 that diverge slightly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import PALETTES, SynthConfig
from .skin import Follicle

__all__ = ["Strand", "scalp_strands", "trimmed_strands", "in_frame_length"]

_LIGHT = ("grey", "white", "blond")


@dataclass
class Strand:
    """One hair: centreline (K, 2) float64 (x, y) px, widths (K,) px diameter, appearance.

    ``normals`` (K, 2) unit normals of the centreline, computed when not given."""

    points: np.ndarray
    widths: np.ndarray
    colour: tuple[float, float, float]
    palette: str
    alpha: float = 1.0
    highlight: float = 0.0
    blur: float = 0.0
    kind: str = "hair"
    normals: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.normals is None:
            t = np.empty_like(self.points)
            t[1:-1] = self.points[2:] - self.points[:-2]
            t[0] = self.points[1] - self.points[0]
            t[-1] = self.points[-1] - self.points[-2]
            norm = np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-9)
            self.normals = np.stack([-t[:, 1] / norm, t[:, 0] / norm], axis=1)


def _draw(rng: np.random.Generator, probs: np.ndarray | tuple[float, ...]) -> int:
    """Index drawn with (unnormalised) ``probs``; cheaper than ``rng.choice``."""
    c = np.cumsum(probs)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(c) - 1))


_NAMES = list(PALETTES)
_WEIGHTS = np.array([PALETTES[n][1] for n in _NAMES], np.float64)


def _pick_palette(rng: np.random.Generator, weights: dict[str, float] | None = None) -> str:
    w = _WEIGHTS if weights is None else np.array([weights.get(n, 0.0) for n in _NAMES])
    return _NAMES[_draw(rng, w)]


def _colour(rng: np.random.Generator, palette: str) -> tuple[float, float, float]:
    g = float(rng.uniform(0.8, 1.2))
    j = rng.uniform(0.94, 1.06, 3).tolist()
    b, gr, r = (min(255.0, max(0.0, c * g * k)) for c, k in zip(PALETTES[palette][0], j, strict=True))
    return (b, gr, r)


def _curve(
    rng: np.random.Generator,
    start: np.ndarray,
    angle: float,
    length: float,
    bend: float,
    power: float,
    wobble: float,
) -> np.ndarray:
    """Centreline (K, 2) of y = bend*L*u**power + wobble in a frame rotated by ``angle``."""
    k = max(12, int(length / 10.0))
    u = np.arange(k) / (k - 1.0)
    x = u * length
    y = bend * length * u**power
    if wobble > 0:
        f = rng.uniform(0.4, 1.8)
        y = y + wobble * length * np.sin(2 * np.pi * f * u + rng.uniform(0, 2 * np.pi))
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([start[0] + ca * x - sa * y, start[1] + sa * x + ca * y], axis=1)


def _taper(k: int, width: float, tip: float | None, root: float | None) -> np.ndarray:
    """Diameters (K,): full ``width``, thinning over the last ``tip`` fraction to ~0.3 px,
    narrowing to 70% over the first ``root`` fraction (hair leaving the skin)."""
    u = np.arange(k) / (k - 1.0)
    w = np.full(k, width)
    if tip:
        w *= np.clip((1.0 - u) / tip, 0.0, 1.0) ** 0.8
    if root:
        w *= 0.7 + 0.3 * np.clip(u / root, 0.0, 1.0)
    return np.maximum(w, 0.3)


def in_frame_length(points: np.ndarray, h: int, w: int, margin: float = 0.0) -> float:
    """Length in px of the part of a centreline (K, 2) inside the frame (minus ``margin``)."""
    inside = (
        (points[:, 0] >= margin) & (points[:, 0] < w - margin) & (points[:, 1] >= margin) & (points[:, 1] < h - margin)
    )
    # points are evenly spaced along the curve: count inside samples times the spacing
    step = float(np.hypot(*(points[-1] - points[0]))) / max(len(points) - 1, 1)
    step = max(step, float(np.hypot(*(points[1] - points[0]))))
    return float(np.count_nonzero(inside[1:] & inside[:-1])) * step


def scalp_strands(rng: np.random.Generator, cfg: SynthConfig) -> tuple[list[Strand], list[Follicle], dict]:
    """Long hair for one frame: (strands in draw order, follicles in frame, meta)."""
    h, w = cfg.height, cfg.width
    lo, hi = cfg.n_strands
    # log-uniform between lo and hi, skewed towards denser frames (median ~35 for 5..120)
    n = int(round(max(lo, 1) * (max(hi, 1) / max(lo, 1)) ** (rng.random() ** 0.7))) if hi > 0 else 0
    main = _pick_palette(rng)
    flow = rng.uniform(0, 2 * np.pi)
    spread = rng.uniform(*cfg.angle_spread)
    # dense frames get somewhat finer hair (keeps hair coverage near real frames' 5-26%)
    dense = np.log(max(n, 1) / max(lo, 1)) / max(np.log(max(hi, 1) / max(lo, 1)), 1e-9)
    w_med = rng.uniform(*cfg.width_median) * (1.0 - 0.45 * float(np.clip(dense, 0, 1)))
    curl = rng.uniform(*cfg.curl)
    defocus = rng.random() < cfg.p_defocus_frame
    defocus_share = rng.uniform(*cfg.defocus_share) if defocus else 0.0
    blur_sigma = rng.uniform(*cfg.defocus_sigma)
    gp = np.array(cfg.follicle_group_probs, np.float64)
    strands: list[Strand] = []
    follicles: list[Follicle] = []
    tries = 0
    while len(strands) < n and tries < 4 * n + 20:
        tries += 1
        k = _draw(rng, gp) + 1
        ang = flow + rng.normal(0, spread) + (np.pi if rng.random() < 0.15 else 0.0)
        length = rng.uniform(*cfg.strand_len)
        through = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        in_frame = rng.random() < cfg.p_follicle_in_frame
        back = 0.0 if in_frame else rng.uniform(0.05, 0.95) * length
        start = through - back * np.array([np.cos(ang), np.sin(ang)])
        bend = rng.normal(0, curl)
        power = 1.0 if rng.random() < 0.3 else rng.uniform(1.3, 3.0)
        palette = main if rng.random() > cfg.p_mixed_palette else _pick_palette(rng)
        group_w = w_med * np.exp(rng.normal(0, cfg.width_spread))
        for j in range(k):
            a = ang + rng.normal(0, 0.06)
            ln = length * rng.uniform(0.8, 1.15)
            off = (j - (k - 1) / 2) * rng.uniform(0.5, 1.5) * group_w
            st = start + off * np.array([-np.sin(ang), np.cos(ang)])
            pts = _curve(rng, st, a, ln, bend + rng.normal(0, 0.02), power, rng.uniform(0, 0.012))
            if in_frame_length(pts, h, w) < 12.0:
                continue
            thin = rng.random() < cfg.p_thin
            wd = rng.uniform(*cfg.thin_width) if thin else group_w * np.exp(rng.normal(0, 0.12))
            wd = min(max(float(wd), cfg.width_clip[0]), cfg.width_clip[1])
            tip = rng.uniform(0.08, 0.35) if rng.random() < cfg.p_tapered_tip else None
            root = min(0.2, 3.0 * wd / ln) if in_frame else None
            pal = palette if rng.random() > 0.1 else _pick_palette(rng)
            alpha = 1.0
            if pal in _LIGHT and rng.random() < cfg.p_translucent:
                alpha = rng.uniform(*cfg.alpha_translucent)
            blur = blur_sigma * rng.uniform(0.7, 1.3) if rng.random() < defocus_share else 0.0
            kind = "thin" if thin else "hair"
            if blur > 0 and not thin and rng.random() < cfg.p_defocus_front:
                kind, wd = "front", min(wd * rng.uniform(1.2, 1.8), cfg.width_clip[1])
                blur *= 1.5
            strands.append(
                Strand(
                    pts,
                    _taper(len(pts), wd, tip, root),
                    _colour(rng, pal),
                    pal,
                    alpha,
                    rng.uniform(0.0, 0.6),
                    blur,
                    kind,
                )
            )
            if in_frame and j == 0:
                follicles.append((float(start[0]), float(start[1]), float(ang), wd))
            if len(strands) >= n:
                break
    meta = {
        "palette": main,
        "n_target": n,
        "flow_rad": float(flow),
        "spread_rad": float(spread),
        "width_median": float(w_med),
        "defocus": bool(defocus),
    }
    return strands, follicles, meta


def trimmed_strands(rng: np.random.Generator, cfg: SynthConfig) -> tuple[list[Strand], list[Follicle], dict]:
    """Phototrichogram stubs: flat-cut straight shafts, 1-4 per follicle opening."""
    h, w = cfg.height, cfg.width
    flow = rng.uniform(0, 2 * np.pi)
    spacing = rng.uniform(*cfg.follicle_spacing)
    w_med = rng.uniform(cfg.stub_width[0] + 2, min(cfg.stub_width[1], 18.0))
    l_med = rng.uniform(cfg.stub_len[0] + 10, cfg.stub_len[1])
    main = "black" if rng.random() < 0.6 else "dark_brown"
    soft = float(rng.uniform(0.8, 2.2)) if rng.random() < cfg.p_soft_stubs else 0.0
    gp = np.array(cfg.follicle_group_probs, np.float64)
    gp = np.array([0.3, 0.4, 0.2, 0.1]) * 0.5 + gp / gp.sum() * 0.5
    margin = 60.0
    xs = np.arange(-margin, w + margin, spacing)
    ys = np.arange(-margin, h + margin, spacing * rng.uniform(0.7, 1.1))
    strands: list[Strand] = []
    follicles: list[Follicle] = []
    for gy in ys:
        shift = rng.uniform(0, spacing)
        for gx in xs:
            if rng.random() < 0.12:
                continue
            fx = gx + shift + rng.normal(0, spacing * 0.22)
            fy = gy + rng.normal(0, spacing * 0.22)
            fang = flow + rng.normal(0, 0.2)
            k = _draw(rng, gp) + 1
            tight = rng.random() < cfg.p_tight_group
            div = rng.uniform(0.0, 0.06) if tight else rng.uniform(0.03, 0.18)
            f_w = 0.0
            for j in range(k):
                under = rng.random() < cfg.p_undersize
                if under:
                    wd = rng.uniform(*cfg.undersize_width)
                    ln = rng.uniform(cfg.stub_len[0] * 0.7, cfg.stub_len[1] * 0.6)
                    pal = "brown" if rng.random() < 0.6 else "blond"
                else:
                    wd = float(np.clip(w_med * np.exp(rng.normal(0, 0.18)), *cfg.stub_width))
                    ln = float(np.clip(l_med * np.exp(rng.normal(0, 0.3)), *cfg.stub_len))
                    pal = main if rng.random() < 0.85 else "dark_brown"
                a = fang + (j - (k - 1) / 2) * div + rng.normal(0, 0.03)
                off = (j - (k - 1) / 2) * wd * (rng.uniform(0.85, 1.1) if tight else rng.uniform(0.3, 0.8))
                st = np.array([fx, fy]) + off * np.array([-np.sin(fang), np.cos(fang)])
                pts = _curve(rng, st, a, ln, rng.normal(0, 0.02), 1.0, 0.0)
                if in_frame_length(pts, h, w) < 6.0:
                    continue
                alpha = rng.uniform(0.6, 0.95) if under and rng.random() < 0.4 else 1.0
                strands.append(
                    Strand(
                        pts,
                        _taper(len(pts), wd, None, 0.12),
                        _colour(rng, pal),
                        pal,
                        alpha,
                        rng.uniform(0.1, 0.5),
                        soft,
                        "undersize" if under else "stub",
                    )
                )
                f_w = max(f_w, wd)
            if f_w > 0:
                follicles.append((float(fx), float(fy), float(fang), f_w))
    if rng.random() < cfg.p_long_hair_trimmed:
        for _ in range(int(rng.integers(1, 3))):
            ang = rng.uniform(0, 2 * np.pi)
            ln = rng.uniform(300, 900)
            st = np.array([rng.uniform(0, w), rng.uniform(0, h)]) - rng.uniform(0.1, 0.9) * ln * np.array(
                [np.cos(ang), np.sin(ang)]
            )
            pts = _curve(rng, st, ang, ln, rng.normal(0, 0.15), rng.uniform(1, 2.5), 0.01)
            if in_frame_length(pts, h, w) < 12.0:
                continue
            pal = _pick_palette(rng, {"dark_brown": 0.5, "brown": 0.3, "grey": 0.2})
            strands.append(
                Strand(
                    pts,
                    _taper(len(pts), rng.uniform(1.5, 3.5), 0.2, None),
                    _colour(rng, pal),
                    pal,
                    1.0,
                    0.2,
                    0.0,
                    "thin",
                )
            )
    order = rng.permutation(len(strands))
    strands = [strands[i] for i in order]
    meta = {
        "palette": main,
        "flow_rad": float(flow),
        "follicle_spacing": float(spacing),
        "width_median": float(w_med),
        "defocus": False,
    }
    return strands, follicles, meta
