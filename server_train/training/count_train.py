"""Learn hair counts and the thin-hair share from real trichoscopy boxes.

The student keeps what synthetic pre-training gave it (the hair mask, the features) and gets a
new head: output channel 1 is a hair density (a Gaussian of mass DENSITY_SCALE at each labelled
hair's box centre), channel 2 the density of thin (``undersize``) hairs. The count is the
density's sum, the thin ratio the two sums' ratio (``device.models.onnx_segmenter``).

Losses per batch of crops (``CountFrames``: the labels leave out hairs the frame's edge cuts, so
crops often take a frame's edge, and a crop's own inner sides are left out of the loss):
- ``count_density_loss`` on both densities (local counts in 16 px cells, the crop's count, and a
  light pixel term that keeps one peak per hair);
- the mask channel held to the starting model's mask (BCE + soft Dice against its soft output:
  the real frames carry no mask labels, so without it the mask would drift).

``init_onnx`` empty trains the same network from scratch on the densities alone: the plain
supervised baseline. The loop is ``server_train.training.loop``'s (resumable checkpoints).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from device.contracts.constants import DENSITY_SCALE
from device.contracts.preprocess import to_tensor_layout
from server_train.models import create, model_config
from server_train.models.from_onnx import student_from_onnx
from server_train.models.student import StudentNet
from server_train.training import loop
from server_train.training.losses import _soft_dice, count_density_loss
from server_train.training.trichoscopy import (
    LabelledFrame,
    density_target,
    frame_and_points,
    load_labelled,
    subject_split,
)

__all__ = ["CountTrainConfig", "CountFrames", "train_counts", "DENSITY_CHANNELS"]

DENSITY_CHANNELS = 3  # hair logits, hair density, thin density


@dataclass(frozen=True)
class CountTrainConfig:
    """Defaults for a counting run (CLI options override only what they set)."""

    data: str = ""  # comma-separated roots with images/ and annotations/ (Pascal VOC)
    out: str = ""
    model: str = "student"  # registry name; used when init_onnx is empty
    init_onnx: str = ""  # start from this segmenter graph (and its card's model_config); "" = from scratch
    init_config: str = ""  # JSON model_config for init_onnx (default: the one recorded in the graph)
    val_percent: int = 20  # subjects held out (``subject_split``): never trained on
    steps: int = 1500
    batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    thin_weight: float = 0.25
    mask_weight: float = 0.5  # hold the mask channel to the starting model's (0 with no init)
    peak_weight: float = 0.1  # weight of the pixel-exact term of ``count_density_loss``
    freeze_bn: bool = True  # with init_onnx: BatchNorm statistics stay the graph's (eval mode)
    crop_height: int = 240  # training crops (px of the 640x480 frame)
    crop_width: int = 320
    zoom: float = 0.15  # random zoom in by up to this share
    seed: int = 0
    threads: int = 2
    ckpt_every: int = 50
    limit: int = 0  # use only the first N training frames (tests)
    instance_target: str = "density"  # what the instance outputs learn (names the exported graph's outputs)


class CountFrames:
    """Training frames at the camera geometry with their hair points (and the starting model's
    hair probabilities, when given), held in memory.

    ``sample(rng, index, ...)`` -> (3xhxw float32 network input, 4xhxw float32 targets: P(hair)
    of the starting model, hair density, thin density, loss weight). A sample is a crop of
    ``crop`` (h, w) px, at a frame corner or edge two times in three per axis (that is where the
    labels leave out the hairs the frame cuts); a band of ``band`` px along a crop side inside
    the frame gets weight 0 (a hair cut there is labelled, unlike one the frame cuts). Also
    flips, a random zoom-in, colour and blur.
    """

    def __init__(self, items: list[LabelledFrame], soft_masks: list[np.ndarray] | None = None) -> None:
        if not items:
            raise ValueError("no labelled frames to train on")
        self.frames: list[np.ndarray] = []
        self.points: list[np.ndarray] = []
        self.thin: list[np.ndarray] = []
        for item in items:
            frame, pts, thin = frame_and_points(item)
            self.frames.append(frame)
            self.points.append(pts)
            self.thin.append(thin)
        self.soft = soft_masks

    def __len__(self) -> int:
        return len(self.frames)

    def sample(
        self, rng: np.random.Generator, index: int, crop: tuple[int, int], zoom: float, band: int = 24
    ) -> tuple[np.ndarray, np.ndarray]:
        frame, pts, thin = self.frames[index], self.points[index].copy(), self.thin[index]
        soft = self.soft[index] if self.soft is not None else np.zeros(frame.shape[:2], np.uint8)
        h, w = frame.shape[:2]
        ch, cw = crop
        s = 1.0 + rng.uniform(0, zoom) if zoom > 0 and rng.random() < 0.5 else 1.0
        sh, sw = int(round(ch / s)), int(round(cw / s))  # source region, resized to the crop

        def start(size: int, full: int) -> int:
            pick = rng.integers(0, 3)
            return 0 if pick == 0 else full - size if pick == 1 else int(rng.integers(0, full - size + 1))

        x0, y0 = start(sw, w), start(sh, h)
        frame = cv2.resize(frame[y0 : y0 + sh, x0 : x0 + sw], (cw, ch), interpolation=cv2.INTER_LINEAR)
        soft = cv2.resize(soft[y0 : y0 + sh, x0 : x0 + sw], (cw, ch), interpolation=cv2.INTER_LINEAR)
        pts = (pts - np.array([x0, y0], np.float32)) * np.array([cw / sw, ch / sh], np.float32)
        weight = np.ones((ch, cw), np.float32)
        if x0 > 0:
            weight[:, :band] = 0
        if x0 + sw < w:
            weight[:, cw - band :] = 0
        if y0 > 0:
            weight[:band] = 0
        if y0 + sh < h:
            weight[ch - band :] = 0
        if rng.random() < 0.5:
            frame, soft, weight = frame[:, ::-1], soft[:, ::-1], weight[:, ::-1]
            pts[:, 0] = cw - pts[:, 0]
        if rng.random() < 0.5:
            frame, soft, weight = frame[::-1], soft[::-1], weight[::-1]
            pts[:, 1] = ch - pts[:, 1]
        frame = np.ascontiguousarray(frame)
        if rng.random() < 0.8:  # exposure, contrast and colour cast of another scope
            gain = rng.uniform(0.75, 1.25, size=3).astype(np.float32)
            f = frame.astype(np.float32)
            mean = f.mean(axis=(0, 1), keepdims=True)
            f = (f - mean) * rng.uniform(0.8, 1.2) + mean * gain + rng.uniform(-20, 20)
            frame = np.clip(f, 0, 255).astype(np.uint8)
        if rng.random() < 0.2:
            frame = cv2.GaussianBlur(frame, (0, 0), rng.uniform(0.5, 1.5))
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < cw) & (pts[:, 1] >= 0) & (pts[:, 1] < ch)
        hair = density_target(pts[inside], ch, cw)
        thin_map = density_target(pts[inside & thin], ch, cw)
        target = np.stack([soft.astype(np.float32) / 255.0, hair, thin_map, np.ascontiguousarray(weight)])
        return to_tensor_layout(frame), target


def soft_masks(model: torch.nn.Module, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The model's P(hair) on each HxWx3 uint8 BGR frame, as HxW uint8 (x 255)."""
    out = []
    with torch.no_grad():
        for frame in frames:
            logits = model(torch.from_numpy(to_tensor_layout(frame)[None]))[0][0, 0]
            out.append((torch.sigmoid(logits).numpy() * 255).round().astype(np.uint8))
    return out


