"""Write a labelled classification data set of synthetic frames with scalp conditions.

Layout under ``out``::

    images/{i:06d}.jpg   HxWx3 uint8 BGR frame (JPEG quality 92), the frame size of the config
    labels.jsonl         one JSON object per frame: stem, dandruff, sebum, erythema, hair_loss
                         (levels 0..3), hair truth (count, thickness_px stats, thin ratio), seed, index
    config.json          resolved base config, n, seed, sampling

Frame i: levels ``sample_levels(default_rng([seed, i, LABEL_STREAM]), sampling)``, image
``render_index(seed, i, config, conditions=levels)``; so any frame can be regenerated alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ._pool import map_jobs
from .conditions import ConditionLevels, sample_levels
from .config import SynthConfig
from .render import render_index

__all__ = ["write_condition_dataset", "levels_for_index", "LABEL_KEYS", "LABEL_STREAM", "THIN_PX"]

LABEL_STREAM = 104729  # third rng key of the label draw (independent of the image stream)
LABEL_KEYS = ("stem", "dandruff", "sebum", "erythema", "hair_loss", "count", "thickness_px_median", "thin_ratio")
THIN_PX = 3.0  # strands drawn thinner than this (px at 640x480) count as thin in the truth


def levels_for_index(seed: int, index: int, sampling: str) -> ConditionLevels:
    """The label set of frame ``index`` of a data set with base ``seed``."""
    return sample_levels(np.random.default_rng([seed, index, LABEL_STREAM]), sampling)


def _write_one(job: tuple[str, int, int, SynthConfig, str]) -> dict[str, Any]:
    out, seed, i, config, sampling = job
    levels = levels_for_index(seed, i, sampling)
    sample = render_index(seed, i, config, conditions=levels)
    stem = f"{i:06d}"
    cv2.imwrite(str(Path(out) / "images" / f"{stem}.jpg"), sample.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    t = sample.thickness_px
    return {
        "stem": stem,
        **levels.to_dict(),
        "count": sample.count,
        "thickness_px_median": round(float(np.median(t)), 3) if len(t) else None,
        "thin_ratio": round(float(np.mean(t < THIN_PX)), 4) if len(t) else None,
        "hair_fraction": sample.meta["hair_fraction"],
        "mode": sample.meta["mode"],
        "seed": seed,
        "index": i,
    }


def write_condition_dataset(
    out: str | Path, n: int, seed: int, config: SynthConfig, sampling: str = "aihub", workers: int = 1
) -> Path:
    """Render ``n`` labelled condition frames into ``out`` (layout in the module docstring).

    ``sampling``: "aihub" (level shares of the AI-Hub tables) or "uniform". Returns ``out``.
    """
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    info = {"config": config.resolved().to_dict(), "n": n, "seed": seed, "sampling": sampling}
    (root / "config.json").write_text(json.dumps(info, indent=2))
    jobs = [(str(root), seed, i, config, sampling) for i in range(n)]
    with open(root / "labels.jsonl", "w") as fh:
        for rec in map_jobs(_write_one, jobs, workers):
            fh.write(json.dumps(rec) + "\n")
    return root
