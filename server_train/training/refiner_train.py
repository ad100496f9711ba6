"""Train the prompt refiner on synthetic frames with automatic prompts from imperfect coarse
masks; optionally distil a SAM image encoder's embeddings into its encoder.

Per step and frame: the cached frozen-prefix features go through the trainable encoder part
once; a coarse mask (the student's own output, or degraded ground truth) gives prompt groups
(``device.refine.prompts``; a share of random prompts for robustness; a share of groups keep a random
subset of their positives, so that the mask prompt alone cannot predict the target and the
decoder has to follow the points); each group's target is the
union of the strands its positive points hit (the generator's instance ids); the coarse mask
is the decoder's ``mask_input``. Loss: BCE + soft Dice on the group masks bilinearly upsampled
to 480x640, MSE of the IoU head, plus ``distill_weight`` x MSE to the teacher's embedding when
``teacher_checkpoint`` is set. The loop and checkpoints are ``server_train.training.loop``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH, MASK_THRESHOLD
from device.contracts.preprocess import to_network_input
from device.refine.prompts import PromptConfig, PromptGroups
from device.refine.refiner import mask_prompt
from server_train.models.refiner import REFINERS, Refiner, refiner_from_config
from server_train.training import loop
from server_train.training.refiner_data import FeatureCache, build_cache, degrade_mask, group_targets, sample_prompts

__all__ = ["RefinerTrainConfig", "train_refiner", "load_refiner", "embedding_distill_loss"]


@dataclass(frozen=True)
class RefinerTrainConfig:
    """Defaults for refiner training (CLI options override only what they set)."""

    data: str = "data/train3,data/train3_hard"
    cache: str = "runs/refiner_cache"
    out: str = "runs/refiner"
    model: str = "refiner"
    student: str = ""  # coarse-mask model (ONNX); empty: the shipped student
    per_root: int | None = 600  # frames per data folder in the cache
    steps: int = 7000
    groups_per_step: int = 3  # prompt groups decoded per frame and step (a random subset)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    degraded_share: float = 0.3  # share of steps whose coarse mask is degraded ground truth
    random_prompt_share: float = 0.15
    subsample_share: float = 0.5  # share of groups that keep a random subset of their positives
    teacher_checkpoint: str | None = None  # segment_anything ViT checkpoint to distil embeddings from
    distill_weight: float = 1.0
    seed: int = 0
    threads: int = 1
    ckpt_every: int = 200


def load_refiner(path: str | Path) -> tuple[Refiner, dict[str, Any]]:
    """Rebuild a refiner from a checkpoint; returns (model in eval mode, checkpoint dict)."""
    model, ckpt = loop.load_checkpoint(path, refiner_from_config)
    return model, ckpt  # type: ignore[return-value]


def _dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    return (1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)).mean()


def embedding_distill_loss(emb: torch.Tensor, teacher: Any, x: torch.Tensor) -> torch.Tensor:
    """MobileSAM's decoupled distillation: MSE between our 1xCxhxw embedding and the teacher's
    embedding of the same 1x3xHxW frame ``x`` (pooled to our grid; no gradient to the teacher)."""
    from server_train.models.sam_teacher import teacher_embedding

    return F.mse_loss(emb, teacher_embedding(teacher, x, (int(emb.shape[-2]), int(emb.shape[-1]))))


def _subsample(groups: PromptGroups, pick: np.ndarray, share: float, rng: np.random.Generator) -> PromptGroups:
    """Groups ``pick``, a share of them keeping only a random subset of their positive points
    (the rest become -1): the target follows the points, so the decoder must read them."""
    points, labels = groups.points[pick].copy(), groups.labels[pick].copy()
    for g in range(len(pick)):
        pos = np.nonzero(labels[g] > 0.5)[0]
        if len(pos) > 1 and rng.random() < share:
            drop = rng.permutation(pos)[int(rng.integers(1, len(pos) + 1)) :]
            labels[g, drop], points[g, drop] = -1.0, 0.0
    return PromptGroups(points, labels, groups.positives, groups.negatives)


def _frame_loss(
    model: Refiner, cache: FeatureCache, i: int, cfg: RefinerTrainConfig, rng: np.random.Generator, teacher: Any
) -> torch.Tensor | None:
    detail, prefix, prob, inst, gt = cache.item(i)
    emb = model.encoder.forward_from_prefix(detail, prefix)
    loss = emb.new_zeros(())
    if teacher is not None:
        root, stem = cache.frames[i]
        frame = cv2.imread(str(root / "images" / f"{stem}.png"), cv2.IMREAD_COLOR)
        loss = loss + cfg.distill_weight * embedding_distill_loss(
            emb, teacher, torch.from_numpy(to_network_input(frame))
        )
    if rng.random() < cfg.degraded_share:
        coarse_prob = degrade_mask(gt, inst, rng).astype(np.float32)
    else:
        coarse_prob = prob
    groups = sample_prompts(coarse_prob >= MASK_THRESHOLD, rng, cfg.random_prompt_share, PromptConfig())
    if groups.count == 0:
        return loss if teacher is not None else None
    pick = np.sort(rng.permutation(groups.count)[: cfg.groups_per_step])
    groups = _subsample(groups, pick, cfg.subsample_share, rng)
    pick = np.arange(groups.count)
    targets = torch.from_numpy(group_targets(groups, inst)[pick])[:, None]
    coords = torch.from_numpy(groups.points[pick])
    labels = torch.from_numpy(groups.labels[pick])
    mask_in = torch.from_numpy(mask_prompt(coarse_prob, tuple(4 * s for s in model.embed_size)))
    low, iou = model.decode(emb, coords, labels, mask_in)
    logits = F.interpolate(low, size=(FRAME_HEIGHT, FRAME_WIDTH), mode="bilinear", align_corners=False)
    seg = F.binary_cross_entropy_with_logits(logits, targets) + _dice(logits, targets)
    with torch.no_grad():
        hard = (logits > 0).float()
        inter = (hard * targets).sum(dim=(1, 2, 3))
        true_iou = inter / ((hard + targets).clamp(max=1).sum(dim=(1, 2, 3)) + 1e-6)
    return loss + seg + F.mse_loss(iou[:, 0], true_iou)


def train_refiner(cfg: RefinerTrainConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Run (or resume) refiner training; returns ``final.pt`` (or ``last.pt`` at ``stop_after``)."""
    torch.set_num_threads(cfg.threads)
    cv2.setNumThreads(1)
    torch.manual_seed(cfg.seed)
    model = REFINERS[cfg.model]()
    student = cfg.student
    if not student:
        from device.assets import default_model_path

        student = str(default_model_path())
    build_cache(cfg.data, cfg.cache, model.encoder, student, cfg.per_root, progress=progress)
    cache = FeatureCache(cfg.cache)
    teacher = None
    if cfg.teacher_checkpoint:
        from server_train.models.sam_teacher import load_sam_image_encoder

        teacher = load_sam_image_encoder(cfg.teacher_checkpoint)
    frozen = {id(p) for p in model.encoder.frozen_parameters()}
    for p in model.encoder.frozen_parameters():
        p.requires_grad_(False)
    params = [p for p in model.parameters() if id(p) not in frozen]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = loop.TrainRun(cfg, model, model.config, opt)
    run.resume()
    model.train()
    for m in model.modules():  # one frame a step: keep the ImageNet BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    order = np.random.default_rng([cfg.seed, 1]).permutation(cfg.steps) % len(cache)

    def step_loss(step: int) -> tuple[torch.Tensor | None, dict[str, float]]:
        rng = np.random.default_rng([cfg.seed, step])
        return _frame_loss(model, cache, int(order[step]), cfg, rng, teacher), {}

    lr_at = partial(loop.warmup_cosine_lr, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
    return run.fit(step_loss, lr_at=lr_at, log_every=20, smoothing=0.95, progress=progress, stop_after=stop_after)
