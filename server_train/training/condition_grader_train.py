"""Train the frozen-trunk condition grader (``server_train.models.condition_grader``).

1. *Features*: every frame of the real folders (``images/`` + YOLO-seg ``labels/``) and of the
   synthetic condition set goes through the frozen trunk once, at the grader's size, itself and
   mirrored (the device's preprocessing, ``prepare_condition_input``); cached in
   ``RUN/features_<W>x<H>.npz`` (real: both taps, float16; synthetic: the grid means of both
   taps, float32).
2. *Presence heads*, one per fold of the real originals (sha256 of the original's name,
   ``condition_maps.holdout_mask``: the augmented copies of one original stay together): presence
   BCE with inverse-frequency weights plus polygon-map BCE; each head's out-of-fold
   probabilities on the fold it did not see give the thresholds.
3. *Thresholds*: ``prevalence`` (default): per condition the out-of-fold probability above which
   lies the training frames' share of positives (``prevalence_threshold``); ``f1``: the
   out-of-fold F1 optimum (``best_threshold``). Measured on ``scalp-microscope`` (docs): the F1
   optimum at out-of-fold AUC 0.66-0.79 sits near "always present" and does not transfer.
4. *Level head*: a linear layer on the pooled f32 features of the synthetic frames (levels 0..3
   per condition, cross-entropy with inverse-frequency class weights).

``train_grader`` writes ``RUN/final.pt`` (config, state, thresholds, report) and
``RUN/report.json`` (out-of-fold AUC and F1 per condition, thresholds).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from device.capture.imageio import read_frame
from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from device.models.classifiers import prepare_condition_input
from server_train.evaluation.presence_thresholds import (
    best_threshold,
    presence_auc,
    presence_scores,
    prevalence_threshold,
)
from server_train.models.classifier import TINY_BLOCKS
from server_train.models.condition_grader import ConditionGrader, GraderTrunk, PresenceHead, grader_config
from server_train.models.efficientnet_lite import LITE0_BLOCKS, EfficientNetLite, load_lite0_imagenet
from server_train.training.classifier_data import LabelSet, load_real, load_synthetic
from server_train.training.condition_maps import fold_range, holdout_mask, original_name

__all__ = [
    "GraderConfig",
    "THRESHOLD_RULES",
    "extract_features",
    "fit_presence_head",
    "fit_folds",
    "fold_index",
    "fit_level_head",
    "choose_presence_thresholds",
    "grader_data",
    "presence_probs",
    "train_grader",
    "load_grader",
    "grader_from_checkpoint",
]

THRESHOLD_RULES = ("prevalence", "f1")


@dataclass
class GraderConfig:
    """width x height: the grader's input (4:3, multiples of 32); folds: presence heads (one per
    fold of the real originals); steps / batch / lr: each head's AdamW schedule; level_steps:
    the level head's; tiny: a random narrow backbone (tests) instead of ImageNet Lite0."""

    width: int = 512
    height: int = 384
    folds: int = 5
    steps: int = 600
    batch: int = 32
    lr: float = 1e-3
    hidden: int = 96
    topk: float = 0.05
    map_pos_weight: float = 5.0
    level_steps: int = 600
    mirror: bool = True
    threshold_rule: str = "prevalence"
    seed: int = 0
    tiny: bool = False

    def __post_init__(self) -> None:
        if self.width % 32 or self.height % 32 or self.width * 3 != self.height * 4:
            raise ValueError(f"grader size {self.width}x{self.height}: need 4:3 and multiples of 32 (e.g. 512x384)")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2 (out-of-fold thresholds), got {self.folds}")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be one of {THRESHOLD_RULES}, got {self.threshold_rule!r}")


def _trunk(cfg: GraderConfig) -> GraderTrunk:
    if cfg.tiny:
        torch.manual_seed(cfg.seed)
        return GraderTrunk(EfficientNetLite(TINY_BLOCKS, 8, 32))
    return GraderTrunk(load_lite0_imagenet(EfficientNetLite(LITE0_BLOCKS, 32, 1280)))


def extract_features(
    trunk: GraderTrunk, paths: list[Path], size: tuple[int, int], pooled_only: bool = False
) -> dict[str, np.ndarray]:
    """Frames -> {"f16": N x 2 x C16 x h x w, "f32": N x 2 x C32 x h/2 x w/2} float16 (axis 1: the
    frame, its mirror; the mirror's maps flipped back), or with ``pooled_only`` {"pooled": N x 2 x
    C32, "pooled16": N x 2 x C16} float32 (grid means)."""
    out: dict[str, list[np.ndarray]] = {"f16": [], "f32": [], "pooled": [], "pooled16": []}
    with torch.no_grad():
        for p in paths:
            x = torch.from_numpy(prepare_condition_input(read_frame(p), size))
            f16, f32 = trunk(torch.cat([x, torch.flip(x, dims=[3])]))
            if pooled_only:
                out["pooled"].append(f32.mean(dim=(2, 3)).numpy())
                out["pooled16"].append(f16.mean(dim=(2, 3)).numpy())
                continue
            f16[1], f32[1] = torch.flip(f16[1], dims=[2]), torch.flip(f32[1], dims=[2])
            out["f16"].append(f16.numpy().astype(np.float16))
            out["f32"].append(f32.numpy().astype(np.float16))
    if pooled_only:
        return {k: np.stack(out[k]) for k in ("pooled", "pooled16")}
    return {"f16": np.stack(out["f16"]), "f32": np.stack(out["f32"])}


