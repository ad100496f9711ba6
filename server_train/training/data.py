"""Training data: a folder written by ``scalpedge synth`` turned into random crops with
targets (hair mask plus one instance target: per-hair centre heatmap, centre lines, or the
density of strand ends), plus the shared preprocessing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from device.contracts.constants import END_DENSITY_SCALE, END_SIGMA_PX
from device.contracts.preprocess import to_tensor_layout

__all__ = ["SegFolder", "centre_heatmap", "end_density", "border_ends", "CropConfig", "TARGETS"]


_Window = tuple[slice, slice]


def _windows(
    points: np.ndarray, radius: int, height: int, width: int
) -> Iterator[tuple[float, float, int, int, _Window, _Window]]:
    """For each (x, y) point: (rounded x, rounded y, frame window (y0, y1, x0, x1), kernel
    window (same shape) into a (2r+1)^2 kernel centred on the rounded point). Points whose
    window misses the frame are skipped."""
    for cx, cy in np.asarray(points, np.float32).reshape(-1, 2):
        ix, iy = int(round(float(cx))), int(round(float(cy)))
        x0, x1 = max(ix - radius, 0), min(ix + radius + 1, width)
        y0, y1 = max(iy - radius, 0), min(iy + radius + 1, height)
        if x0 < x1 and y0 < y1:
            kernel = (slice(y0 - iy + radius, y1 - iy + radius), slice(x0 - ix + radius, x1 - ix + radius))
            yield float(cx), float(cy), ix, iy, (slice(y0, y1), slice(x0, x1)), kernel


def centre_heatmap(centres: np.ndarray, height: int, width: int, sigma: float = 2.0) -> np.ndarray:
    """HxW float32 in [0, 1]: a Gaussian of std ``sigma`` px centred on the pixel nearest each
    (x, y) centre (max-merged), so every centre has exactly one pixel at 1.0 (the positive of
    the focal loss, as in CenterNet)."""
    heat = np.zeros((height, width), np.float32)
    radius = int(3 * sigma + 1)
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    g = np.exp(-(xs**2 + ys**2) / (2 * sigma**2)).astype(np.float32)
    for _, _, _, _, win, ker in _windows(centres, radius, height, width):
        np.maximum(heat[win], g[ker], out=heat[win])
    return heat


def end_density(
    ends: np.ndarray, height: int, width: int, sigma: float = END_SIGMA_PX, scale: float = END_DENSITY_SCALE
) -> np.ndarray:
    """HxW float32: a Gaussian of std ``sigma`` px at every (x, y) end, each cut to the frame
    and renormalised to mass ``scale`` (so ends on the border keep their full weight), summed.
    ``map.sum() / scale`` is the number of ends; half of it is the number of strands."""
    dens = np.zeros((height, width), np.float32)
    radius = int(3 * sigma + 1)
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    for cx, cy, ix, iy, win, ker in _windows(ends, radius, height, width):
        dx, dy = xs[ker] + (ix - cx), ys[ker] + (iy - cy)  # sub-pixel centre
        g = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
        dens[win] += (scale * g / g.sum()).astype(np.float32)
    return dens


def border_ends(lines: np.ndarray) -> np.ndarray:
    """(M, 2) float32 (x, y): where centre lines (HxW {0,1}) cross the frame's edge, one end
    per run of line pixels along the 1-px border ring (a crop cuts every strand it crosses)."""
    h, w = lines.shape
    # The ring walked clockwise as one sequence, so runs through the corners stay whole.
    ring_xy = np.concatenate(
        [
            np.stack([np.arange(w), np.zeros(w, int)], 1),
            np.stack([np.full(h - 2, w - 1), np.arange(1, h - 1)], 1),
            np.stack([np.arange(w - 1, -1, -1), np.full(w, h - 1)], 1),
            np.stack([np.zeros(h - 2, int), np.arange(h - 2, 0, -1)], 1),
        ]
    )
    on = lines[ring_xy[:, 1], ring_xy[:, 0]] > 0
    if not on.any():
        return np.zeros((0, 2), np.float32)
    if on.all():
        return ring_xy[:1].astype(np.float32)
    start = int(np.flatnonzero(~on)[0])  # rotate so no run wraps around the end
    on, ring_xy = np.roll(on, -start), np.roll(ring_xy, -start, axis=0)
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    mids = (starts + stops - 1) // 2
    return ring_xy[mids].astype(np.float32)


@dataclass(frozen=True)
class CropConfig:
    """Random crop augmentation. size: square crop side in px (0 = full frame, no
    augmentation); scale: range of the random zoom applied before cropping."""

    size: int = 192
    scale: tuple[float, float] = (0.75, 1.33)
    sigma: float = 2.0


TARGETS = ("centres", "lines", "ends")


class SegFolder(Dataset):
    """Items: (image 3xSxS float32 normalised RGB, target 2xSxS float32 [mask, instance
    target]); the instance target is the centre heatmap (``target="centres"``), the binary
    centre-line map (``target="lines"``, from the data set's ``centrelines/``) or the strand-end
    density (``target="ends"``: :func:`end_density` of the truth's ``ends`` inside the crop
    plus :func:`border_ends` where the crop cuts a centre line)."""

    def __init__(
        self,
        root: str | Path,
        crop: CropConfig,
        seed: int = 0,
        epoch_size: int | None = None,
        target: str = "centres",
    ) -> None:
        """root: one data folder, or several joined by commas (their frames are pooled)."""
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
        self.target = target
        self.roots = [Path(r) for r in str(root).split(",") if r]
        self.items: list[tuple[Path, dict]] = []
        for r in self.roots:
            truth_path = r / "truth.jsonl"
            if not truth_path.exists():
                raise FileNotFoundError(f"{truth_path} missing: write a data set with `scalpedge synth`")
            rows = [json.loads(line) for line in truth_path.read_text().splitlines() if line.strip()]
            self.items.extend((r, row) for row in rows)
        if not self.items:
            raise ValueError(f"no frames in {root}")
        if target in ("lines", "ends"):
            for r in self.roots:
                if not (r / "centrelines").is_dir():
                    raise FileNotFoundError(f"{r}/centrelines missing: rewrite the set with a newer `scalpedge synth`")
        if target == "ends" and any("ends" not in row for _, row in self.items):
            raise ValueError(f"{root}: truth.jsonl has no strand ends; rewrite the set with a newer `scalpedge synth`")
        self.crop = crop
        self.seed = seed
        self.epoch_size = epoch_size or len(self.items)

    def __len__(self) -> int:
        return self.epoch_size

    def _order(self, epoch: int) -> np.ndarray:
        """The frame order of one pass over the data (a fixed permutation per seed and epoch)."""
        if getattr(self, "_epoch", None) != epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.items))
        return self._perm

    def load(self, i: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """Frame i: (HxWx3 uint8 BGR, [HxW uint8 {0,1} mask (, centre lines)], (N,2) float32
        points: hair centres, or strand ends for ``target="ends"``)."""
        root, row = self.items[i]
        stem = row["stem"]
        image = cv2.imread(str(root / "images" / f"{stem}.png"), cv2.IMREAD_COLOR)
        names = ["masks", "centrelines"] if self.target in ("lines", "ends") else ["masks"]
        maps = [cv2.imread(str(root / n / f"{stem}.png"), cv2.IMREAD_GRAYSCALE) for n in names]
        if image is None or any(m is None for m in maps):
            raise FileNotFoundError(f"frame {stem} incomplete in {root}")
        key = "ends" if self.target == "ends" else "centres"
        points = np.asarray(row.get(key, []), np.float32).reshape(-1, 2)
        return image, [(m > 127).astype(np.uint8) for m in maps], points

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, idx])
        i = self._order(idx // len(self.items))[idx % len(self.items)]
        image, maps, points = self.load(i)
        if self.crop.size:
            image, maps, points = _augment(image, maps, points, self.crop, rng)
        mask = maps[0]
        h, w = mask.shape
        if self.target == "lines":
            second = maps[1].astype(np.float32)
        elif self.target == "ends":
            # Ends on the edge come from the cut centre lines (also a frame's own edge), so
            # the truth's ends there are dropped rather than counted twice.
            inner = (points[:, 0] >= 2) & (points[:, 0] <= w - 3) & (points[:, 1] >= 2) & (points[:, 1] <= h - 3)
            second = end_density(np.concatenate([points[inner], border_ends(maps[1])]), h, w)
        else:
            second = centre_heatmap(points, h, w, self.crop.sigma)
        x = torch.from_numpy(to_tensor_layout(image))
        y = torch.from_numpy(np.stack([mask.astype(np.float32), second]))
        return x, y


def _augment(
    image: np.ndarray, maps: list[np.ndarray], centres: np.ndarray, crop: CropConfig, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Random zoom, square crop, flips and 90-degree turns; binary maps and centres follow
    the pixels."""
    scale = float(np.exp(rng.uniform(np.log(crop.scale[0]), np.log(crop.scale[1]))))
    h, w = image.shape[:2]
    side = min(int(round(crop.size / scale)), h, w)
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    n = crop.size
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image[y0 : y0 + side, x0 : x0 + side], (n, n), interpolation=interp)
    # Binary maps: resize the coverage and re-threshold so thin strands keep their true width.
    out_maps = []
    for m in maps:
        cov = cv2.resize(m[y0 : y0 + side, x0 : x0 + side].astype(np.float32), (n, n), interpolation=cv2.INTER_LINEAR)
        out_maps.append((cov >= 0.5).astype(np.uint8))
    f = n / side
    c = (centres - np.array([x0, y0], np.float32)) * f
    keep = (c[:, 0] >= 0) & (c[:, 0] < n) & (c[:, 1] >= 0) & (c[:, 1] < n)
    c = c[keep]
    if rng.random() < 0.5:
        image, out_maps = image[:, ::-1], [m[:, ::-1] for m in out_maps]
        c[:, 0] = n - 1 - c[:, 0]
    if rng.random() < 0.5:
        image, out_maps = image[::-1], [m[::-1] for m in out_maps]
        c[:, 1] = n - 1 - c[:, 1]
    if rng.random() < 0.5:  # transpose = 90-degree turn combined with the flips
        image, out_maps = image.transpose(1, 0, 2), [m.T for m in out_maps]
        c = c[:, ::-1]
    return (
        np.ascontiguousarray(image),
        [np.ascontiguousarray(m) for m in out_maps],
        np.ascontiguousarray(c),
    )
