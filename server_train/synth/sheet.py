"""Contact sheets: tile frames (synthetic samples, arrays or image files) into one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .config import Sample

__all__ = ["contact_sheet"]

Item = Sample | np.ndarray | str | Path


def _as_image(item: Item) -> np.ndarray:
    if isinstance(item, Sample):
        return item.image
    if isinstance(item, np.ndarray):
        return item if item.ndim == 3 else cv2.cvtColor(item, cv2.COLOR_GRAY2BGR)
    img = cv2.imread(str(item), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read {item}")
    return img


def contact_sheet(
    samples_or_paths: Sequence[Item],
    out_png: str | Path,
    cols: int = 4,
    tile: tuple[int, int] = (320, 240),
    captions: Sequence[str] | None = None,
    overlay_masks: bool = False,
) -> Path:
    """Tile frames into a ``cols``-wide grid of ``tile`` (w, h) cells and write a PNG.

    Items are ``Sample`` objects, HxW(x3) uint8 arrays or image paths (BGR). With
    ``overlay_masks`` a Sample's mask is drawn as a green outline. Returns the path.
    """
    if not samples_or_paths:
        raise ValueError("nothing to tile")
    tw, th = tile
    cells = []
    for k, item in enumerate(samples_or_paths):
        img = cv2.resize(_as_image(item), (tw, th), interpolation=cv2.INTER_AREA)
        if overlay_masks and isinstance(item, Sample):
            m = cv2.resize(item.mask, (tw, th), interpolation=cv2.INTER_NEAREST)
            edge = cv2.morphologyEx(m, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
            img = img.copy()
            img[edge] = (0, 255, 0)
        if captions is not None and k < len(captions):
            img = img.copy()
            cv2.putText(img, captions[k], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(img, captions[k], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(img)
    rows = (len(cells) + cols - 1) // cols
    sheet = np.full((rows * th, cols * tw, 3), 255, np.uint8)
    for k, img in enumerate(cells):
        r, c = divmod(k, cols)
        sheet[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = img
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet):
        raise OSError(f"cannot write {out}")
    return out
