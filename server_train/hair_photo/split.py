"""The hair-photo runs' validation split (torch-free: evaluation uses it too).

A photo goes to ``val`` when the first 32 bits of the sha256 of its stem, modulo 100, fall below
``val_percent``: stable across machines and runs, whatever else is in the folder. Figaro photos
show different people, so a per-photo split is subject-disjoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from server_train.evaluation.seg_eval import paired_frames

__all__ = ["VAL_PERCENT", "in_val", "split_pairs"]

VAL_PERCENT = 15  # default share of photos held out for validation


def in_val(stem: str, val_percent: int = VAL_PERCENT) -> bool:
    """True when the photo ``stem`` belongs to the validation split."""
    digest = int(hashlib.sha256(stem.encode()).hexdigest()[:8], 16)
    return digest % 100 < val_percent


def split_pairs(root: str | Path, split: str = "all", val_percent: int = VAL_PERCENT) -> list[tuple[Path, Path]]:
    """(photo, mask) pairs of ``root`` (images/ + masks/, same stems) in ``split``: all, train or val."""
    if split not in ("all", "train", "val"):
        raise ValueError(f"split must be all, train or val, not {split!r}")
    pairs = paired_frames(Path(root))
    return [(i, m) for i, m in pairs if split == "all" or in_val(i.stem, val_percent) == (split == "val")]