def graph_model_config(path: str | Path) -> dict[str, Any]:
    """The ``model_config`` our exporter records in a graph's metadata; ValueError without one."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "model_config" not in meta:
        raise ValueError(f"{path} records no model_config: pass --init-config")
    return dict(json.loads(meta["model_config"]))


def _cached_soft_masks(out: Path, model: torch.nn.Module, frames: CountFrames, init_onnx: str) -> list[np.ndarray]:
    """``soft_masks`` of the training frames, kept in ``out/soft_masks.npz`` for a resumed run
    (keyed by the starting graph's sha256 and the frames' count)."""
    from device.models.bundle import sha256_file

    key = f"{sha256_file(Path(init_onnx))}:{len(frames)}"
    path = out / "soft_masks.npz"
    if path.exists():
        saved = np.load(path)
        if str(saved["key"]) == key:
            return list(saved["masks"])
    masks = soft_masks(model, frames.frames)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, key=np.array(key), masks=np.stack(masks))
    return masks


def _init_model(cfg: CountTrainConfig) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(model to train with DENSITY_CHANNELS outputs, frozen starting model for the mask or None)."""
    if not cfg.init_onnx:
        base = create(cfg.model)
        if not isinstance(base, StudentNet):
            raise ValueError(f"counting trains a student, not {cfg.model!r}")
        c = base.config
        return StudentNet(c["widths"], c["head"], DENSITY_CHANNELS), None
    config = json.loads(cfg.init_config) if cfg.init_config else graph_model_config(cfg.init_onnx)
    model = student_from_onnx(cfg.init_onnx, config, out_ch=DENSITY_CHANNELS)
    if config["out_ch"] == 2:
        # Both densities start as the graph's instance output (with a strand-end density, the
        # label-free count: two ends of END_DENSITY_SCALE = 25 per hair, DENSITY_SCALE per hair),
        # the thin one at the labels' thin share. Full-size weights, so the gradient reaches the
        # features from the first step (a head scaled towards zero starves them).
        with torch.no_grad():
            model.out.weight[2].copy_(model.out.weight[1] * 0.1)
            model.out.bias[2].copy_(model.out.bias[1] * 0.1)
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return model, frozen


