"""Train the pixel refiner (``server_train.models.pixel_refiner``) on synthetic frames.

The coarse maps are the student's own output on each frame (the shipped student by default,
run once through ONNX Runtime as the device runs it, kept in memory as float16) and, with
``prompt_input``, the prompt refiner's M_AP probabilities from the device's automatic prompts
on that output (the shipped bundle's refiner by default); the targets are the generator's hair
masks. Per step: ``batch`` random ``crop`` x ``crop`` windows (mirrored at
random) from random frames; loss BCE + soft Dice of the refined logits. The loop, checkpoints
and resume are ``server_train.training.loop``'s. ``choose_threshold`` picks the refined mask's
threshold on a validation set (never the one scored). With ``negatives``, a share of each batch
comes from real scalp-microscope frames, whose only label here is where dandruff lies: inside a
dandruff polygon, where the student sees no hair, the refined map is pushed toward "no hair"
(synthetic frames cannot teach what a real flake looks like).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from device.contracts.constants import MASK_THRESHOLD
from device.contracts.preprocess import to_tensor_layout
from device.models.segmentation import Segmenter, SegOutput
from device.refine.fusion import refine
from device.refine.prompts import PromptConfig, auto_prompts
from device.refine.refiner import PromptRefiner
from scoring.seg_metrics import confusion, summarise
from server_train.models.pixel_refiner import PixelRefinerNet, pixel_refiner_from_config
from server_train.training import loop

__all__ = [
    "PixelRefinerTrainConfig",
    "RefinerFrames",
    "load_frames",
    "train_pixel_refiner",
    "load_pixel_refiner",
    "refine_probabilities",
    "choose_threshold",
    "default_student",
    "prompt_refiner_of",
    "prompt_probability",
    "load_negatives",
]


@dataclass(frozen=True)
class PixelRefinerTrainConfig:
    """Defaults for pixel-refiner training (CLI options override only what they set)."""

    data: str = "data/train3_hard,data/train3"
    out: str = "runs/pixel_refiner"
    model: str = "pixel_refiner"
    student: str = ""  # the coarse segmenter (ONNX); empty: the shipped student
    per_root: int | None = 600  # frames per data folder (the first ones by name)
    widths: str = "16,24,32"
    prompt_input: bool = True  # also take the prompt refiner's P(hair) (M_AP)
    prompt_refiner: str = ""  # folder with the prompt refiner's two graphs; empty: the shipped bundle
    negatives: str = ""  # real frames with dandruff polygons (scalp-microscope split folders), comma-separated
    negative_share: float = 0.25  # share of each batch cut from them, around their negative pixels
    negative_weight: float = 1.0
    steps: int = 3000
    batch: int = 12
    crop: int = 160
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 75
    seed: int = 0
    threads: int = 2
    ckpt_every: int = 250


@dataclass
class RefinerFrames:
    """Frames (HxWx3 uint8 BGR), the student's P(hair) (HxW float16), the prompt refiner's
    P(hair) (HxW float16; empty list without it) and the truth (HxW bool)."""

    frames: list[np.ndarray]
    probs: list[np.ndarray]
    truths: list[np.ndarray]
    prompt_probs: list[np.ndarray] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)


def prompt_probability(refiner: PromptRefiner, frame: np.ndarray, coarse_prob: np.ndarray) -> np.ndarray:
    """M_AP's HxW float32 P(hair) (calibrated: >= 0.5 is M_AP) from the device's automatic
    prompts on the student's mask, as ``device.refine.fusion`` makes it (zeros without prompts)."""
    coarse = SegOutput(prob=np.asarray(coarse_prob, np.float32))
    groups = auto_prompts(coarse.prob >= MASK_THRESHOLD, PromptConfig(group_size=refiner.k))
    return refine(coarse, frame, refiner, groups, stage="refined").seg.prob


def load_frames(
    roots: str | list[str],
    student: Segmenter,
    per_root: int | None = None,
    prompt_refiner: PromptRefiner | None = None,
) -> RefinerFrames:
    """Every ``images/*.png`` with its ``masks/<stem>.png`` of each folder in ``roots`` (a comma-
    separated string or a list; at most ``per_root`` each), segmented by ``student`` (and, with
    ``prompt_refiner``, its M_AP). FileNotFoundError for a folder without frames or a frame
    without its mask."""
    out = RefinerFrames([], [], [])
    folders = [r for r in (roots.split(",") if isinstance(roots, str) else roots) if r]
    for root in map(Path, folders):
        images = sorted((root / "images").glob("*.png"))[:per_root]
        if not images:
            raise FileNotFoundError(f"{root}: no images/*.png (a `scalpedge synth` folder)")
        for path in images:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            truth = cv2.imread(str(root / "masks" / path.name), cv2.IMREAD_GRAYSCALE)
            if frame is None or truth is None:
                raise FileNotFoundError(f"{path}: unreadable, or no mask {root / 'masks' / path.name}")
            prob = student.segment(frame).prob
            out.frames.append(frame)
            out.probs.append(prob.astype(np.float16))
            out.truths.append(truth > 127)
            if prompt_refiner is not None:
                out.prompt_probs.append(prompt_probability(prompt_refiner, frame, prob).astype(np.float16))
    return out


