"""Contact sheet of a segmenter's masks on real frames (no labels needed): each tile shows the
frame and its overlay side by side."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.app.analysis import analyse_frame
from device.capture.imageio import list_images, read_frame
from device.models.segmentation import Segmenter

__all__ = ["mask_sheet"]


def mask_sheet(
    segmenter: Segmenter, folder: str | Path, out_png: str | Path, n: int = 12, cols: int = 3, tile: int = 320
) -> Path:
    """Write a PNG grid of (frame | overlay) pairs for ``n`` frames spread evenly over ``folder``."""
    paths = list_images([folder])
    picks = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(n, len(paths)))]
    tiles = []
    for path in picks:
        frame = read_frame(path)
        result = analyse_frame(segmenter, frame)
        size = (tile, int(tile * 0.75))
        overlay = result.overlay()[: result.frame.shape[0]]  # the frame part, without its label bar
        pair = np.hstack([cv2.resize(result.frame, size), cv2.resize(overlay, size)])
        tiles.append(pair)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)]
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), np.vstack(rows))
    return out_png
