"""Write a synthetic data set to disk.

Layout under ``out``::

    images/{i:06d}.png     HxWx3 uint8 BGR frame
    masks/{i:06d}.png      HxW uint8, 255 = hair, 0 = not hair
    instances/{i:06d}.png  HxW uint16, 0 = background, k = topmost strand id
    centrelines/{i:06d}.png HxW uint8, 255 = on a strand's centre line (3 px wide, inside the mask)
    truth.jsonl            one JSON object per frame, keys TRUTH_KEYS (+ meta)
    config.json            the resolved config, n, seed, trimmed_share

Frame i is ``render_index(seed, i, config_for_index(config, i, trimmed_share))``, so any
frame can be regenerated alone and the set does not depend on the number of workers.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ._pool import map_jobs
from .config import Sample, SynthConfig
from .render import render_index

__all__ = ["TRUTH_KEYS", "write_dataset", "config_for_index", "sample_record", "centreline_mask", "strand_ends"]

TRUTH_KEYS = (
    "stem",
    "count",
    "thickness_px",
    "centres",
    "ends",
    "mode",
    "hard",
    "seed",
    "index",
    "hair_fraction",
    "dandruff_level",
    "meta",
)


def config_for_index(config: SynthConfig, index: int, trimmed_share: float | None) -> SynthConfig:
    """Mode of frame ``index`` in a mixed set: evenly spread, deterministic, a share
    ``trimmed_share`` of frames in "trimmed" mode (None: ``config`` unchanged)."""
    if trimmed_share is None:
        return config
    trimmed = math.floor((index + 1) * trimmed_share) > math.floor(index * trimmed_share)
    return replace(config, mode="trimmed" if trimmed else "scalp")


def centreline_mask(sample: Sample, width_px: int = 2) -> np.ndarray:
    """HxW uint8 {0,1}: every strand's in-frame centre line drawn ``width_px`` thick (OpenCV
    paints 3 px for 2), kept inside the hair mask. Touching strands keep separate lines, so
    counting line strands counts hairs (the target of the segmenter's instance head)."""
    lines = np.zeros(sample.mask.shape, np.uint8)
    polys = [np.round(c).astype(np.int32).reshape(-1, 1, 2) for c in sample.centrelines if len(c) >= 2]
    if polys:
        cv2.polylines(lines, polys, False, 1, width_px, cv2.LINE_8)
    return lines & sample.mask


def strand_ends(sample: Sample) -> np.ndarray:
    """(2N, 2) float32 (x, y): both ends of every strand's in-frame centre line (a tip, a
    root, or where the strand leaves the frame), two per counted hair, so a model that finds
    ends counts hairs as half their number even where strands touch or cross."""
    ends = [c[[0, -1]] for c in sample.centrelines if len(c) >= 1]
    return np.concatenate(ends).astype(np.float32) if ends else np.zeros((0, 2), np.float32)


def sample_record(sample: Sample, stem: str, seed: int, index: int) -> dict[str, Any]:
    """The truth.jsonl object of one frame (JSON-serialisable)."""
    return {
        "stem": stem,
        "count": sample.count,
        "thickness_px": [round(float(t), 3) for t in sample.thickness_px],
        "centres": [[round(float(x), 2), round(float(y), 2)] for x, y in sample.centres],
        "ends": [[round(float(x), 2), round(float(y), 2)] for x, y in strand_ends(sample)],
        "mode": sample.meta["mode"],
        "hard": bool(sample.meta["hard"]),
        "seed": int(seed),
        "index": int(index),
        "hair_fraction": sample.meta["hair_fraction"],
        "dandruff_level": sample.meta["dandruff_level"],
        "meta": sample.meta,
    }


def _write_one(job: tuple[str, int, int, SynthConfig, float | None]) -> dict[str, Any]:
    out, seed, i, config, share = job
    root = Path(out)
    sample = render_index(seed, i, config_for_index(config, i, share))
    stem = f"{i:06d}"
    cv2.imwrite(str(root / "images" / f"{stem}.png"), sample.image)
    cv2.imwrite(str(root / "masks" / f"{stem}.png"), sample.mask * np.uint8(255))
    cv2.imwrite(str(root / "instances" / f"{stem}.png"), sample.instances.astype(np.uint16))
    cv2.imwrite(str(root / "centrelines" / f"{stem}.png"), centreline_mask(sample) * np.uint8(255))
    return sample_record(sample, stem, seed, i)


def write_dataset(
    out: str | Path,
    n: int,
    seed: int,
    config: SynthConfig,
    progress: bool = True,
    workers: int = 1,
    trimmed_share: float | None = None,
) -> Path:
    """Render ``n`` frames with base ``seed`` into ``out`` (layout in the module docstring).

    ``workers`` > 1 uses a process pool (results identical to one process);
    ``trimmed_share`` mixes modes by index (see ``config_for_index``). Returns ``out``.
    """
    root = Path(out)
    for sub in ("images", "masks", "instances", "centrelines"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(
        json.dumps(
            {"config": config.resolved().to_dict(), "n": n, "seed": seed, "trimmed_share": trimmed_share}, indent=2
        )
    )
    jobs = [(str(root), seed, i, config, trimmed_share) for i in range(n)]
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=n, desc="synth", unit="frame")
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
    with open(root / "truth.jsonl", "w") as fh:
        for rec in map_jobs(_write_one, jobs, workers):
            fh.write(json.dumps(rec) + "\n")
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return root