def _batch(
    data: RefinerFrames, n: int, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(x, p, q or None, truth) of ``n`` random ``size`` x ``size`` windows, mirrored at random."""
    xs, ps, qs, ys = [], [], [], []
    for _ in range(n):
        i = int(rng.integers(len(data)))
        h, w = data.truths[i].shape
        if h < size or w < size:
            raise ValueError(f"crop {size} px is larger than a {h}x{w} frame")
        y0, x0 = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        maps = [data.frames[i], data.probs[i], data.truths[i]] + ([data.prompt_probs[i]] if data.prompt_probs else [])
        crops = [m[window] for m in maps]
        if rng.random() < 0.5:
            crops = [c[:, ::-1] for c in crops]
        xs.append(to_tensor_layout(crops[0]))
        ps.append(crops[1].astype(np.float32)[None])
        ys.append(crops[2].astype(np.float32)[None])
        if data.prompt_probs:
            qs.append(crops[3].astype(np.float32)[None])
    q = torch.from_numpy(np.stack(qs)) if qs else None
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ps)), q, torch.from_numpy(np.stack(ys))


def load_negatives(
    roots: str, student: Segmenter, prompt_refiner: PromptRefiner | None = None
) -> tuple[RefinerFrames, list[np.ndarray]]:
    """Real frames of ``scalp-microscope`` split folders (``images/*.jpg``, YOLO-seg ``labels/``;
    640x640 stretched from 4:3, so resized to 640x480) with their negative pixels: inside a
    dandruff polygon (d, ds) where the student sees no hair. Only frames with some. Returns the
    frames (``truths`` are the negative masks) and, per frame, the (N, 2) (y, x) negatives."""
    from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH
    from server_train.training.condition_maps import condition_maps

    out, where = RefinerFrames([], [], []), []
    for root in map(Path, [r for r in roots.split(",") if r]):
        images = sorted((root / "images").glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"{root}: no images/*.jpg (a scalp-microscope split folder)")
        for path in images:
            _, maps = condition_maps(root / "labels" / f"{path.stem}.txt", FRAME_HEIGHT, FRAME_WIDTH, supersample=1)
            if not (maps[0] > 0).any():
                continue
            frame = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (FRAME_WIDTH, FRAME_HEIGHT), cv2.INTER_AREA)
            prob = student.segment(frame).prob
            negative = (maps[0] > 0) & (prob < MASK_THRESHOLD)
            if not negative.any():
                continue
            out.frames.append(frame)
            out.probs.append(prob.astype(np.float16))
            out.truths.append(negative)
            if prompt_refiner is not None:
                out.prompt_probs.append(prompt_probability(prompt_refiner, frame, prob).astype(np.float16))
            where.append(np.argwhere(negative))
    return out, where


def _negative_batch(
    data: RefinerFrames, where: list[np.ndarray], n: int, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Like ``_batch``, each window centred (clipped to the frame) on a random negative pixel;
    the last tensor is the negative mask."""
    xs, ps, qs, ms = [], [], [], []
    for _ in range(n):
        i = int(rng.integers(len(data)))
        h, w = data.truths[i].shape
        y, x = where[i][int(rng.integers(len(where[i])))]
        y0, x0 = int(np.clip(y - size // 2, 0, h - size)), int(np.clip(x - size // 2, 0, w - size))
        window = (slice(y0, y0 + size), slice(x0, x0 + size))
        xs.append(to_tensor_layout(data.frames[i][window]))
        ps.append(data.probs[i][window].astype(np.float32)[None])
        ms.append(data.truths[i][window].astype(np.float32)[None])
        if data.prompt_probs:
            qs.append(data.prompt_probs[i][window].astype(np.float32)[None])
    q = torch.from_numpy(np.stack(qs)) if qs else None
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ps)), q, torch.from_numpy(np.stack(ms))


def _loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * truth).sum() + 1) / (p.sum() + truth.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, truth) + dice


def prompt_refiner_of(folder: str, threads: int) -> PromptRefiner:
    """The prompt refiner of ``folder`` (its two graphs), or the shipped bundle's."""
    from device.assets import default_bundle_path
    from device.contracts.constants import REFINER_DECODER_FILE, REFINER_ENCODER_FILE

    root = Path(folder) if folder else default_bundle_path()
    return PromptRefiner.from_onnx(root / REFINER_ENCODER_FILE, root / REFINER_DECODER_FILE, threads=threads)


def default_student(path: str, threads: int) -> Segmenter:
    """The coarse segmenter ``path`` (ONNX), or the shipped student when empty."""
    from device.assets import default_model_path
    from device.models.onnx_segmenter import ModelSegmenter

    return ModelSegmenter.from_onnx(path or default_model_path(), threads=threads, name="student")


def train_pixel_refiner(cfg: PixelRefinerTrainConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Run (or resume) training; returns ``final.pt`` (or ``last.pt`` at ``stop_after``)."""
    if cfg.crop % 8 or cfg.crop < 8:
        raise ValueError(f"crop must be a positive multiple of 8 (the network's stride), got {cfg.crop}")
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    torch.manual_seed(cfg.seed)
    widths = [int(w) for w in cfg.widths.split(",")]
    model = PixelRefinerNet(widths, prompt_input=cfg.prompt_input)
    prompt = prompt_refiner_of(cfg.prompt_refiner, cfg.threads) if cfg.prompt_input else None
    student = default_student(cfg.student, cfg.threads)
    data = load_frames(cfg.data, student, cfg.per_root, prompt)
    negatives, where = load_negatives(cfg.negatives, student, prompt) if cfg.negatives else (None, [])
    n_neg = int(round(cfg.batch * cfg.negative_share)) if negatives is not None and len(negatives) else 0
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = loop.TrainRun(cfg, model, model.config, opt)
    run.resume()
    model.train()

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rng = np.random.default_rng([cfg.seed, step])
        x, p, q, y = _batch(data, cfg.batch - n_neg, cfg.crop, rng)
        loss = _loss(model(x, p, q), y)
        if not n_neg:
            return loss, {}
        assert negatives is not None
        x, p, q, neg = _negative_batch(negatives, where, n_neg, cfg.crop, rng)
        # real frames have no hair masks: only their negatives teach, toward "no hair"
        per_pixel = F.binary_cross_entropy_with_logits(model(x, p, q), torch.zeros_like(neg), reduction="none")
        negative = (per_pixel * neg).sum() / neg.sum().clamp(min=1.0)
        return loss + cfg.negative_weight * negative, {"negative": float(negative.detach())}

    lr_at = partial(loop.warmup_cosine_lr, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
    return run.fit(step_loss, lr_at=lr_at, log_every=25, smoothing=0.95, progress=progress, stop_after=stop_after)


def load_pixel_refiner(path: str | Path) -> tuple[PixelRefinerNet, dict[str, Any]]:
    """(network in eval mode, checkpoint dict) of a ``train pixel-refiner`` checkpoint."""
    model, ckpt = loop.load_checkpoint(path, pixel_refiner_from_config)
    return model, ckpt  # type: ignore[return-value]


def refine_probabilities(model: PixelRefinerNet, data: RefinerFrames) -> list[np.ndarray]:
    """The refined P(hair) (HxW float32) of every frame of ``data``, one frame at a time."""
    if model.prompt_input and len(data.prompt_probs) != len(data):
        raise ValueError("the network takes the prompt refiner's map: load the frames with a prompt refiner")
    out = []
    with torch.no_grad():
        for i, (frame, prob) in enumerate(zip(data.frames, data.probs, strict=True)):
            x = torch.from_numpy(to_tensor_layout(frame))[None]
            p = torch.from_numpy(prob.astype(np.float32))[None, None]
            q = torch.from_numpy(data.prompt_probs[i].astype(np.float32))[None, None] if model.prompt_input else None
            out.append(torch.sigmoid(model(x, p, q))[0, 0].numpy())
    return out


def choose_threshold(
    refined: list[np.ndarray], data: RefinerFrames, grid: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
) -> dict[str, Any]:
    """The refined mask's threshold with the best per-frame mean Dice on ``data`` (ties: the
    lower), beside the student's own Dice at the same thresholds: {"threshold", "dice",
    "refined_dice": {t: Dice}, "student_dice": {t: Dice}, "frames"}."""
    if not len(data):
        raise ValueError("no validation frames to choose a threshold on")
    scores = {
        t: summarise([confusion(r >= t, y) for r, y in zip(refined, data.truths, strict=True)])["dice"] for t in grid
    }
    student = {
        t: summarise([confusion(p >= t, y) for p, y in zip(data.probs, data.truths, strict=True)])["dice"] for t in grid
    }
    best = max(grid, key=lambda t: (scores[t], -t))
    return {
        "threshold": best,
        "dice": round(float(scores[best]), 4),
        "refined_dice": {str(t): round(float(v), 4) for t, v in scores.items()},
        "student_dice": {str(t): round(float(v), 4) for t, v in student.items()},
        "frames": len(data),
    }
