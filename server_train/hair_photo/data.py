"""Figaro-1k style photo sets (``images/`` + ``masks/`` with the same stems, 255 = hair), held
in memory at the network's side, with a fixed split for validation.

Split: ``server_train.hair_photo.split``. Training batches: random flips, a random
resized crop (scale 0.6-1 of the side, aspect 3:4-4:3) and brightness/contrast jitter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from device.capture.imageio import read_frame
from device.contracts.preprocess import photo_input
from server_train.hair_photo.split import split_pairs

__all__ = ["PhotoSet", "load_photos"]


@dataclass
class PhotoSet:
    """images: Nx3xSxS float32 network inputs (``photo_input``); masks: NxSxS float32 in {0, 1};
    stems: N names."""

    images: np.ndarray
    masks: np.ndarray
    stems: list[str]

    def __len__(self) -> int:
        return len(self.stems)

    def batch(self, n: int, rng: np.random.Generator, out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n augmented samples resized to ``out`` (default S): (Nx3xoutxout inputs, Nx1xoutxout
        targets in {0, 1}). A crop of ``out`` < S keeps the scale of whole photos at S while
        training costs less."""
        side = self.images.shape[-1]
        out = out or side
        xs, ys = [], []
        for i in rng.integers(0, len(self), n):
            x, y = self.images[i], self.masks[i]
            scale = rng.uniform(0.6, 1.0)
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            h = int(min(side, round(side * np.sqrt(scale / aspect))))
            w = int(min(side, round(side * np.sqrt(scale * aspect))))
            zoom = out / side  # a crop of the photo at S, at the same pixel scale (jittered by ``scale``)
            h, w = max(8, round(h * zoom)), max(8, round(w * zoom))
            y0, x0 = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
            xc = cv2.resize(x[:, y0 : y0 + h, x0 : x0 + w].transpose(1, 2, 0), (out, out)).transpose(2, 0, 1)
            yc = cv2.resize(y[y0 : y0 + h, x0 : x0 + w], (out, out), interpolation=cv2.INTER_NEAREST)
            if rng.random() < 0.5:
                xc, yc = xc[:, :, ::-1], yc[:, ::-1]
            xc = xc * rng.uniform(0.8, 1.2) + rng.uniform(-0.15, 0.15)
            xs.append(np.ascontiguousarray(xc, np.float32))
            ys.append(np.ascontiguousarray(yc, np.float32)[None])
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def load_photos(
    root: str | Path, side: int, split: str = "all", val_percent: int = 15, limit: int | None = None
) -> PhotoSet:
    """The photos of ``root`` (images/ + masks/) in ``split`` (all, train or val), resized to
    ``side``; the masks by area then thresholded at half."""
    pairs = split_pairs(root, split, val_percent)[:limit]
    if not pairs:
        raise FileNotFoundError(f"{root}: no photos in split {split!r}")
    images = np.empty((len(pairs), 3, side, side), np.float32)
    masks = np.empty((len(pairs), side, side), np.float32)
    for k, (image_path, mask_path) in enumerate(pairs):
        images[k] = photo_input(read_frame(image_path), side)[0]
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise ValueError(f"{mask_path}: unreadable mask")
        small = cv2.resize((mask > 127).astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
        masks[k] = (small >= 0.5).astype(np.float32)
    return PhotoSet(images, masks, [i.stem for i, _ in pairs])
