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
from server_train.training.condition_maps import YOLO_CONDITION_CLASSES, condition_maps

__all__ = [
    "YOLO_CONDITION_CLASSES",
    "LabelSet",
    "read_yolo_conditions",
    "load_synthetic",
    "load_real",
    "FeatureCache",
    "build_cache",
    "apply_variant",
    "flip_code",
]

_AREA_GRID = 160  # polygons are rasterised on this square grid to measure their area share


@dataclass
class LabelSet:
    """paths: N image files; levels: Nx3 int64 (-1 unknown); presence: Nx3 float32;
    area: Nx3 float32 (NaN unknown); maps: N x 3 x h x w float32 polygon coverage per cell
    (None: no pixel labels)."""

    paths: list[Path]
    levels: np.ndarray
    presence: np.ndarray
    area: np.ndarray
    maps: np.ndarray | None = None

    def take(self, keep: np.ndarray) -> LabelSet:
        """The frames where the N bool ``keep`` is True."""
        idx = np.flatnonzero(keep)
        maps = None if self.maps is None else self.maps[idx]
        return LabelSet([self.paths[i] for i in idx], self.levels[idx], self.presence[idx], self.area[idx], maps)


def read_yolo_conditions(label_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """YOLO-seg label file -> (presence (3,) float32 {0,1}, area share (3,) float32 in [0, 1]).

    A missing or empty file means no condition. Lines with fewer than 3 points are ignored
    for the area but still count as presence."""
    presence, maps = condition_maps(label_path, _AREA_GRID, _AREA_GRID, supersample=1)
    return presence, maps.reshape(len(CONDITION_NAMES), -1).mean(1).astype(np.float32)


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


def load_real(folder: str | Path, map_size: tuple[int, int] | None = None) -> LabelSet:
    """Labels of a folder with ``images/`` and YOLO-seg ``labels/`` (same stems); with
    ``map_size`` (h, w) also the per-condition polygon maps at that grid."""
    root = Path(folder)
    paths = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images in {root / 'images'}")
    pres, area = zip(*(read_yolo_conditions(root / "labels" / f"{p.stem}.txt") for p in paths), strict=True)
    maps = None
    if map_size is not None:
        maps = np.stack([condition_maps(root / "labels" / f"{p.stem}.txt", *map_size)[1] for p in paths])
    return LabelSet(
        paths=paths,
        levels=np.full((len(paths), len(CONDITION_NAMES)), -1, np.int64),
        presence=np.stack(pres),
        area=np.stack(area),
        maps=maps,
    )


FLIPS = {"none": None, "h": 1, "v": 0, "hv": -1}


def flip_code(variant: str) -> int | None:
    """cv2.flip code of a cache variant ``"<flip>"`` or ``"<flip>+c<k>"`` (None: no flip)."""
    return FLIPS[variant.split("+")[0]]


def apply_variant(frame: np.ndarray, variant: str, index: int) -> np.ndarray:
    """HxWx3 uint8 BGR -> the cache ``variant`` of frame ``index``: a flip (``FLIPS``), then with
    ``+c<k>`` a colour jitter seeded by (k, index): brightness and contrast x0.8..1.2,
    saturation x0.75..1.25, hue +-4 degrees."""
    code = flip_code(variant)
    out = frame if code is None else cv2.flip(frame, code)
    if "+c" not in variant:
        return out
    rng = np.random.default_rng([int(variant.split("+c")[1]), index])
    gain, contrast, sat, hue = rng.uniform([0.8, 0.8, 0.75, -2.0], [1.2, 1.2, 1.25, 2.0])
    hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + hue) % 180
    hsv[..., 1] *= sat
    img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    img = (img - img.mean()) * contrast + img.mean() * gain
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class FeatureCache:
    """feats: N x V x C x h x w float16 prefix features (V variants: flips and colour jitter,
    ``apply_variant``), labels alongside."""

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
    """Run ``backbone.forward_until(x, split)`` (eval mode, no grad) on every image and variant
    (``apply_variant``), caching to ``path`` (.npy, float16). An existing cache with the same image count,
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
                xs = [prepare_condition_input(apply_variant(fr, f, i + j)) for j, fr in enumerate(frames)]
                per_flip.append(backbone.forward_until(torch.from_numpy(np.concatenate(xs)), split))  # type: ignore[operator]
            chunks.append(torch.stack(per_flip, 1).to(torch.float16).numpy())
    feats = np.concatenate(chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, feats)
    meta_path.write_text(json.dumps(meta))
    return FeatureCache(feats, labels, split, flips)
