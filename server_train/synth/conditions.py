"""Scalp conditions at four levels, drawn the way they look under a scalp microscope.

Conditions and levels (0 good, 1 mild, 2 moderate, 3 severe; the names are
``device.contracts.constants.CONDITION_NAMES`` and ``LEVEL_NAMES``):

- **dandruff**: white flakes, dots and loose scale on the skin (``debris.draw_dandruff`` at the
  level) plus flakes caught on the strands;
- **sebum**: yellowish oily tint, specular patches on the skin, shine along the strands, and
  clumped hair (strands of a follicle grouped, one direction) from moderate on;
- **erythema**: diffuse redness (stronger and wider with the level), visible vessel patterns
  from moderate on, pustules (yellow-white domes with a red halo) when severe;
- **hair_loss**: fewer strands, finer and with more thin (miniaturised) hair.

``condition_config`` turns a level set into renderer settings (the base renderer's own random
dandruff, sebum and erythema are switched off so the label is the only source of each);
``draw_skin_conditions`` and ``draw_surface_conditions`` are the two hooks ``render`` calls,
under and over the hair. Label sets are sampled from the AI-Hub class frequencies by default.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from ._noise import soft_blobs, value_noise
from .config import SynthConfig
from .strands import Strand

__all__ = [
    "AIHUB_FREQUENCIES",
    "ConditionLevels",
    "sample_levels",
    "condition_config",
    "draw_skin_conditions",
    "draw_surface_conditions",
]

# Share of each level 0..3 over the 95,910 rows of the AI-Hub label tables
# (../shared/data/aihub-labels/{train,val,test}_label.csv), merged as ScalpVision does:
# dandruff = max(value_1, value_5), sebum = value_2, erythema = max(value_3, value_4),
# hair_loss = value_6. Kept here because a clone has no ../shared.
AIHUB_FREQUENCIES: dict[str, tuple[float, float, float, float]] = {
    "dandruff": (0.4850, 0.2542, 0.1969, 0.0639),
    "sebum": (0.1973, 0.3975, 0.3509, 0.0543),
    "erythema": (0.3052, 0.4420, 0.1891, 0.0637),
    "hair_loss": (0.7347, 0.1965, 0.0559, 0.0128),
}
SAMPLINGS = ("aihub", "uniform")

# hair loss level -> (n_strands range, p_thin, width_median range) in scalp mode
_HAIR_LOSS_SCALP = (
    ((50, 140), 0.12, (5.0, 12.5)),
    ((22, 60), 0.25, (4.0, 10.0)),
    ((9, 28), 0.42, (3.0, 8.0)),
    ((1, 10), 0.62, (2.2, 6.0)),
)
# hair loss level -> (follicle spacing factor, p_undersize) in trimmed mode
_HAIR_LOSS_TRIMMED = ((1.0, 0.08), (1.3, 0.22), (1.7, 0.4), (2.3, 0.6))


@dataclass(frozen=True)
class ConditionLevels:
    """One frame's label set: each field a level 0..3 (good, mild, moderate, severe)."""

    dandruff: int = 0
    sebum: int = 0
    erythema: int = 0
    hair_loss: int = 0

    def __post_init__(self) -> None:
        for name, value in self.to_dict().items():
            if not 0 <= value <= 3:
                raise ValueError(f"{name} level must be 0..3, got {value}")

    def to_dict(self) -> dict[str, int]:
        return {
            "dandruff": int(self.dandruff),
            "sebum": int(self.sebum),
            "erythema": int(self.erythema),
            "hair_loss": int(self.hair_loss),
        }


