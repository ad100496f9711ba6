"""Train the U²-Net teacher on pseudo-labels, or distil a student from a trained teacher.

Checkpoints carry the model config and the training config, are written atomically, and a
run restarted with the same ``--out`` resumes from ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from server_train.models import build_from_config, create, model_config
from server_train.training.data import CropConfig, SegFolder
from server_train.training.losses import distill_loss, seg_loss

__all__ = ["TrainConfig", "train", "load_checkpoint", "save_checkpoint"]


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


def save_checkpoint(path: Path, model: torch.nn.Module, cfg: TrainConfig, step: int, extra: dict[str, Any]) -> None:
    """Atomic write of weights + model config + training config (+ optimizer state in extra)."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": model_config(model),
            "train_config": dataclasses.asdict(cfg),
            "step": step,
            **extra,
        },
        tmp,
    )
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint file; returns (model in eval mode, checkpoint dict)."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    model = build_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def train(cfg: TrainConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Run (or resume) training; returns the path of ``final.pt`` in ``cfg.out``.

    stop_after: pause at this step (``last.pt`` written, resumable) without changing the
    schedule, which still runs to ``cfg.steps``; returns the path of ``last.pt`` then.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
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
    step = 0
    history: list[dict[str, float]] = []
    last = out / "last.pt"
    if last.exists():
        ckpt = torch.load(str(last), map_location="cpu", weights_only=False)
        # Fields added after a checkpoint was written take their defaults.
        saved = {**dataclasses.asdict(TrainConfig()), **ckpt["train_config"]}
        if saved != dataclasses.asdict(cfg):
            changed = sorted(k for k, v in dataclasses.asdict(cfg).items() if saved.get(k) != v)
            raise ValueError(f"{last} was written with a different config ({', '.join(changed)}); use a new --out")
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, history = ckpt["step"], ckpt.get("history", [])
    for target in ("lines", "ends"):
        if (cfg.instance_target == target) != (cfg.centre_loss == target):
            raise ValueError(f"instance_target {target!r} goes with centre_loss {target!r} (and only with it)")
    if cfg.instance_target == "ends" and teacher is not None and cfg.kd_centre:
        raise ValueError("the end density is learnt from pseudo-GT only: distil with --no-kd-centre")
    data = SegFolder(
        cfg.data, CropConfig(size=cfg.crop), seed=cfg.seed, epoch_size=cfg.steps * cfg.batch, target=cfg.instance_target
    )
    # Resume at the same place in the sample stream.
    sampler = range(step * cfg.batch, cfg.steps * cfg.batch)
    loader = DataLoader(
        data,
        batch_size=cfg.batch,
        sampler=list(sampler),
        num_workers=cfg.workers,
        persistent_workers=False,
        drop_last=True,
    )
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"train {cfg.model}")
    t0 = time.time()
    running = 0.0
    for x, y in loader:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        outs = model(x)
        loss = sum(seg_loss(o, y, cfg.centre_weight, cfg.centre_loss) for o in outs)
        if teacher is not None:
            with torch.no_grad():
                soft = teacher(x)[0]
            kd = distill_loss(outs[0], soft, cfg.centre_weight if cfg.kd_centre else 0.0)
            loss = (1 - cfg.kd_weight) * loss + cfg.kd_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        value = float(loss.detach())
        running = 0.9 * running + 0.1 * value if step > 1 else value
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}")
        if step % 10 == 0 or step == cfg.steps:
            history.append({"step": step, "loss": running, "seconds": time.time() - t0})
        if step % cfg.ckpt_every == 0 or step == cfg.steps or step == stop_after:
            save_checkpoint(last, model, cfg, step, {"optimizer": opt.state_dict(), "history": history})
        if stop_after is not None and step >= stop_after:
            bar.close()
            return last
    bar.close()
    final = out / "final.pt"
    model.eval()
    save_checkpoint(final, model, cfg, step, {"history": history})
    (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    return final
