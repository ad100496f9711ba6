"""Render one synthetic scalp-microscope frame whose drawing is its own label.

Order of work: valid area (letterbox) -> background (procedural skin or a hair-free real
frame) -> follicle openings -> dandruff and sebum (on the skin, under the hair) -> strands
(defocused ones behind or in front of the sharp ones) -> optics -> borders -> labels from
the same strand polygons without anti-aliasing. The background is composed at half
resolution (it is smooth, and that halves the cost); strands and labels at full size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from .annotations import draw_annotations
from .conditions import ConditionLevels, condition_config, draw_skin_conditions, draw_surface_conditions
from .config import Sample, SynthConfig
from .debris import DANDRUFF_LEVELS, draw_dandruff, draw_sebum
from .optics import apply_letterbox, apply_optics, letterbox_rect
from .raster import draw_strands, rasterise_ids
from .real_backgrounds import real_background
from .skin import draw_follicles, procedural_skin
from .strands import Strand, scalp_strands, trimmed_strands

__all__ = ["render", "render_index", "render_debug", "MIN_VISIBLE_PX"]

MIN_VISIBLE_PX = 8
_HALF = 0.5


def render(seed: int, config: SynthConfig | None = None) -> Sample:
    """Render the frame for ``seed`` (deterministic: same seed and config, same arrays)."""
    return _render(np.random.default_rng(seed), config or SynthConfig(), [seed])[0]


def render_index(
    seed: int, index: int, config: SynthConfig | None = None, conditions: ConditionLevels | None = None
) -> Sample:
    """Sample ``index`` of the data set with base ``seed`` (rng seeded with [seed, index]).

    ``conditions``: draw dandruff, sebum, erythema and hair loss at these levels (see
    ``conditions.py``); None keeps the plain generator (same frames as before conditions existed)."""
    rng = np.random.default_rng([seed, index])
    return _render(rng, config or SynthConfig(), [seed, index], conditions)[0]


def render_debug(seed: int, config: SynthConfig | None = None) -> tuple[Sample, dict[str, np.ndarray]]:
    """Like ``render`` but also returns the non-hair layers: {"dandruff": HxW float32
    opacity, "ids_all": HxW int32 ids before dropping strands}."""
    return _render(np.random.default_rng(seed), config or SynthConfig(), [seed])


def _in_frame_part(s: Strand, rect: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(points (K', 2), widths (K',)) of the centreline samples inside ``rect``."""
    x0, y0, x1, y1 = rect
    p = s.points
    inside = (p[:, 0] >= x0) & (p[:, 0] <= x1 - 1) & (p[:, 1] >= y0) & (p[:, 1] <= y1 - 1)
    if not inside.any():  # polygon grazes the frame: use the clipped nearest samples
        q = np.stack([np.clip(p[:, 0], x0, x1 - 1), np.clip(p[:, 1], y0, y1 - 1)], 1)
        d = np.linalg.norm(q - p, axis=1)
        inside = d <= d.min() + 1e-6
    return p[inside], s.widths[inside]


def _arc_midpoint(pts: np.ndarray) -> np.ndarray:
    """(2,) point halfway along a polyline (K, 2) of evenly spaced samples (the strands'
    centrelines are), i.e. halfway by arc length; gaps where the strand left and re-entered
    the frame are skipped because only the in-frame samples are counted."""
    t = (len(pts) - 1) / 2.0
    i = int(t)
    if i >= len(pts) - 1:
        return pts[-1]
    f = t - i
    return pts[i] * (1.0 - f) + pts[i + 1] * f


