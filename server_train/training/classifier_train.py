"""Train the condition (severity) classifier on synthetic levels and real presence labels.

The backbone's prefix (stem + blocks before ``split``) stays frozen at its ImageNet weights and
is cached once (``classifier_data.build_cache``); the remaining blocks, head conv and the three
heads train on the cache. A batch mixes synthetic frames (level cross-entropy per condition +
presence BCE) and real frames (presence BCE + area-share MSE) at ``real_share``. With
``inverse_freq`` synthetic frames are drawn with probability inverse to the frequency of their
rarest level (ScalpVision's sampling), else uniformly. The loop and checkpoints are
``server_train.training.loop``'s (resumable from ``out/last.pt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from server_train.models.classifier import classifier_config, classifier_from_config, create_classifier
from server_train.training import loop
from server_train.training.classifier_data import FeatureCache, build_cache, load_real, load_synthetic

__all__ = ["ClsTrainConfig", "train_classifier", "load_classifier", "sample_weights"]


@dataclass(frozen=True)
class ClsTrainConfig:
    """Defaults of a condition-classifier run (CLI options override what they set)."""

    synth: str = ""  # folder from `scalpedge synth --conditions`
    real: str | None = None  # folder like scalp-microscope/train (optional)
    out: str = ""
    cache: str | None = None  # folder of the feature caches (default: out/cache); runs may share one
    model: str = "severity_lite0"
    pretrained: bool = True
    split: int = 11  # first trainable block (Lite0: 11 = stage 6, stride 16 -> 32)
    steps: int = 800
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    real_share: float = 0.3
    inverse_freq: bool = True
    level_weight: float = 1.0
    presence_weight: float = 1.0
    area_weight: float = 4.0
    seed: int = 0
    threads: int = 1
    ckpt_every: int = 100


def sample_weights(levels: np.ndarray) -> np.ndarray:
    """Nx3 levels -> N sampling probabilities: per frame the largest over conditions of
    1 / (share of that condition's level in the set), normalised to sum 1."""
    w = np.zeros(len(levels), np.float64)
    for c in range(levels.shape[1]):
        counts = np.bincount(levels[:, c], minlength=4).astype(np.float64)
        w = np.maximum(w, len(levels) / np.maximum(counts[levels[:, c]], 1.0))
    return w / w.sum()


def _batch(cache: FeatureCache, idx: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    var = rng.integers(0, cache.feats.shape[1], len(idx))
    feats = np.stack([cache.feats[i, v] for i, v in zip(idx, var, strict=True)]).astype(np.float32)
    lab = cache.labels
    return {
        "x": torch.from_numpy(feats),
        "levels": torch.from_numpy(lab.levels[idx]),
        "presence": torch.from_numpy(lab.presence[idx]),
        "area": torch.from_numpy(lab.area[idx]),
    }


def _loss(model: nn.Module, cfg: ClsTrainConfig, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    feats = model.backbone.forward_from(b["x"], cfg.split)  # type: ignore[operator]
    levels, presence, area = model.heads(feats)  # type: ignore[operator]
    known = b["levels"] >= 0
    parts = {"presence": F.binary_cross_entropy_with_logits(presence, b["presence"])}
    if known.any():
        parts["levels"] = F.cross_entropy(levels[known], b["levels"][known])
    has_area = ~torch.isnan(b["area"])
    if has_area.any():
        parts["area"] = F.mse_loss(area[has_area], b["area"][has_area])
    weights = {"levels": cfg.level_weight, "presence": cfg.presence_weight, "area": cfg.area_weight}
    total = sum(weights[k] * v for k, v in parts.items())
    return total, {k: round(float(v.detach()), 4) for k, v in parts.items()}  # type: ignore[return-value]


def train_classifier(
    cfg: ClsTrainConfig, log_every: int = 20, progress: bool = False, stop_after: int | None = None
) -> Path:
    """Run (or resume) training; returns the path of ``final.pt`` (``last.pt`` at ``stop_after``)."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    model = create_classifier(cfg.model, pretrained=cfg.pretrained)
    cache_dir = Path(cfg.cache) if cfg.cache else out / "cache"
    synth = build_cache(model.backbone, load_synthetic(cfg.synth), cfg.split, ("none", "h"), cache_dir / "synth.npy")
    real = None
    if cfg.real:
        real_labels = load_real(cfg.real)
        real = build_cache(model.backbone, real_labels, cfg.split, ("none", "h", "v", "hv"), cache_dir / "real.npy")
    frozen = [p for n, p in model.named_parameters() if _is_frozen(n, cfg.split)]
    for p in frozen:
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    run = loop.TrainRun(cfg, model, classifier_config(model), opt, sched)
    resumed = run.resume()
    rng = np.random.default_rng([cfg.seed, run.step] if resumed else cfg.seed)
    probs = sample_weights(synth.labels.levels) if cfg.inverse_freq else None
    n_real = round(cfg.batch * cfg.real_share) if real is not None else 0

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        b = _batch(synth, rng.choice(len(synth.labels.paths), cfg.batch - n_real, p=probs), rng)
        if real is not None and n_real:
            rb = _batch(real, rng.integers(0, len(real.labels.paths), n_real), rng)
            b = {k: torch.cat([b[k], rb[k]]) for k in b}
        return _loss(model, cfg, b)

    model.train()
    return run.fit(step_loss, log_every=log_every, smoothing=0.0, progress=progress, stop_after=stop_after)


def _is_frozen(name: str, split: int) -> bool:
    if not name.startswith("backbone."):
        return False
    rest = name[len("backbone.") :]
    if rest.startswith("_blocks."):
        return int(rest.split(".")[1]) < split
    return rest.startswith(("_conv_stem", "_bn0"))


def load_classifier(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a classifier checkpoint."""
    return loop.load_checkpoint(path, classifier_from_config)