def sample_levels(rng: np.random.Generator, sampling: str = "aihub") -> ConditionLevels:
    """Draw a label set: each condition independently from its AI-Hub level shares
    (``sampling="aihub"``) or uniformly over the four levels (``"uniform"``)."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    levels = {}
    for name, freq in AIHUB_FREQUENCIES.items():
        p = np.asarray(freq if sampling == "aihub" else (0.25,) * 4, np.float64)
        levels[name] = int(rng.choice(4, p=p / p.sum()))
    return ConditionLevels(**levels)


def condition_config(cfg: SynthConfig, levels: ConditionLevels) -> SynthConfig:
    """Renderer settings for ``levels``: dandruff fixed at its level, the base's random sebum
    and erythema off (the condition hooks draw them), hair density and fineness by hair loss,
    clumped hair (bigger follicle groups, one direction) for sebum >= 2."""
    onehot = tuple(1.0 if i == levels.dandruff else 0.0 for i in range(4))
    out = replace(cfg, dandruff_probs=onehot, p_sebum=0.0, p_erythema=0.0)  # type: ignore[arg-type]
    if cfg.mode == "scalp":
        n, p_thin, wmed = _HAIR_LOSS_SCALP[levels.hair_loss]
        out = replace(out, n_strands=n, p_thin=p_thin, width_median=wmed)
    else:
        factor, p_under = _HAIR_LOSS_TRIMMED[levels.hair_loss]
        lo, hi = cfg.follicle_spacing
        out = replace(out, follicle_spacing=(lo * factor, hi * factor), p_undersize=p_under)
    if levels.sebum >= 2:
        out = replace(out, follicle_group_probs=(0.1, 0.25, 0.35, 0.3), angle_spread=(0.05, 0.3), curl=(0.0, 0.15))
    return out


def _tint(img: np.ndarray, k: np.ndarray | float, fb: float, fg: float, fr: float) -> None:
    """Multiply channels (B, G, R) by 1 + f * k (k scalar or HxW), in place."""
    k3 = k[..., None] if isinstance(k, np.ndarray) else np.float32(k)
    img *= 1.0 + np.array([fb, fg, fr], np.float32) * k3


def _erythema(rng: np.random.Generator, img: np.ndarray, level: int, px: float) -> dict[str, Any]:
    h, w = img.shape[:2]
    base = (0.0, 0.05, 0.11, 0.18)[level] * rng.uniform(0.8, 1.2)
    patch = (0.0, 0.08, 0.14, 0.2)[level] * rng.uniform(0.7, 1.3)
    cover = (0.0, 0.25, 0.45, 0.65)[level]
    k = np.float32(base) + np.float32(patch) * soft_blobs(rng, h, w, rng.uniform(70, 200) * px, cover)
    _tint(img, k, -1.0, -0.75, 0.04)
    n_vessels = (0, int(rng.integers(0, 3)), int(rng.integers(3, 9)), int(rng.integers(8, 17)))[level]
    if n_vessels:  # branching capillary loops: random walks, thin, dark red
        vmap = np.zeros((h, w), np.float32)
        for _ in range(n_vessels):
            p = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            ang = rng.uniform(0, 2 * np.pi)
            pts = [p.copy()]
            for _ in range(int(rng.integers(6, 20))):
                ang += rng.normal(0, 0.6)
                p = p + rng.uniform(4, 12) * px * np.array([np.cos(ang), np.sin(ang)])
                pts.append(p.copy())
            poly = np.round(np.asarray(pts) * 8).astype(np.int32).reshape(-1, 1, 2)
            thick = max(1, int(round(rng.uniform(0.8, 2.0) * px * 2)))
            cv2.polylines(vmap, [poly], False, float(rng.uniform(0.4, 0.9)), thick, cv2.LINE_AA, 3)
        vmap = cv2.GaussianBlur(vmap, (0, 0), 0.7)
        _tint(img, vmap, -0.55, -0.6, -0.2)
    n_pustules = int(rng.integers(2, 9)) if level == 3 else 0
    if n_pustules:
        halo, dome = np.zeros((h, w), np.float32), np.zeros((h, w), np.float32)
        for _ in range(n_pustules):
            c = (int(rng.uniform(0, w) * 4), int(rng.uniform(0, h) * 4))
            r = rng.uniform(3.0, 9.0) * px
            cv2.circle(halo, c, int(r * 2.0 * 4), 1.0, -1, cv2.LINE_AA, 2)
            cv2.circle(dome, c, max(1, int(r * 4)), 1.0, -1, cv2.LINE_AA, 2)
        halo = cv2.GaussianBlur(halo, (0, 0), 2.0 * px + 1.0)
        dome = cv2.GaussianBlur(dome, (0, 0), 1.0)
        _tint(img, halo, -0.4, -0.35, 0.05)
        colour = np.array([150, 215, 235], np.float32)  # yellowish white (BGR)
        img -= (img - colour) * (0.85 * dome)[..., None]
    return {"vessels": n_vessels, "pustules": n_pustules}


def _sebum_skin(rng: np.random.Generator, img: np.ndarray, level: int, px: float) -> None:
    h, w = img.shape[:2]
    _tint(img, (0.0, 0.04, 0.08, 0.13)[level] * rng.uniform(0.7, 1.3), -1.0, -0.2, 0.0)  # yellowish
    sheen = np.zeros((h, w), np.float32)
    n = (0, int(rng.integers(2, 6)), int(rng.integers(5, 12)), int(rng.integers(10, 20)))[level]
    size = (0.0, 12.0, 22.0, 40.0)[level]
    for _ in range(n):
        c = (int(rng.uniform(0, w) * 8), int(rng.uniform(0, h) * 8))
        ax = (int(rng.uniform(0.4, 1.0) * size * px * 8), int(rng.uniform(0.15, 0.5) * size * px * 8))
        cv2.ellipse(sheen, c, ax, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.4, 1.0)), -1, cv2.LINE_AA, 3)
    if level >= 2:  # wide glossy film
        sheen = np.maximum(sheen, 0.35 * soft_blobs(rng, h, w, rng.uniform(60, 140) * px, 0.15 * level))
    sheen = cv2.GaussianBlur(sheen, (0, 0), rng.uniform(1.5, 4.0) * px * 2)
    gain = (0.0, 35.0, 60.0, 90.0)[level] * rng.uniform(0.8, 1.2)
    colour = np.array([0.82, 0.97, 1.0], np.float32)  # specular light is slightly yellow on sebum
    img += sheen[..., None] * np.float32(gain) * colour


def draw_skin_conditions(
    rng: np.random.Generator, img: np.ndarray, levels: ConditionLevels, px: float
) -> dict[str, Any]:
    """Erythema and sebum on the skin, under the hair (``img`` HxWx3 float32 BGR [0, 255],
    working pixels = ``px`` x output pixels; in place). Dandruff on the skin is the base
    renderer's (``condition_config`` fixes its level). Returns meta."""
    meta = {}
    if levels.erythema:
        meta.update(_erythema(rng, img, levels.erythema, px))
    if levels.sebum:
        _sebum_skin(rng, img, levels.sebum, px)
    np.clip(img, 0, 255, out=img)
    return meta


