"""Train the U²-Net teacher on pseudo-labels, or distil a student from a trained teacher.

The loop and the checkpoints are ``server_train.training.loop``'s: a run restarted with the same
``--out`` resumes from ``last.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from server_train.models import build_from_config, create, model_config
from server_train.training import loop
from server_train.training.data import CropConfig, SegFolder
from server_train.training.losses import distill_loss, seg_loss

__all__ = ["TrainConfig", "train", "load_checkpoint"]


@dataclass(frozen=True)
class TrainConfig:
    """Defaults for every training run (CLI options override only what they set)."""

    data: str = ""
    out: str = ""
    model: str = "teacher"
    teacher_checkpoint: str | None = None  # set: distil the model from this teacher
    init_checkpoint: str | None = None  # start from these weights (same architecture)
    steps: int = 600
    batch: int = 8
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 30
    crop: int = 192
    kd_weight: float = 0.5  # student loss = (1-kd) * pseudo-GT loss + kd * teacher loss
    centre_weight: float = 1.0
    centre_loss: str = "bce"  # "bce"/"focal" on the centre heatmap, "lines" on centre lines, "ends" on end density
    instance_target: str = "centres"  # second output learns "centres" (heatmap), "lines" (centre lines) or "ends"
    kd_centre: bool = True  # also distil the teacher's centre heatmap (else centres learn from pseudo-GT only)
    seed: int = 0
    workers: int = 1
    threads: int = 2
    ckpt_every: int = 50


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint file; returns (model in eval mode, checkpoint dict)."""
    return loop.load_checkpoint(path, build_from_config)


def train(cfg: TrainConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Run (or resume) training; returns the path of ``final.pt`` in ``cfg.out``.

    stop_after: pause at this step (``last.pt`` written, resumable) without changing the
    schedule, which still runs to ``cfg.steps``; returns the path of ``last.pt`` then.
    """
    for target in ("lines", "ends"):
        if (cfg.instance_target == target) != (cfg.centre_loss == target):
            raise ValueError(f"instance_target {target!r} goes with centre_loss {target!r} (and only with it)")
    if cfg.instance_target == "ends" and cfg.teacher_checkpoint and cfg.kd_centre:
        raise ValueError("the end density is learnt from pseudo-GT only: distil with --no-kd-centre")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = create(cfg.model)
    if cfg.init_checkpoint:
        init, _ = load_checkpoint(cfg.init_checkpoint)
        model.load_state_dict(init.state_dict())
    teacher = None
    if cfg.teacher_checkpoint:
        teacher, _ = load_checkpoint(cfg.teacher_checkpoint)
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    run = loop.TrainRun(cfg, model, model_config(model), opt)
    run.resume()
    data = SegFolder(
        cfg.data, CropConfig(size=cfg.crop), seed=cfg.seed, epoch_size=cfg.steps * cfg.batch, target=cfg.instance_target
    )
    # Resume at the same place in the sample stream.
    sampler = range(run.step * cfg.batch, cfg.steps * cfg.batch)
    loader = DataLoader(
        data,
        batch_size=cfg.batch,
        sampler=list(sampler),
        num_workers=cfg.workers,
        persistent_workers=False,
        drop_last=True,
    )
    batches = iter(loader)

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = next(batches)
        outs = model(x)
        loss = sum(seg_loss(o, y, cfg.centre_weight, cfg.centre_loss) for o in outs)
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(x)[0]
            kd = distill_loss(outs[0], soft, cfg.centre_weight if cfg.kd_centre else 0.0)
            loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * kd
        return loss, {}

    model.train()
    lr_at = partial(loop.warmup_cosine_lr, lr=cfg.lr, warmup=cfg.warmup, steps=cfg.steps)
    return run.fit(step_loss, lr_at=lr_at, progress=progress, stop_after=stop_after)
