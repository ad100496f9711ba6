"""Real scalp frames with the hair removed, for use as backgrounds.

Hair is found with a morphological black-hat on the grey image (dark thin structures),
thresholded, dilated, then filled by ``cv2.inpaint`` (Telea). Results are cached per file
in memory (a process-local LRU), because inpainting costs far more than rendering.
Light hair is not removed by the black-hat; such leftovers are unlabelled hair, so keep
``p_background_real`` moderate.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

__all__ = ["list_backgrounds", "remove_hair", "load_background", "real_background"]

_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}


@lru_cache(maxsize=16)
def list_backgrounds(folder: str) -> tuple[str, ...]:
    """Sorted image paths (recursive) under ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"backgrounds folder not found: {folder}")
    return tuple(sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in _EXTS))


def remove_hair(img: np.ndarray, kernel: int = 31, thresh: float = 12.0) -> tuple[np.ndarray, float]:
    """Remove dark hair from an HxWx3 uint8 BGR frame (at about half resolution).

    Black-hat mask (dark structures narrower than ``kernel`` px) -> ``cv2.inpaint``
    (Telea) -> grey closing and median to erase leftover thin dark lines -> smoothing.
    What remains is the skin's colour and illumination field; fine texture is lost and
    is put back procedurally by the renderer. Returns (HxWx3 uint8, masked fraction).
    """
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    bh = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, k)
    level = max(thresh, float(bh.mean() + bh.std()))  # adapt to textured skin
    mask = (bh > level).astype(np.uint8)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
    out = cv2.inpaint(img, mask * 255, 5, cv2.INPAINT_TELEA)
    close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel // 2 | 1, kernel // 2 | 1))
    out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, close)
    out = cv2.medianBlur(out, 7)
    out = cv2.GaussianBlur(out, (0, 0), 2.0)
    return out, float(mask.mean())


@lru_cache(maxsize=512)
def load_background(path: str, h: int, w: int) -> tuple[np.ndarray, float]:
    """Hair-free HxWx3 uint8 BGR version of the frame at ``path`` and the fraction of it
    that was inpainted (cached per (path, size); the array is read-only)."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {path}")
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    out, frac = remove_hair(img)
    out.setflags(write=False)
    return out, frac


def real_background(
    rng: np.random.Generator, folder: str, h: int, w: int, max_inpainted: float = 0.3, max_tries: int = 6
) -> tuple[np.ndarray, str]:
    """A random hair-free real background, flipped/zoomed; (HxWx3 float32 BGR, file name).

    Prefers frames where at most ``max_inpainted`` of the pixels had to be inpainted.
    """
    paths = list_backgrounds(folder)
    if not paths:
        raise FileNotFoundError(f"no images in {folder}")
    # frames that were mostly hair make poor backgrounds: try a few others first
    for _ in range(max_tries):
        path = paths[int(rng.integers(len(paths)))]
        img, frac = load_background(path, h, w)
        if frac <= max_inpainted:
            break
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1]
    z = rng.uniform(1.0, 1.5)
    if z > 1.05:
        ch, cw = int(h / z), int(w / z)
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        img = cv2.resize(np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw]), (w, h), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img).astype(np.float32), Path(path).name
