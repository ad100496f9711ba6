"""Labels and cached backbone features for the condition classifier.

Two sources:
- synthetic sets from ``scalpedge synth --conditions`` (``images/*.jpg`` + ``labels.jsonl``):
  levels 0..3 per condition, presence = level > 0, area share unknown (NaN);
- real frames laid out like ``scalp-microscope/train`` (``images/``, YOLO-seg ``labels/``, class
  ids 0..3 = d, ds, o, s): presence and area share per condition from the polygons
  (dandruff = d or ds, sebum/oiliness = o, erythema/sensitive = s or ds), levels unknown (-1).

The frozen prefix of the backbone (stem and blocks before ``split``) is run once per image and
flip variant and cached as float16 (``FeatureCache``), so training runs only the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from device.capture.imageio import IMAGE_SUFFIXES, read_frame
from device.contracts.constants import CONDITION_NAMES
from device.models.classifiers import prepare_condition_input

__all__ = [
    "YOLO_CONDITION_CLASSES",
    "LabelSet",
    "read_yolo_conditions",
    "load_synthetic",
    "load_real",
    "FeatureCache",
    "build_cache",
]

# condition index (CONDITION_NAMES order) -> YOLO class ids of scalp-microscope (0 d, 1 ds, 2 o, 3 s)
YOLO_CONDITION_CLASSES: tuple[frozenset[int], ...] = (frozenset({0, 1}), frozenset({2}), frozenset({1, 3}))
_AREA_GRID = 160  # polygons are rasterised on this square grid to measure their area share


@dataclass
class LabelSet:
    """paths: N image files; levels: Nx3 int64 (-1 unknown); presence: Nx3 float32;
    area: Nx3 float32 (NaN unknown)."""

    paths: list[Path]
    levels: np.ndarray
    presence: np.ndarray
    area: np.ndarray


def read_yolo_conditions(label_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """YOLO-seg label file -> (presence (3,) float32 {0,1}, area share (3,) float32 in [0, 1]).

    A missing or empty file means no condition. Lines with fewer than 3 points are ignored
    for the area but still count as presence."""
    masks = np.zeros((len(CONDITION_NAMES), _AREA_GRID, _AREA_GRID), np.uint8)
    presence = np.zeros(len(CONDITION_NAMES), np.float32)
    path = Path(label_path)
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        cls = int(parts[0])
        xy = np.asarray(parts[1:], np.float64)
        for c, ids in enumerate(YOLO_CONDITION_CLASSES):
            if cls in ids:
                presence[c] = 1.0
                if len(xy) >= 6:
                    pts = np.round(xy[: len(xy) // 2 * 2].reshape(-1, 2) * _AREA_GRID).astype(np.int32)
                    cv2.fillPoly(masks[c], [pts], 1)
    return presence, masks.reshape(len(CONDITION_NAMES), -1).mean(1).astype(np.float32)


def load_synthetic(folder: str | Path) -> LabelSet:
    """Labels of a ``scalpedge synth --conditions`` folder."""
    root = Path(folder)
    recs = [json.loads(line) for line in (root / "labels.jsonl").read_text().splitlines() if line.strip()]
    levels = np.asarray([[r[c] for c in CONDITION_NAMES] for r in recs], np.int64).reshape(-1, len(CONDITION_NAMES))
    return LabelSet(
        paths=[root / "images" / f"{r['stem']}.jpg" for r in recs],
        levels=levels,
        presence=(levels > 0).astype(np.float32),
        area=np.full(levels.shape, np.nan, np.float32),
    )


def load_real(folder: str | Path) -> LabelSet:
    """Labels of a folder with ``images/`` and YOLO-seg ``labels/`` (same stems)."""
    root = Path(folder)
    paths = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images in {root / 'images'}")
    pres, area = zip(*(read_yolo_conditions(root / "labels" / f"{p.stem}.txt") for p in paths), strict=True)
    return LabelSet(
        paths=paths,
        levels=np.full((len(paths), len(CONDITION_NAMES)), -1, np.int64),
        presence=np.stack(pres),
        area=np.stack(area),
    )


FLIPS = {"none": None, "h": 1, "v": 0, "hv": -1}


@dataclass
class FeatureCache:
    """feats: N x V x C x h x w float16 prefix features (V flip variants), labels alongside."""

    feats: np.ndarray
    labels: LabelSet
    split: int
    flips: tuple[str, ...]


def build_cache(
    backbone: torch.nn.Module,
    labels: LabelSet,
    split: int,
    flips: tuple[str, ...],
    path: str | Path,
    batch: int = 16,
) -> FeatureCache:
    """Run ``backbone.forward_until(x, split)`` (eval mode, no grad) on every image and flip
    variant, caching to ``path`` (.npy, float16). An existing cache with the same image count,
    split and flips (``path``.json) is reused."""
    path = Path(path)
    meta = {"n": len(labels.paths), "split": split, "flips": list(flips), "first": str(labels.paths[0])}
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return FeatureCache(np.load(path, mmap_mode="r"), labels, split, flips)
    backbone.eval()
    chunks = []
    with torch.no_grad():
        for i in range(0, len(labels.paths), batch):
            frames = [read_frame(p) for p in labels.paths[i : i + batch]]
            per_flip = []
            for f in flips:
                code = FLIPS[f]
                xs = [prepare_condition_input(fr if code is None else cv2.flip(fr, code)) for fr in frames]
                per_flip.append(backbone.forward_until(torch.from_numpy(np.concatenate(xs)), split))  # type: ignore[operator]
            chunks.append(torch.stack(per_flip, 1).to(torch.float16).numpy())
    feats = np.concatenate(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    meta_path.write_text(json.dumps(meta))
    return FeatureCache(feats, labels, split, flips)
