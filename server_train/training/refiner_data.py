"""Training data for the prompt refiner: a cache of frozen encoder features and coarse masks,
imperfect coarse masks, and per-group targets from the generator's strand instance ids.

Cache layout (``out``): ``detail.npy`` N x C x h x w float16 and ``prefix.npy`` (the frozen
encoder prefix's two outputs), ``coarse.npy`` N x 480 x 640 uint8 (the student's P(hair) x 255),
``index.json`` (frame roots and stems, encoder config). Built once; training then reads only
the cache and the instance maps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH
from device.contracts.preprocess import to_network_input
from device.refine.prompts import PromptConfig, PromptGroups, auto_prompts, random_prompts

__all__ = ["build_cache", "FeatureCache", "degrade_mask", "group_targets", "sample_prompts"]


def _frames(roots: str, per_root: int | None) -> list[tuple[Path, str]]:
    items: list[tuple[Path, str]] = []
    for r in (Path(p) for p in roots.split(",") if p):
        rows = [json.loads(line) for line in (r / "truth.jsonl").read_text().splitlines() if line.strip()]
        items.extend((r, row["stem"]) for row in rows[:per_root])
    if not items:
        raise ValueError(f"no frames in {roots}")
    return items


def build_cache(
    roots: str,
    out: str | Path,
    encoder: Any,
    student_onnx: str | Path,
    per_root: int | None = None,
    progress: bool = True,
) -> Path:
    """Run the frozen prefix of ``encoder`` (a RefinerEncoder) and the student ONNX on every
    frame of ``roots`` (comma-separated synth folders, first ``per_root`` frames of each);
    write the cache to ``out`` (skipped when ``index.json`` there matches). Returns ``out``."""
    from device.models.onnx_segmenter import ModelSegmenter

    out = Path(out)
    items = _frames(roots, per_root)
    meta = {"frames": [[str(r), s] for r, s in items], "encoder": encoder.config, "student": str(student_onnx)}
    index = out / "index.json"
    if index.exists() and json.loads(index.read_text()) == meta:
        return out
    out.mkdir(parents=True, exist_ok=True)
    seg = ModelSegmenter.from_onnx(student_onnx, threads=1)
    encoder.eval()
    with torch.no_grad():
        d0, p0 = encoder.forward_prefix(torch.zeros(1, 3, FRAME_HEIGHT, FRAME_WIDTH))
    n = len(items)
    mm = np.lib.format.open_memmap
    detail = mm(out / "detail.npy", "w+", np.float16, (n, *d0.shape[1:]))
    prefix = mm(out / "prefix.npy", "w+", np.float16, (n, *p0.shape[1:]))
    coarse = mm(out / "coarse.npy", "w+", np.uint8, (n, FRAME_HEIGHT, FRAME_WIDTH))
    for i, (root, stem) in enumerate(tqdm(items, disable=not progress, desc="refiner cache")):
        frame = cv2.imread(str(root / "images" / f"{stem}.png"), cv2.IMREAD_COLOR)
        with torch.no_grad():
            d, p = encoder.forward_prefix(torch.from_numpy(to_network_input(frame)))
        detail[i], prefix[i] = d[0].numpy(), p[0].numpy()
        coarse[i] = np.round(seg.segment(frame).prob * 255).astype(np.uint8)
    for arr in (detail, prefix, coarse):
        arr.flush()
    index.write_text(json.dumps(meta))
    return out


class FeatureCache:
    """Read side of ``build_cache``: ``item(i)`` -> (detail 1xCxhxw, prefix 1xCxhxw float32
    tensors, coarse HxW float32 P(hair), instances HxW int32 strand ids, GT mask HxW bool)."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        meta = json.loads((root / "index.json").read_text())
        self.frames = [(Path(r), s) for r, s in meta["frames"]]
        self.detail = np.load(root / "detail.npy", mmap_mode="r")
        self.prefix = np.load(root / "prefix.npy", mmap_mode="r")
        self.coarse = np.load(root / "coarse.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.frames)

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
        root, stem = self.frames[i]
        inst = cv2.imread(str(root / "instances" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        if inst is None:
            raise FileNotFoundError(f"{root}/instances/{stem}.png missing")
        inst = inst.astype(np.int32)
        d = torch.from_numpy(np.asarray(self.detail[i], np.float32))[None]
        p = torch.from_numpy(np.asarray(self.prefix[i], np.float32))[None]
        return d, p, np.asarray(self.coarse[i], np.float32) / 255.0, inst, inst > 0


def degrade_mask(gt: np.ndarray, inst: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An imperfect coarse mask from HxW bool ground truth: some strands dropped, edges grown
    or shrunk by a pixel, soft blur, and false-positive flakes and streaks added."""
    m = gt.copy()
    ids = np.unique(inst[inst > 0])
    if len(ids):
        drop = ids[rng.random(len(ids)) < rng.uniform(0.0, 0.2)]
        m &= ~np.isin(inst, drop)
    op = rng.integers(0, 3)
    k = np.ones((3, 3), np.uint8)
    if op == 1:
        m = cv2.dilate(m.astype(np.uint8), k) > 0
    elif op == 2:
        m = (cv2.erode(m.astype(np.uint8), k) > 0) | (m & (rng.random(m.shape) < 0.5))
    canvas = m.astype(np.uint8)
    h, w = m.shape
    for _ in range(int(rng.integers(0, 12))):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.6:
            axes = (int(rng.integers(2, 9)), int(rng.integers(2, 6)))
            cv2.ellipse(canvas, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            d = rng.normal(size=2) * rng.uniform(15, 60)
            cv2.line(canvas, c, (int(c[0] + d[0]), int(c[1] + d[1])), 1, int(rng.integers(1, 4)))
    blur = cv2.GaussianBlur(canvas.astype(np.float32), (0, 0), float(rng.uniform(0.3, 1.2)))
    return blur >= 0.5


def sample_prompts(
    coarse: np.ndarray, rng: np.random.Generator, random_share: float, config: PromptConfig
) -> PromptGroups:
    """Auto prompts from the HxW bool coarse mask, or (share ``random_share``) random ones."""
    if rng.random() < random_share:
        return random_prompts(coarse, seed=int(rng.integers(1 << 30)), config=config)
    return auto_prompts(coarse, config)


def group_targets(groups: PromptGroups, inst: np.ndarray) -> np.ndarray:
    """GxHxW float32 targets: the union of the strands that each group's positive points hit
    (the instance id under the point, else the commonest id within 1 px; none if off hair)."""
    h, w = inst.shape
    padded = np.pad(inst, 1)
    out = np.zeros((groups.count, h, w), np.float32)
    for g in range(groups.count):
        pts = groups.points[g][groups.labels[g] > 0.5].astype(int)
        ids = set()
        for x, y in pts:
            x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
            v = int(inst[y, x])
            if v == 0:
                win = padded[y : y + 3, x : x + 3]
                vals, counts = np.unique(win[win > 0], return_counts=True)
                v = int(vals[np.argmax(counts)]) if len(vals) else 0
            if v:
                ids.add(v)
        if ids:
            out[g] = np.isin(inst, list(ids))
    return out
