"""Training frames for the scalp diffusion model, held in memory as small uint8 squares.

Sources (one folder each, kind detected from its layout):
- ``synth``: a ``scalpedge synth --conditions`` set (``labels.jsonl`` + ``images/``): the
  rendered levels 0..3 of dandruff, sebum, erythema;
- ``real``: ``images/`` + YOLO-seg ``labels/`` like ``scalp-microscope/train``: frame levels
  derived from the polygons' area share per condition (``levels_from_area``);
- ``trichoscopy``: ``images/`` + VOC ``annotations/`` like ``follicle-counts/train``: the top
  40 px (burned-in text bar) cut off, condition unknown (null levels: unconditional);
- ``plain``: any other folder of images: null levels.

Every frame is resized (area) to ``load`` x ``load`` RGB (aspect not preserved, as the
microscope frames are already stretched to a square); ``batch`` takes random ``size`` crops
with flips, as Nx3xsizexsize float32 in [-1, 1].
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
from server_train.training.classifier_data import load_real, load_synthetic

__all__ = ["FrameSet", "detect_kind", "levels_from_area", "load_frames", "to_tensor", "to_bgr", "AREA_LEVELS"]

TEXT_BAR_PX = 40  # trichoscopy frames carry a text bar across the top
AREA_LEVELS = (0.03, 0.12)  # polygon area share: < 3% mild, < 12% moderate, else severe


@dataclass
class FrameSet:
    """images: N x load x load x 3 uint8 RGB; levels: Nx3 int64 (-1 unknown); paths; kinds."""

    images: np.ndarray
    levels: np.ndarray
    paths: list[str]
    kinds: list[str]

    def batch(self, n: int, size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n random crops (Nx3xsizexsize, [-1, 1]) with random h/v flips, and their Nx3 levels."""
        idx = rng.integers(0, len(self.images), n)
        load = self.images.shape[1]
        crops = []
        for i in idx:
            y, x = rng.integers(0, load - size + 1, 2)
            c = self.images[i, y : y + size, x : x + size]
            if rng.random() < 0.5:
                c = c[:, ::-1]
            if rng.random() < 0.5:
                c = c[::-1]
            crops.append(c)
        x_np = np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
        return torch.from_numpy(np.ascontiguousarray(x_np)), torch.from_numpy(self.levels[idx])


def detect_kind(folder: Path) -> str:
    """The folder's kind from its layout: synth, real, trichoscopy or plain."""
    if (folder / "labels.jsonl").is_file():
        return "synth"
    if (folder / "images").is_dir() and (folder / "labels").is_dir():
        return "real"
    if (folder / "images").is_dir() and (folder / "annotations").is_dir():
        return "trichoscopy"
    if folder.is_dir():
        return "plain"
    raise FileNotFoundError(f"no data folder {folder}")


def levels_from_area(presence: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Nx3 presence {0,1} and polygon area share -> Nx3 int64 levels: 0 absent, then 1/2/3 by
    ``AREA_LEVELS``."""
    lv = 1 + (area >= AREA_LEVELS[0]).astype(np.int64) + (area >= AREA_LEVELS[1]).astype(np.int64)
    return np.where(presence > 0, lv, 0).astype(np.int64)


def to_tensor(frame_bgr: np.ndarray, size: int) -> torch.Tensor:
    """HxWx3 uint8 BGR -> 1x3xsizexsize float32 RGB in [-1, 1] (area resize)."""
    small = cv2.resize(frame_bgr, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(small.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0))[None]


def to_bgr(x: torch.Tensor) -> np.ndarray:
    """1x3xHxW (or 3xHxW) float in [-1, 1] RGB -> HxWx3 uint8 BGR."""
    a = x.detach().reshape(3, *x.shape[-2:]).clamp(-1, 1).add(1).mul(127.5).round().byte().numpy()
    return np.ascontiguousarray(a.transpose(1, 2, 0)[:, :, ::-1])


def _listing(folder: Path, kind: str) -> tuple[list[Path], np.ndarray]:
    n_cond = len(CONDITION_NAMES)
    if kind == "synth":
        s = load_synthetic(folder)
        return s.paths, s.levels
    if kind == "real":
        r = load_real(folder)
        return r.paths, levels_from_area(r.presence, r.area)
    root = folder / "images" if kind == "trichoscopy" else folder
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return paths, np.full((len(paths), n_cond), -1, np.int64)


def load_frames(folders: list[str], load: int, limit: int | None = None) -> FrameSet:
    """Read every folder (first ``limit`` frames of each) into a ``FrameSet`` of ``load``-pixel
    squares."""
    images, levels, paths, kinds = [], [], [], []
    for f in folders:
        folder = Path(f)
        kind = detect_kind(folder)
        files, lv = _listing(folder, kind)
        if not files:
            raise FileNotFoundError(f"no images in {folder}")
        files, lv = files[:limit], lv[:limit]
        for p in files:
            frame = read_frame(p)
            if kind == "trichoscopy":
                frame = frame[TEXT_BAR_PX:]
            images.append(cv2.resize(frame, (load, load), interpolation=cv2.INTER_AREA)[:, :, ::-1])
        levels.append(lv)
        paths += [str(p) for p in files]
        kinds += [kind] * len(files)
    if not images:
        raise ValueError("no training frames: give --data folders")
    return FrameSet(np.ascontiguousarray(np.stack(images)), np.concatenate(levels), paths, kinds)


def read_jsonl(path: Path) -> list[dict[str, object]]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
