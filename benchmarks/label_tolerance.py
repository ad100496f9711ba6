"""How much Dice a one-pixel boundary error costs on a segmentation set.

Scores each ground-truth mask against itself grown (3x3 cross or square), shrunk (3x3 cross)
or shifted by one pixel, pooled over the frames like ``scalpedge eval seg``. On a set of
1-2 px strands these numbers bound what "Dice" can mean: a model whose every boundary is off
by one pixel scores about the ``grow_cross`` figure.

    .venv/bin/python benchmarks/label_tolerance.py --data data/heldout --out benchmarks/reports/label_tolerance.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
SQUARE = np.ones((3, 3), np.uint8)


def variants(mask: np.ndarray) -> dict[str, np.ndarray]:
    """HxW bool -> one-pixel perturbations of it (HxW bool each)."""
    m = mask.astype(np.uint8)
    return {
        "grow_cross": cv2.dilate(m, CROSS) > 0,
        "grow_square": cv2.dilate(m, SQUARE) > 0,
        "shrink_cross": cv2.erode(m, CROSS) > 0,
        "shift_x": np.roll(mask, 1, axis=1),
        "shift_y": np.roll(mask, 1, axis=0),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with masks/*.png (255 = hair)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    files = sorted(Path(args.data, "masks").glob("*.png"))
    if not files:
        raise SystemExit(f"no masks in {args.data}/masks")
    inter: dict[str, int] = {}
    total: dict[str, int] = {}
    for f in files:
        gt = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 127
        for name, v in variants(gt).items():
            inter[name] = inter.get(name, 0) + int((v & gt).sum())
            total[name] = total.get(name, 0) + int(v.sum() + gt.sum())
    report = {
        "data": args.data,
        "frames": len(files),
        "dice_vs_truth": {k: round(2 * inter[k] / max(total[k], 1), 4) for k in inter},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