def fit_presence_head(
    feats: dict[str, np.ndarray],
    presence: np.ndarray,
    maps: np.ndarray,
    idx: np.ndarray,
    cfg: GraderConfig,
    seed: int,
) -> PresenceHead:
    """One presence head on the frames ``idx`` of ``feats`` (``extract_features``), with their
    presence N x 3 and polygon maps N x 3 x h x w: presence BCE (inverse-frequency weights) plus
    map BCE (positive weight ``map_pos_weight``), a random view of each frame per step."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    f16, f32 = torch.from_numpy(feats["f16"]), torch.from_numpy(feats["f32"])
    presence_t, maps_t = torch.from_numpy(presence), torch.from_numpy(maps)
    head = PresenceHead(f16.shape[2], f32.shape[2], cfg.hidden, cfg.topk)
    opt = torch.optim.AdamW(head.parameters(), cfg.lr, weight_decay=1e-2)
    pos = presence_t[idx].mean(0).clamp(0.05, 0.95)
    pos_weight = torch.full((len(CONDITION_NAMES), 1, 1), cfg.map_pos_weight)
    for _ in range(cfg.steps):
        b = torch.from_numpy(rng.choice(idx, cfg.batch))
        v = torch.from_numpy(rng.integers(0, 2, len(b)))
        m, logit = head(f16[b, v].float(), f32[b, v].float())
        p = presence_t[b]
        weight = torch.where(p > 0, 0.5 / pos, 0.5 / (1 - pos))
        loss = (F.binary_cross_entropy_with_logits(logit, p, reduction="none") * weight).mean()
        loss = loss + F.binary_cross_entropy_with_logits(m, maps_t[b], pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


def presence_probs(head: PresenceHead, feats: dict[str, np.ndarray], idx: np.ndarray, mirror: bool) -> np.ndarray:
    """P(present) len(idx) x 3, as ``ConditionGrader`` computes it for one head."""
    f16, f32 = torch.from_numpy(feats["f16"][idx]), torch.from_numpy(feats["f32"][idx])
    with torch.no_grad():
        views = (0, 1) if mirror else (0,)
        logit = sum(head(f16[:, v].float(), f32[:, v].float())[1] for v in views) / len(views)
    return torch.sigmoid(logit).numpy()


def fit_level_head(pooled: np.ndarray, levels: np.ndarray, cfg: GraderConfig) -> nn.Linear:
    """Linear C32 -> 3x4 on pooled features N x 2 x C32 (random view per step) of frames with
    known levels N x 3 (0..3), cross-entropy with inverse-frequency class weights per condition."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    n_c, n_l = len(CONDITION_NAMES), len(LEVEL_NAMES)
    x, y = torch.from_numpy(pooled.astype(np.float32)), torch.from_numpy(levels)
    mean, std = x.mean(dim=(0, 1)), x.std(dim=(0, 1)).clamp_min(1e-3)
    head = nn.Linear(x.shape[-1], n_c * n_l)
    counts = torch.stack([torch.bincount(y[:, c], minlength=n_l) for c in range(n_c)]).float()
    weights = counts.sum(1, keepdim=True) / (n_l * counts.clamp_min(1))
    opt = torch.optim.AdamW(head.parameters(), cfg.lr, weight_decay=1e-2)
    for _ in range(cfg.level_steps):
        b = torch.from_numpy(rng.choice(len(y), cfg.batch))
        v = torch.from_numpy(rng.integers(0, 2, len(b)))
        z = head(F.dropout((x[b, v] - mean) / std, 0.2)).view(-1, n_c, n_l)
        loss = sum(F.cross_entropy(z[:, c], y[b, c], weight=weights[c]) for c in range(n_c)) / n_c
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
    with torch.no_grad():  # fold the standardisation into the layer: the graph takes raw features
        w = head.weight / std
        head.bias.sub_((w * mean).sum(1))
        head.weight.copy_(w)
    return head.eval()


def fold_index(labels: LabelSet, folds: int) -> np.ndarray:
    """N fold numbers 0..folds-1 of the real frames, by their original (``holdout_mask``)."""
    fold = np.full(len(labels.paths), -1)
    for k in range(folds):
        start, share = fold_range(f"{k}/{folds}")
        fold[holdout_mask(labels.paths, share, start=start)] = k
    return fold


def _merge(sets: list[LabelSet]) -> LabelSet:
    maps = [s.maps for s in sets]
    return LabelSet(
        [p for s in sets for p in s.paths],
        np.concatenate([s.levels for s in sets]),
        np.concatenate([s.presence for s in sets]),
        np.concatenate([s.area for s in sets]),
        None if any(m is None for m in maps) else np.concatenate(maps),  # type: ignore[arg-type]
    )


