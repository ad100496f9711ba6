"""``scalpedge train hair-photo``: one training loop, one budget, for every PHOTO_MODELS network.

Loss: binary cross-entropy + soft Dice on hair. AdamW, linear warm-up then cosine decay.
Batches: ``batch`` random crops of ``crop`` px from photos held at ``side`` (``data.PhotoSet``).
Validation: mIoU (``scoring.seg_metrics``) of whole photos at ``side`` on the ``val`` split
every ``eval_every`` steps; the step with the best one is kept as ``best.pt``, and ``final.pt``
is that checkpoint with the run's record. ``last.pt`` every ``save_every`` steps (resume).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from device.contracts.constants import HAIR_PHOTO_SIDE
from scoring.seg_metrics import confusion, summarise
from server_train.hair_photo.data import PhotoSet, load_photos
from server_train.hair_photo.models import DiffusionFeatureSeg, LiteUNet, build_photo_model

__all__ = ["HairPhotoConfig", "train_hair_photo", "load_hair_photo", "predict_logits", "score"]


@dataclass
class HairPhotoConfig:
    """data: folder with images/ + masks/; model: a PHOTO_MODELS name; diffusion: the diffusion
    checkpoint for ``diffusion_features``; t, feature_side: its timestep and input side; init:
    a hair-photo checkpoint of the same network to start from."""

    data: str
    out: str
    model: str = "lite0_unet"
    diffusion: str | None = None
    init: str | None = None  # start from this run's weights (e.g. to fine-tune at a larger side)
    t: int = 50
    feature_side: int = 128
    side: int = HAIR_PHOTO_SIDE
    crop: int = 192
    steps: int = 1000
    batch: int = 8
    lr: float = 2e-3
    warmup: int = 50
    val_percent: int = 15
    eval_every: int = 250
    save_every: int = 100
    seed: int = 0
    threads: int = 1
    limit: int | None = None


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3)) + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def predict_logits(model: nn.Module, images: np.ndarray, batch: int = 8) -> np.ndarray:
    """Nx3xSxS inputs -> NxSxS logits (eval mode, no grad)."""
    model.eval()
    out = []
    with torch.no_grad():
        for k in range(0, len(images), batch):
            out.append(model(torch.from_numpy(images[k : k + batch]))[:, 0].numpy())
    return np.concatenate(out)


def score(model: nn.Module, photos: PhotoSet) -> dict[str, float]:
    """Scores (``scoring.seg_metrics.summarise``) of ``model`` on ``photos`` at their side."""
    logits = predict_logits(model, photos.images)
    return summarise(confusion(lg > 0, mask > 0.5) for lg, mask in zip(logits, photos.masks, strict=True))


def _lr(c: HairPhotoConfig, step: int) -> float:
    if step < c.warmup:
        return c.lr * (step + 1) / c.warmup
    return c.lr * 0.5 * (1 + math.cos(math.pi * (step - c.warmup) / max(1, c.steps - c.warmup)))


def _save(
    path: Path, model: nn.Module, opt: Any, step: int, c: HairPhotoConfig, mc: dict[str, Any], extra: dict
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict() if opt is not None else None,
            "step": step,
            "train_config": dataclasses.asdict(c),
            "model_config": mc,
            "unet": getattr(getattr(model, "unet", None), "config", None) and model.unet.config.to_dict(),
            **extra,
        },
        tmp,
    )
    tmp.replace(path)


def train_hair_photo(c: HairPhotoConfig, progress: bool = True) -> Path:
    """Train (or resume) into ``c.out``; returns final.pt."""
    torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)
    out = Path(c.out)
    out.mkdir(parents=True, exist_ok=True)
    model, mc = build_photo_model(c.model, c.diffusion, c.t, c.feature_side, c.side)
    if c.init:
        start, init_ck = load_hair_photo(c.init)
        if {k: v for k, v in init_ck["model_config"].items() if k != "init"} != mc:
            raise ValueError(f"--init {c.init}: its network {init_ck['model_config']} is not {mc}")
        model.load_state_dict(start.state_dict())
        mc = mc | {"init": {"checkpoint": c.init, "step": init_ck["step"], "train_config": init_ck["train_config"]}}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=1e-4)
    step, best = 0, {"miou": -1.0, "step": 0}
    if (out / "last.pt").is_file():
        ck = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, best = int(ck["step"]), ck.get("best", best)
    train_set = load_photos(c.data, c.side, "train", c.val_percent, c.limit)
    val_set = load_photos(c.data, c.side, "val", c.val_percent, c.limit)
    log = open(out / "log.jsonl", "a")
    t0 = time.time()
    while step < c.steps:
        model.train()
        rng = np.random.default_rng([c.seed, step])
        x, y = train_set.batch(c.batch, rng, c.crop)
        for g in opt.param_groups:
            g["lr"] = _lr(c, step)
        loss = _loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        row: dict[str, Any] = {"step": step, "loss": round(float(loss.detach()), 5), "s": round(time.time() - t0, 1)}
        if step % c.eval_every == 0 or step == c.steps:
            scores = score(model, val_set)
            row["val"] = {k: round(v, 5) for k, v in scores.items()}
            if scores["miou"] > best["miou"]:
                best = {"miou": scores["miou"], "step": step, "scores": scores}
                _save(out / "best.pt", model, None, step, c, mc, {"best": best})
        log.write(json.dumps(row) + "\n")
        log.flush()
        if progress and (step % 25 == 0 or "val" in row):
            print(json.dumps(row), flush=True)
        if step % c.save_every == 0 or step == c.steps:
            _save(out / "last.pt", model, opt, step, c, mc, {"best": best})
    log.close()
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    ck["best"] = best
    ck["val_photos"] = len(val_set)
    ck["train_photos"] = len(train_set)
    torch.save(ck, out / "final.pt")
    (out / "result.json").write_text(
        json.dumps({"best": best, "train_photos": len(train_set), "val_photos": len(val_set)}, indent=2)
    )
    return out / "final.pt"


def load_hair_photo(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """A run's final.pt (or best.pt / last.pt) -> (network in eval mode, checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no hair-photo checkpoint {path}")
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if "model_config" not in ck:
        raise ValueError(f"{path} is not a hair-photo checkpoint")
    mc = ck["model_config"]
    model: nn.Module
    if mc["kind"] == "lite":
        model = LiteUNet(tuple(tuple(b) for b in mc["blocks"]), stem=mc["stem"], width=mc["width"])
    else:
        from server_train.diffusion.unet import CondUNet, UNetConfig

        unet = CondUNet(UNetConfig.from_dict(ck["unet"]))
        model = DiffusionFeatureSeg(unet, mc["t"], mc["feature_side"], mc["side"], mc["width"])
    model.load_state_dict(ck["model"])
    return model.eval(), ck