def _labels(
    strands: list[Strand], ids_all: np.ndarray, rect: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Keep strands with >= MIN_VISIBLE_PX topmost pixels and renumber them 1..N."""
    counts = np.bincount(ids_all.ravel(), minlength=len(strands) + 1)
    keep = np.flatnonzero(counts[1:] >= MIN_VISIBLE_PX)
    lut = np.zeros(len(strands) + 1, np.int32)
    lut[keep + 1] = np.arange(1, len(keep) + 1, dtype=np.int32)
    instances = ids_all if len(keep) == len(strands) else lut[ids_all]
    thick, centres, lines = [], [], []
    for k in keep:
        pts, wid = _in_frame_part(strands[k], rect)
        thick.append(float(wid.mean()))
        centres.append(_arc_midpoint(pts))
        lines.append(pts.astype(np.float32))
    return (instances, np.asarray(thick, np.float32).reshape(-1), np.asarray(centres, np.float32).reshape(-1, 2), lines)


def _render(
    rng: np.random.Generator, config: SynthConfig, seed: Sequence[int], conditions: ConditionLevels | None = None
) -> tuple[Sample, dict[str, np.ndarray]]:
    cfg = config.resolved()
    if conditions is not None:
        cfg = condition_config(cfg, conditions)
    h, w = cfg.height, cfg.width
    trimmed = cfg.mode == "trimmed"
    meta: dict[str, Any] = {"mode": cfg.mode, "hard": cfg.hard, "seed": list(seed)}
    rect = letterbox_rect(rng, cfg)
    erythema = bool(rng.random() < cfg.p_erythema)
    # the background (skin, follicles, dandruff, sebum) is composed at half resolution
    hh, wh = (h + 1) // 2, (w + 1) // 2
    if cfg.backgrounds and rng.random() < cfg.p_background_real:
        bg, name = real_background(rng, cfg.backgrounds, hh, wh)
        meta.update({"background": name, "erythema": False})
    else:
        bg, skin_meta = procedural_skin(rng, hh, wh, magnified=trimmed, erythema=erythema, px=_HALF)
        meta.update({"background": "procedural", **skin_meta})
    if trimmed:
        strands, follicles, smeta = trimmed_strands(rng, cfg)
    else:
        strands, follicles, smeta = scalp_strands(rng, cfg)
    meta.update(smeta)
    # out-of-focus strands: most behind the focal plane, some in front (closer to the lens)
    front = [s for s in strands if s.blur > 0 and s.kind == "front"]
    strands = [s for s in strands if s.blur > 0 and s.kind != "front"] + [s for s in strands if s.blur <= 0] + front
    draw_follicles(rng, bg, follicles, magnified=trimmed, px=_HALF)
    p = np.asarray(cfg.dandruff_probs, np.float64)
    level = int(rng.choice(len(p), p=p / p.sum()))
    dandruff = draw_dandruff(rng, bg, level, px=_HALF)
    has_sebum = bool(rng.random() < cfg.p_sebum)
    if has_sebum:
        draw_sebum(rng, bg)
    if conditions is not None:
        meta.update(draw_skin_conditions(rng, bg, conditions, px=_HALF))
    img = cv2.resize(np.clip(bg, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    dandruff = cv2.resize(dandruff, (w, h), interpolation=cv2.INTER_LINEAR)
    draw_strands(img, strands, rng)
    if conditions is not None:
        meta.update(draw_surface_conditions(rng, img, strands, conditions))
        meta["conditions"] = conditions.to_dict()
    img, ometa = apply_optics(rng, img, cfg)
    if rng.random() < cfg.p_annotations:
        ometa.update(draw_annotations(rng, img))
    apply_letterbox(img, rect)
    ids_all = rasterise_ids(strands, h, w)
    x0, y0, x1, y1 = rect
    if (x0, y0, x1, y1) != (0, 0, w, h):
        outside = np.ones((h, w), bool)
        outside[y0:y1, x0:x1] = False
        ids_all[outside] = 0
        dandruff[outside] = 0
    mask = (ids_all > 0).astype(np.uint8)
    instances, thick, centres, lines = _labels(strands, ids_all, rect)
    meta.update(
        {
            "dandruff_level": level,
            "dandruff": DANDRUFF_LEVELS[level],
            "sebum": has_sebum,
            "letterbox": list(rect),
            "n_drawn": len(strands),
            "n_follicles": len(follicles),
            "hair_fraction": round(float(mask.mean()), 4),
            "n_defocused": sum(1 for s in strands if s.blur > 0),
            "n_translucent": sum(1 for s in strands if s.alpha < 1.0),
            "n_thin": sum(1 for s in strands if float(np.mean(s.widths)) < 3.0),
            **ometa,
        }
    )
    sample = Sample(
        image=img, mask=mask, instances=instances, thickness_px=thick, centres=centres, centrelines=lines, meta=meta
    )
    return sample, {"dandruff": dandruff, "ids_all": ids_all}
