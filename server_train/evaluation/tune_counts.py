"""Choose the centre-line threshold and minimum strand length for hair counting on a
synthetic validation set (label-free with respect to real data): sweep both, report the
count error per setting and per mode, and the best setting."""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from device.measure.hair_metrics import split_strands
from device.models.segmentation import Segmenter

__all__ = ["tune_line_counts"]


def tune_line_counts(
    segmenter: Segmenter,
    root: str | Path,
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7),
    min_lengths: tuple[float, ...] = (6.0, 10.0, 15.0, 20.0, 30.0),
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """{"settings": [{threshold, min_strand_px, count_mae, count_mae_by_mode}], "best": ...}.
    ``root`` is a folder written by ``scalpedge synth`` (images/, truth.jsonl)."""
    root = Path(root)
    rows = [json.loads(line) for line in (root / "truth.jsonl").read_text().splitlines() if line.strip()][:limit]
    errors: dict[tuple[float, float], list[tuple[str, int]]] = {k: [] for k in product(thresholds, min_lengths)}
    for row in tqdm(rows, disable=not progress, desc="tune counts"):
        image = cv2.imread(str(root / "images" / f"{row['stem']}.png"), cv2.IMREAD_COLOR)
        out = segmenter.segment(image)
        if out.lines is None:
            raise ValueError(f"{getattr(segmenter, 'name', segmenter)} has no centre-line output")
        mask = out.mask()
        for t, ml in errors:
            n = len(split_strands((out.lines >= t) & mask, min_length_px=ml))
            errors[(t, ml)].append((row["mode"], n - row["count"]))
    settings = []
    for (t, ml), errs in errors.items():
        e = np.array([d for _, d in errs], float)
        by_mode = {m: float(np.abs([d for mm, d in errs if mm == m]).mean()) for m in sorted({mm for mm, _ in errs})}
        settings.append(
            {
                "threshold": t,
                "min_strand_px": ml,
                "count_mae": float(np.abs(e).mean()),
                "count_bias": float(e.mean()),
                "count_mae_by_mode": by_mode,
            }
        )
    best = min(settings, key=lambda s: s["count_mae"])
    return {"data": str(root), "frames": len(rows), "settings": settings, "best": best}
