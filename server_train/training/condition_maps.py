"""Per-condition target maps from YOLO-seg polygons, and the split of real frames by original.

``scalp-microscope`` labels are YOLO-seg polygons (normalised x, y pairs) with class ids 0..3 =
d, ds, o, s. ``condition_maps`` rasterises them into one soft map per condition
(``CONDITION_NAMES`` order: dandruff = d|ds, sebum/oiliness = o, erythema/sensitive = s|ds) at
any grid size: each cell holds the share of it the polygons cover, in [0, 1] (rasterised at
``supersample`` times the grid, then area-averaged).

The training set holds every original frame three times (Roboflow augmentations
``<original>_jpg.rf.<hash>.jpg``); ``holdout_mask`` puts all augmentations of one original on the
same side of a split, chosen by the sha256 of the original's name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from device.contracts.constants import CONDITION_NAMES

__all__ = ["YOLO_CONDITION_CLASSES", "condition_maps", "fold_range", "original_name", "holdout_mask"]

# condition index (CONDITION_NAMES order) -> YOLO class ids of scalp-microscope (0 d, 1 ds, 2 o, 3 s)
YOLO_CONDITION_CLASSES: tuple[frozenset[int], ...] = (frozenset({0, 1}), frozenset({2}), frozenset({1, 3}))
_ROBOFLOW = re.compile(r"^(?P<orig>.+)_(?:jpe?g|png|bmp)\.rf\.[0-9a-fA-F]+$")


def condition_maps(
    label_path: str | Path, height: int, width: int, supersample: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """YOLO-seg label file -> (presence (3,) float32 {0, 1}, maps 3 x ``height`` x ``width``
    float32: share of each cell covered by the condition's polygons, in [0, 1]).

    A missing or empty file means no condition. A polygon with fewer than 3 points counts for
    presence but draws nothing. Fills include their right and bottom edge pixels (cv2), so a
    cell may read up to 1 / ``supersample`` more than its true share."""
    s = max(1, supersample)
    fine = np.zeros((len(CONDITION_NAMES), height * s, width * s), np.uint8)
    presence = np.zeros(len(CONDITION_NAMES), np.float32)
    path = Path(label_path)
    for line in path.read_text().splitlines() if path.is_file() else []:
        parts = line.split()
        if not parts:
            continue
        cls = int(parts[0])
        xy = np.asarray(parts[1:], np.float64)
        xy = xy[: len(xy) // 2 * 2].reshape(-1, 2) * (width * s, height * s)
        for c, ids in enumerate(YOLO_CONDITION_CLASSES):
            if cls in ids:
                presence[c] = 1.0
                if len(xy) >= 3:
                    cv2.fillPoly(fine[c], [np.round(xy).astype(np.int32)], 1)
    maps = fine.reshape(len(CONDITION_NAMES), height, s, width, s).mean(axis=(2, 4), dtype=np.float32)
    return presence, maps


def original_name(path: str | Path) -> str:
    """The original frame a (Roboflow-augmented) file comes from: ``D_100_jpg.rf.4e9f...jpg``
    -> ``D_100``; a name without the augmentation suffix is its own original (its stem)."""
    stem = Path(path).stem
    m = _ROBOFLOW.match(stem)
    return m.group("orig") if m else stem


def holdout_mask(paths: Sequence[str | Path], share: float, salt: str = "", start: float = 0.0) -> np.ndarray:
    """N bool: True for the files whose original falls in the held-out ``share`` (0..1), decided
    by sha256(salt + original name) so that a file's side never depends on the other files.

    The original's hash maps to a number u in [0, 1); it is held out when ``start`` <= u <
    ``start + share``, so fold k of K is ``start = k / K``, ``share = 1 / K``."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"held-out share must be in [0, 1), got {share}")
    if not 0.0 <= start < 1.0 or start + share > 1.0 + 1e-9:
        raise ValueError(f"held-out range [{start}, {start + share}) must lie in [0, 1]")

    def unit(name: str) -> float:
        return int.from_bytes(hashlib.sha256((salt + name).encode()).digest()[:8], "big") / 2.0**64

    return np.asarray([start <= unit(original_name(p)) < start + share for p in paths], bool)


def fold_range(fold: str) -> tuple[float, float]:
    """``"k/K"`` (0 <= k < K) -> (start, share) of ``holdout_mask`` for fold k of K."""
    try:
        k, n = (int(v) for v in fold.split("/"))
    except ValueError:
        raise ValueError(f"fold must read k/K, e.g. 0/5, got {fold!r}") from None
    if not (n >= 2 and 0 <= k < n):
        raise ValueError(f"fold {fold!r}: need K >= 2 and 0 <= k < K")
    return k / n, 1.0 / n