def _flakes(rng: np.random.Generator, img: np.ndarray, on_hair: np.ndarray, level: int) -> np.ndarray:
    """White scales over skin and hair (half of them caught on strands, ``on_hair`` (K, 2) points),
    each with a faint shadow so it stands out on pale skin. Returns the new HxWx3 float32 image."""
    h, w = img.shape[:2]
    n = int(rng.integers(*((0, 1), (12, 30), (50, 100), (120, 250))[level]) * (h * w) / (640 * 480))
    alpha = np.zeros((h, w), np.float32)
    for _ in range(max(n, 1)):
        if len(on_hair) and rng.random() < 0.5:
            x, y = on_hair[int(rng.integers(0, len(on_hair)))] + rng.normal(0, 2.0, 2)
        else:
            x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = float(np.exp(rng.uniform(np.log(2.5), np.log(5.0 + 5.0 * level))))
        axes = (max(int(r * 8), 8), max(int(r * rng.uniform(0.35, 1.0) * 8), 8))
        cv2.ellipse(alpha, (int(x * 8), int(y * 8)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA, 3)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 0.7)
    shadow = np.clip(cv2.GaussianBlur(np.roll(alpha, (1, 1), (0, 1)), (0, 0), 1.5) - alpha, 0, 1)
    img = img * (1.0 - 0.45 * shadow[..., None])
    colour = np.array([246, 250, 252], np.float32) * np.float32(rng.uniform(0.97, 1.0))
    tex = 1.0 - 0.06 * np.abs(value_noise(rng, h, w, 3.0))[..., None]
    return img - (img - colour * tex) * (alpha * np.float32(rng.uniform(0.88, 1.0)))[..., None]


def draw_surface_conditions(
    rng: np.random.Generator, img: np.ndarray, strands: list[Strand], levels: ConditionLevels
) -> dict[str, Any]:
    """Over the hair (``img`` HxWx3 uint8 BGR at output size, in place): dandruff flakes caught
    on strands and oily shine along strands. The hair mask label is unchanged (hair under a
    flake is still hair). Returns meta."""
    h, w = img.shape[:2]
    pts = [s.points for s in strands if len(s.points)]
    allp = np.concatenate(pts) if pts else np.zeros((0, 2))
    inside = (allp[:, 0] >= 0) & (allp[:, 0] < w) & (allp[:, 1] >= 0) & (allp[:, 1] < h)
    allp = allp[inside]
    n_flakes = 0
    out = img.astype(np.float32)
    if levels.dandruff:
        out = _flakes(rng, out, allp, levels.dandruff)
        n_flakes = int(levels.dandruff)
    if levels.sebum >= 2 and strands:
        shine = np.zeros((h, w), np.float32)
        for s in strands:
            if rng.random() < 0.6:
                off = s.points + rng.normal(0, 0.3, 2)
                poly = np.round(off * 8).astype(np.int32).reshape(-1, 1, 2)
                cv2.polylines(shine, [poly], False, float(rng.uniform(0.3, 0.8)), 1, cv2.LINE_AA, 3)
        lum = 0.5 + 0.5 * np.clip(value_noise(rng, h, w, 40.0), -1, 1)  # shine comes and goes along the strand
        gain = (0.0, 0.0, 70.0, 110.0)[levels.sebum]
        out += (cv2.GaussianBlur(shine, (0, 0), 0.7) * lum * np.float32(gain))[..., None]
    img[...] = np.clip(out, 0, 255).astype(np.uint8)
    return {"flakes_on_hair": n_flakes}
