"""Train the condition (severity) classifier on synthetic levels and real presence labels.

The backbone's prefix (stem + blocks before ``split``) stays frozen at its ImageNet weights and
is cached once per image variant (flips, colour jitter: ``classifier_data.build_cache``); the
remaining blocks, head conv and the heads train on the cache. A batch mixes synthetic frames
(level cross-entropy per condition + presence BCE) and real frames (presence BCE balanced by
inverse frequency; with a map head (``severity_dense_*``) BCE + Dice of the condition maps against
the rasterised polygons, else area-share MSE) at ``real_share``. With ``inverse_freq`` synthetic
frames are drawn with probability inverse to the frequency of their rarest level (ScalpVision's
sampling), else uniformly.

Real frames are split by original (``condition_maps.holdout_mask``, ``holdout_share``): every
``eval_every`` steps the held-out originals' presence macro-F1 (at 0.5) is logged, and at the end
``heldout.json`` records their probabilities, the per-condition thresholds that maximise F1 on
them (``presence_thresholds``) and the scores. The loop and checkpoints are
``server_train.training.loop``'s (resumable from ``out/last.pt``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from device.contracts.constants import CLS_HEIGHT, CLS_WIDTH, CONDITION_NAMES
from server_train.evaluation.presence_thresholds import choose_thresholds, presence_scores
from server_train.models.classifier import (
    classifier_config,
    classifier_from_config,
    create_classifier,
    in_backbone_prefix,
)
from server_train.training import loop
from server_train.training.classifier_data import FeatureCache, build_cache, flip_code, load_real, load_synthetic
from server_train.training.condition_losses import balance_weights, balanced_bce, map_loss
from server_train.training.condition_maps import fold_range, holdout_mask

__all__ = ["ClsTrainConfig", "train_classifier", "load_classifier", "sample_weights", "predict_presence"]

REAL_VARIANTS = ("none", "h", "v", "hv", "none+c1", "h+c2", "v+c3", "hv+c4")


@dataclass(frozen=True)
class ClsTrainConfig:
    """Defaults of a condition-classifier run (CLI options override what they set)."""

    synth: str = ""  # folder from `scalpedge synth --conditions`
    real: str | None = None  # folder like scalp-microscope/train (optional)
    out: str = ""
    cache: str | None = None  # folder of the feature caches (default: out/cache); runs may share one
    model: str = "severity_dense_lite0"
    pretrained: bool = True
    split: int = 11  # first trainable block (Lite0: 11 = stage 6, stride 16 -> 32)
    steps: int = 800
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    real_share: float = 0.5
    inverse_freq: bool = True
    level_weight: float = 1.0
    presence_weight: float = 1.0
    area_weight: float = 4.0
    map_weight: float = 1.0
    holdout_share: float = 0.2  # share of real originals held out for thresholds and steps
    holdout_salt: str = ""
    fold: str | None = None  # "k/K": hold out fold k of K originals (overrides holdout_share)
    real_variants: tuple[str, ...] = REAL_VARIANTS
    eval_every: int = 100
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
    b = {
        "x": torch.from_numpy(feats),
        "levels": torch.from_numpy(lab.levels[idx]),
        "presence": torch.from_numpy(lab.presence[idx]),
        "area": torch.from_numpy(lab.area[idx]),
        "has_map": torch.full((len(idx),), lab.maps is not None),
        "maps": torch.zeros((len(idx), len(CONDITION_NAMES), *_map_size())),
    }
    if lab.maps is not None:
        maps = []
        for i, v in zip(idx, var, strict=True):
            code = flip_code(cache.flips[v])
            m = lab.maps[i]
            m = m if code is None else m[:, ::-1] if code == 0 else m[:, :, ::-1] if code == 1 else m[:, ::-1, ::-1]
            maps.append(np.ascontiguousarray(m))
        b["maps"] = torch.from_numpy(np.stack(maps))
    return b


def _map_size() -> tuple[int, int]:
    """(h, w) of the condition maps: the stride-16 grid of the CLS_HEIGHT x CLS_WIDTH input."""
    return CLS_HEIGHT // 16, CLS_WIDTH // 16


def _loss(
    model: nn.Module, cfg: ClsTrainConfig, b: dict[str, torch.Tensor], weights: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    levels, presence, area, maps = model.from_split(b["x"], cfg.split)  # type: ignore[operator]
    known = b["levels"] >= 0
    synth = known.all(1)
    parts = {}
    if synth.any():
        parts["presence"] = F.binary_cross_entropy_with_logits(presence[synth], b["presence"][synth])
        parts["levels"] = F.cross_entropy(levels[known], b["levels"][known])
    if (~synth).any():
        parts["real"] = balanced_bce(presence[~synth], b["presence"][~synth], weights)
    has_map = b["has_map"]
    if maps is not None and has_map.any():
        parts["maps"] = map_loss(maps[has_map], b["maps"][has_map])
    has_area = ~torch.isnan(b["area"])
    if maps is None and has_area.any():
        parts["area"] = F.mse_loss(area[has_area], b["area"][has_area])
    w = {"levels": cfg.level_weight, "presence": cfg.presence_weight, "real": cfg.presence_weight}
    w |= {"area": cfg.area_weight, "maps": cfg.map_weight}
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: round(float(v.detach()), 4) for k, v in parts.items()}  # type: ignore[return-value]


def predict_presence(model: nn.Module, cache: FeatureCache, idx: np.ndarray, split: int) -> np.ndarray:
    """P(present) len(idx) x 3 of cached frames ``idx`` (their first variant), model in eval mode
    (left in train mode after)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(idx), 32):
            x = torch.from_numpy(np.asarray(cache.feats[idx[i : i + 32], 0], np.float32))
            out.append(torch.sigmoid(model.from_split(x, split)[1]).numpy())  # type: ignore[operator]
    model.train()
    return np.concatenate(out) if out else np.zeros((0, len(CONDITION_NAMES)), np.float32)