def train_counts(cfg: CountTrainConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Run (or resume) a counting run; returns ``final.pt`` (``last.pt`` when paused)."""
    if cfg.instance_target != "density":
        raise ValueError("a counting run learns the hair density (instance_target 'density')")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    items = load_labelled([r for r in cfg.data.split(",") if r])
    train_items, _ = subject_split(items, cfg.val_percent)
    if cfg.limit:
        train_items = train_items[: cfg.limit]
    model, frozen = _init_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = loop.TrainRun(cfg, model, model_config(model), opt)
    run.resume()
    frames = CountFrames(train_items)
    if frozen is not None and cfg.mask_weight > 0:
        frames.soft = _cached_soft_masks(Path(cfg.out), frozen, frames, cfg.init_onnx)
    crop = (cfg.crop_height, cfg.crop_width)

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rng = np.random.default_rng((cfg.seed, step))  # the same batch on resume
        picks = rng.integers(0, len(frames), cfg.batch)
        xs, ys = zip(*(frames.sample(rng, int(i), crop, cfg.zoom) for i in picks), strict=True)
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        out = model(x)[0]
        weight = y[:, 3:4]
        hair = count_density_loss(out[:, 1:2] * weight, y[:, 1:2] * weight, DENSITY_SCALE, peak_weight=cfg.peak_weight)
        thin = count_density_loss(out[:, 2:3] * weight, y[:, 2:3] * weight, DENSITY_SCALE, peak_weight=cfg.peak_weight)
        loss = hair + cfg.thin_weight * thin
        parts = {"hair": float(hair.detach()), "thin": float(thin.detach())}
        if frozen is not None and cfg.mask_weight > 0:
            m, soft = out[:, :1], y[:, :1]
            mask = F.binary_cross_entropy_with_logits(m, soft) + _soft_dice(m, soft)
            loss = loss + cfg.mask_weight * mask
            parts["mask"] = float(mask.detach())
        return loss, parts

    model.train()
    if frozen is not None and cfg.freeze_bn:
        # The graph's BatchNorms were folded into its convolutions; in train mode they would
        # normalise by each small batch's statistics and the model would start far from the
        # graph it was rebuilt from. Frozen, it starts exactly there; their scale and shift learn.
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    lr_at = partial(loop.warmup_cosine_lr, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
    return run.fit(step_loss, lr_at=lr_at, progress=progress, stop_after=stop_after)