def fit_folds(
    feats: dict[str, np.ndarray], labels: LabelSet, pool: np.ndarray, cfg: GraderConfig
) -> tuple[list[PresenceHead], np.ndarray]:
    """One presence head per fold of the originals among the real frames ``pool`` (indices), and
    the out-of-fold P(present) len(pool) x 3 (each frame scored by the head that did not see it)."""
    assert labels.maps is not None
    fold = fold_index(labels, cfg.folds)[pool]
    oof = np.zeros((len(pool), len(CONDITION_NAMES)))
    heads = []
    for k in range(cfg.folds):
        head = fit_presence_head(feats, labels.presence, labels.maps, pool[fold != k], cfg, cfg.seed * 100 + k)
        if (fold == k).any():
            oof[fold == k] = presence_probs(head, feats, pool[fold == k], cfg.mirror)
        heads.append(head)
    return heads, oof


def choose_presence_thresholds(oof: np.ndarray, truth: np.ndarray, rule: str) -> list[float]:
    """Per condition the threshold of ``rule`` ("prevalence" or "f1") on out-of-fold P(present)."""
    if rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    if rule == "prevalence":
        return [prevalence_threshold(oof[:, c], truth[:, c]) for c in range(truth.shape[1])]
    return [best_threshold(oof[:, c], truth[:, c])[0] for c in range(truth.shape[1])]


def grader_data(
    real: list[str | Path], synth: str | Path, run: Path, cfg: GraderConfig
) -> tuple[GraderTrunk, LabelSet, dict[str, np.ndarray], LabelSet, np.ndarray]:
    """(trunk, real labels, real features, synthetic labels, synthetic pooled features), the
    features from RUN/features_<W>x<H>.npz when it holds these frames, else extracted and cached."""
    trunk = _trunk(cfg)
    labels = _merge([load_real(r, map_size=(cfg.height // 16, cfg.width // 16)) for r in real])
    synthetic = load_synthetic(synth)
    cache = run / f"features_{cfg.width}x{cfg.height}.npz"
    meta = {"real": [str(p) for p in labels.paths], "synth": [str(p) for p in synthetic.paths], "tiny": cfg.tiny}
    if cache.is_file():
        with np.load(cache) as d:
            if json.loads(str(d["meta"])) == meta:
                return trunk, labels, {k: d[k] for k in ("f16", "f32")}, synthetic, d["pooled"]
    size = (cfg.width, cfg.height)
    feats = extract_features(trunk, labels.paths, size)
    synth_feats = extract_features(trunk, synthetic.paths, size, pooled_only=True)
    run.mkdir(parents=True, exist_ok=True)
    np.savez(cache, f16=feats["f16"], f32=feats["f32"], **synth_feats, meta=np.array(json.dumps(meta)))
    return trunk, labels, feats, synthetic, synth_feats["pooled"]


def train_grader(real: list[str | Path], synth: str | Path, out: str | Path, cfg: GraderConfig) -> dict[str, Any]:
    """Features, presence heads per fold, thresholds and the level head; writes RUN/final.pt and
    RUN/report.json, returns the report."""
    run = Path(out)
    t0 = time.time()
    trunk, labels, feats, synthetic, pooled = grader_data(real, synth, run, cfg)
    heads, oof = fit_folds(feats, labels, np.arange(len(labels.paths)), cfg)
    truth = labels.presence
    thresholds = choose_presence_thresholds(oof, truth, cfg.threshold_rule)
    levels = fit_level_head(pooled, synthetic.levels, cfg)
    model = ConditionGrader(trunk, heads, levels, cfg.mirror).eval()
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "real_frames": len(labels.paths),
        "real_folders": [str(r) for r in real],
        "real_originals": sorted({original_name(p) for p in labels.paths}),
        "synthetic_frames": len(synthetic.paths),
        "threshold_rule": cfg.threshold_rule,
        "thresholds": dict(zip(CONDITION_NAMES, thresholds, strict=True)),
        "out_of_fold": {
            "auc": presence_auc(oof, truth, CONDITION_NAMES),
            **presence_scores(oof, truth, thresholds, CONDITION_NAMES),
        },
        "seconds": round(time.time() - t0, 1),
    }
    torch.save(
        {
            "model_config": grader_config(model),
            "train_config": asdict(cfg),
            "state_dict": model.state_dict(),
            "presence_thresholds": report["thresholds"],
            "report": report,
        },
        run / "final.pt",
    )
    (run / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def grader_from_checkpoint(ck: dict[str, Any]) -> ConditionGrader:
    """The grader (eval mode) of a loaded ``train_grader`` checkpoint dict."""
    from server_train.models.condition_grader import grader_from_config

    model = grader_from_config(ck["model_config"])
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def load_grader(path: str | Path) -> tuple[ConditionGrader, dict[str, Any]]:
    """(grader in eval mode, checkpoint dict) from ``train_grader``'s final.pt."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return grader_from_checkpoint(ck), ck