def train_classifier(
    cfg: ClsTrainConfig, log_every: int = 20, progress: bool = False, stop_after: int | None = None
) -> Path:
    """Run (or resume) training; returns the path of ``final.pt`` (``last.pt`` at ``stop_after``).
    With real frames and ``holdout_share`` > 0, ``out/heldout.json`` is written at the end."""
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    model = create_classifier(cfg.model, pretrained=cfg.pretrained)
    cache_dir = Path(cfg.cache) if cfg.cache else out / "cache"
    synth = build_cache(model.backbone, load_synthetic(cfg.synth), cfg.split, ("none", "h"), cache_dir / "synth.npy")
    real, train_idx, held_idx = None, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if cfg.real:
        has_maps = hasattr(model, "maps")
        labels = load_real(cfg.real, map_size=_map_size() if has_maps else None)
        name = "real_maps.npy" if has_maps else "real.npy"
        real = build_cache(model.backbone, labels, cfg.split, cfg.real_variants, cache_dir / name)
        start, share = fold_range(cfg.fold) if cfg.fold else (0.0, cfg.holdout_share)
        held = holdout_mask(labels.paths, share, cfg.holdout_salt, start)
        train_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    weights = torch.ones(2, len(CONDITION_NAMES))
    if real is not None and len(train_idx):
        weights = torch.from_numpy(balance_weights(real.labels.presence[train_idx]))
    for p in (p for n, p in model.named_parameters() if _is_frozen(n, cfg.split)):
        p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    run = loop.TrainRun(cfg, model, classifier_config(model), opt, sched)
    resumed = run.resume()
    rng = np.random.default_rng([cfg.seed, run.step] if resumed else cfg.seed)
    probs = sample_weights(synth.labels.levels) if cfg.inverse_freq else None
    n_real = round(cfg.batch * cfg.real_share) if real is not None and len(train_idx) else 0

    def step_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        b = _batch(synth, rng.choice(len(synth.labels.paths), cfg.batch - n_real, p=probs), rng)
        if real is not None and n_real:
            rb = _batch(real, rng.choice(train_idx, n_real), rng)
            b = {k: torch.cat([b[k], rb[k]]) for k in b}
        loss, parts = _loss(model, cfg, b, weights)
        if real is not None and len(held_idx) and (step + 1) % cfg.eval_every == 0:
            p = predict_presence(model, real, held_idx, cfg.split)
            parts["heldout_f1"] = presence_scores(p, real.labels.presence[held_idx], [0.5] * 3, CONDITION_NAMES)[
                "macro_f1"
            ]
        return loss, parts

    model.train()
    path = run.fit(step_loss, log_every=log_every, smoothing=0.0, progress=progress, stop_after=stop_after)
    if real is not None and len(held_idx) and path.name == "final.pt":
        _write_heldout(model, real, held_idx, cfg, out / "heldout.json")
    return path


def _write_heldout(model: nn.Module, real: FeatureCache, held_idx: np.ndarray, cfg: ClsTrainConfig, path: Path) -> None:
    """Held-out originals: P(present), thresholds maximising F1 on them, scores at 0.5 and at them."""
    prob = predict_presence(model, real, held_idx, cfg.split)
    model.eval()
    truth = real.labels.presence[held_idx]
    thresholds = choose_thresholds(prob, truth)
    report: dict[str, Any] = {
        "frames": len(held_idx),
        "holdout_share": cfg.holdout_share,
        "fold": cfg.fold,
        "thresholds": dict(zip(CONDITION_NAMES, thresholds, strict=True)),
        "at_0.5": presence_scores(prob, truth, [0.5] * 3, CONDITION_NAMES),
        "at_thresholds": presence_scores(prob, truth, thresholds, CONDITION_NAMES),
        "per_frame": [
            {"file": real.labels.paths[i].name, "truth": truth[j].tolist(), "p_present": prob[j].round(4).tolist()}
            for j, i in enumerate(held_idx)
        ],
    }
    path.write_text(json.dumps(report, indent=1))


def _is_frozen(name: str, split: int) -> bool:
    return name.startswith("backbone.") and in_backbone_prefix(name[len("backbone.") :], split)


def load_classifier(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) from a classifier checkpoint."""
    return loop.load_checkpoint(path, classifier_from_config)
