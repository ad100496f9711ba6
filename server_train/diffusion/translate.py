"""DiffuseIT-M (ScalpVision): translate a scalp frame toward target condition levels while
keeping every hair of the source.

At the model's resolution s, with the source x_src (1x3xsxs, [-1, 1]) and
its hair mask M (1x1xsxs {0,1}: our segmenter's P(hair) > ``threshold``, dilated by
``dilate_px``):

1. x_t0 = q(x_src, t0), t0 = ``strength`` * (T - 1);
2. each DDIM step t -> t': epsilon from the U-Net with classifier-free guidance toward the
   target levels (``guidance``); x0_hat from it; a guidance loss on x0_hat whose gradient in
   x_t shifts epsilon (classifier guidance; the gradient is taken through x0_hat's direct
   dependence on x_t with epsilon held fixed, not back through the U-Net: CPU-cheap): style
   toward the target condition (1 - cosine of our pooled features to the prototype of frames
   at the target level, ``features.py``, plus the grader head's cross-entropy when the
   features come from a grader checkpoint), content
   (self-similarity of the spatial features of x0_hat vs x_src, as DiffuseIT's DINO keys),
   range (x0_hat outside [-1, 1]) and the mask term (change of x0_hat inside M);
3. masked: x_t' = M * q(x_src, t') + (1 - M) * x_t' (fresh noise), and at the end
   x_0 = M * x_src + (1 - M) * x_0. ``masked=False`` is the unmasked ablation (no hair copy);
4. masked, our addition: hair the segmenter finds in the output away from the source's hair
   (the model paints hair-like streaks into the scalp) is inpainted from the translated scalp
   around it (``clear_rounds``), since a generated frame carries its source's hair truth.

Resolution: the whole frame is drawn at once at s = the model's crop size by default (``size``;
the model learned from crops of frames resized to ``load``). The U-Net is convolutional (its one
attention layer, at the coarsest level, spans the whole frame), so ``TranslateConfig.resolution``
may draw at another side, such as the scale the model learned (``load``). Measured 2026-12-07
(docs/results/classifiers.md): drawing at ``load`` (128 px) did not raise the target hit rate.

Output at the source's own size: the translated frame upsampled (bicubic); with ``keep_detail``
the source's detail above the model's resolution (source minus its own down-up-sampled copy) is
added back, and (masked) the pixels of the full-resolution hair mask are the source's own: the
same replacement as the last reverse step, at full resolution. So hair Dice ~ 1 by construction.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from device.models.segmentation import Segmenter
from server_train.diffusion.data import FrameSet, load_frames, to_bgr, to_tensor
from server_train.diffusion.features import GuidanceFeatures, load_features, self_similarity
from server_train.diffusion.schedule import Schedule, guided_eps
from server_train.diffusion.unet import CondUNet

__all__ = [
    "GuidanceWeights",
    "TranslateConfig",
    "Translation",
    "Translator",
    "down_up",
    "draw_size",
    "hair_mask",
    "style_prototypes",
]


class GuidanceWeights(NamedTuple):
    """Weights of the guidance loss terms on the x_0 estimate."""

    style: float = 4.0
    content: float = 1.0
    range: float = 5.0
    mask: float = 5.0


@dataclass(frozen=True)
class TranslateConfig:
    """strength: t0 / (T - 1); guidance: classifier-free scale; ``grad_scale`` multiplies the
    gradient of the weighted guidance loss; threshold and dilate_px make the hair mask; a model
    pixel is kept from the source when hair covers more than ``cover`` of it (0.02: any hair;
    0.25 missed thin hairs and cost 1.6 pt hair Dice); ``rim_px``: full-resolution dilation of
    the copied hair pixels; ``clear_rounds``: rounds of inpainting hair the output gains;
    ``resolution``: side (px) of the square the frame is drawn at (None: the model's crop size)."""

    strength: float = 0.6
    ddim_steps: int = 25
    guidance: float = 3.0
    weights: GuidanceWeights = field(default_factory=GuidanceWeights)
    grad_scale: float = 0.2
    threshold: float = 0.5
    dilate_px: int = 1
    cover: float = 0.02
    rim_px: int = 0
    clear_rounds: int = 2
    keep_detail: bool = True
    resolution: int | None = None


@dataclass
class Translation:
    """image: HxWx3 uint8 BGR at the source's size; small: 1x3xsxs final x_0 ([-1, 1]);
    mask_small: 1x1xsxs hair mask used; mask_full: HxW bool hair mask of the source."""

    image: np.ndarray
    small: torch.Tensor
    mask_small: torch.Tensor
    mask_full: np.ndarray
    losses: dict[str, float] = field(default_factory=dict)


def hair_mask(prob: np.ndarray, threshold: float, dilate_px: int) -> np.ndarray:
    """HxW P(hair) -> HxW bool mask, dilated by ``dilate_px`` (square kernel)."""
    m = (prob > threshold).astype(np.uint8)
    if dilate_px > 0:
        m = cv2.dilate(m, np.ones((2 * dilate_px + 1, 2 * dilate_px + 1), np.uint8))
    return m.astype(bool)


def down_up(frame: np.ndarray, side: int) -> np.ndarray:
    """HxWx3 uint8 -> HxWx3 float32: area-resized to side x side and back up (bicubic, rounded to
    uint8 on the way): what survives drawing at ``side`` px."""
    h, w = frame.shape[:2]
    small = cv2.resize(frame, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)


def draw_size(resolution: int | None, run: dict[str, Any]) -> int:
    """The side (px) a frame is drawn at: ``resolution``, else the run's crop ``size``; a multiple
    of the U-Net's total stride, 2 ** (levels - 1)."""
    side = int(resolution or run["size"])
    stride = 2 ** (len(run["mults"]) - 1)
    if side < stride or side % stride:
        raise ValueError(f"translation resolution {side} px must be a positive multiple of {stride} for this model")
    return side


@torch.no_grad()
def style_prototypes(features: GuidanceFeatures, frames: FrameSet, size: int, per_level: int = 24) -> torch.Tensor:
    """3x4xF unit-norm mean pooled features of up to ``per_level`` frames per condition and
    level (NaN rows where a level has no frame)."""
    x_all = torch.from_numpy(frames.images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0)
    x_all = F.interpolate(x_all, size=(size, size), mode="area")
    protos = []
    for c in range(len(CONDITION_NAMES)):
        for lv in range(len(LEVEL_NAMES)):
            idx = np.flatnonzero(frames.levels[:, c] == lv)[:per_level]
            if len(idx) == 0:
                protos.append(torch.full((features.backbone.num_features,), float("nan")))
                continue
            protos.append(F.normalize(features.pooled(x_all[idx]).mean(0), dim=0))
    return torch.stack(protos).view(len(CONDITION_NAMES), len(LEVEL_NAMES), -1)


class Translator:
    """A trained diffusion model, a segmenter (hair masks) and our guidance features."""

    def __init__(
        self,
        model: CondUNet,
        schedule: Schedule,
        size: int,
        segmenter: Segmenter,
        features: GuidanceFeatures,
        prototypes: torch.Tensor | None,
        config: TranslateConfig = TranslateConfig(),
        checkpoint: str = "",
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.schedule, self.size, self.segmenter = schedule, size, segmenter
        self.features, self.prototypes, self.config, self.checkpoint = features, prototypes, config, checkpoint

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        config: TranslateConfig = TranslateConfig(),
        segmenter: str | None = None,
        features: str | None = None,
        refs: str | None = None,
        threads: int = 1,
    ) -> Translator:
        """From a ``train diffusion`` checkpoint; ``refs``: labelled set for the style
        prototypes (default: the run's ``synth --conditions`` training folders that exist)."""
        from server_train.diffusion.data import detect_kind
        from server_train.diffusion.train import load_model
        from server_train.evaluation.loading import load_segmenter

        model, sched, ck = load_model(model_path)
        size = draw_size(config.resolution, ck["config"])
        feats = load_features(features)
        folders = [refs] if refs else [f for f in ck["config"]["data"].split(",") if f and Path(f).is_dir()]
        folders = [f for f in folders if detect_kind(Path(f)) in ("synth", "real")]
        protos = style_prototypes(feats, load_frames(folders, size, limit=400), size) if folders else None
        seg = load_segmenter(segmenter, threads)
        return cls(model, sched, size, seg, feats, protos, config, str(model_path))

    def _loss(
        self, x0: torch.Tensor, src_feat: torch.Tensor, x_src: torch.Tensor, m: torch.Tensor, lv: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        f, pooled = self.features.both(x0)
        content = F.mse_loss(self_similarity(f), self_similarity(src_feat))
        rng = (x0 - x0.clamp(-1, 1)).abs().mean()
        mask = ((x0 - x_src) ** 2 * m).sum() / m.sum().clamp(min=1.0)
        style = x0.new_zeros(())
        targeted = [i for i in range(lv.shape[1]) if lv[0, i] >= 0]
        if self.prototypes is not None:
            z = F.normalize(pooled, dim=1)[0]
            for i in targeted:
                p = self.prototypes[i, int(lv[0, i])]
                if not torch.isnan(p).any():
                    style = style + (1 - torch.dot(z, p)) / len(targeted)
        logits = self.features.level_logits(pooled)
        if logits is not None and targeted:
            style = style + F.cross_entropy(logits[0, targeted], lv[0, targeted])
        w = c.weights
        total = w.style * style + w.content * content + w.range * rng + w.mask * mask
        parts = {
            k: float(v.detach()) for k, v in (("style", style), ("content", content), ("range", rng), ("mask", mask))
        }
        return total, parts

    def translate(
        self,
        frame_bgr: np.ndarray,
        targets: dict[str, int],
        seed: int = 0,
        masked: bool = True,
        mask_full: np.ndarray | None = None,
    ) -> Translation:
        """frame_bgr: HxWx3 uint8 BGR; targets: condition -> level (others unconditioned);
        ``mask_full``: HxW bool hair mask (default: the segmenter's)."""
        c, s = self.config, self.schedule
        unknown = set(targets) - set(CONDITION_NAMES)
        if unknown:
            raise ValueError(f"unknown conditions {sorted(unknown)}; known: {', '.join(CONDITION_NAMES)}")
        h, w = frame_bgr.shape[:2]
        if mask_full is None:
            mask_full = hair_mask(self.segmenter.segment(frame_bgr).prob, c.threshold, 0)
        small_prob = cv2.resize(mask_full.astype(np.float32), (self.size, self.size), interpolation=cv2.INTER_AREA)
        m = torch.from_numpy(hair_mask(small_prob, c.cover, c.dilate_px).astype(np.float32))[None, None]
        lv = torch.tensor([[targets.get(n, -1) for n in CONDITION_NAMES]], dtype=torch.long)
        x_src = to_tensor(frame_bgr, self.size)
        gen = torch.Generator().manual_seed(seed)
        ts = s.timesteps(c.ddim_steps, start=max(1, int(round(c.strength * (s.T - 1)))))
        with torch.no_grad():
            src_feat = self.features.spatial(x_src)
            x = s.q_sample(x_src, torch.tensor([ts[0]]), torch.randn(x_src.shape, generator=gen))
        parts: dict[str, float] = {}
        for i, t in enumerate(ts):
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            tt = torch.tensor([t])
            x = x.detach().requires_grad_(True)
            with torch.no_grad():
                eps = guided_eps(self.model, x, tt, lv, c.guidance)
            if c.grad_scale > 0:
                with torch.enable_grad():  # through x0_hat's direct dependence on x_t, not the U-Net
                    x0 = s.x0_from_eps(x, tt, eps)
                    loss, parts = self._loss(x0, src_feat, x_src, m, lv)
                    (grad,) = torch.autograd.grad(loss, x)
                eps = eps + c.grad_scale * math.sqrt(1 - float(s.abar[t])) * grad
            with torch.no_grad():
                x = s.ddim_step(x.detach(), eps, t, t_prev)
                if masked:
                    ref = (
                        x_src
                        if t_prev < 0
                        else s.q_sample(x_src, torch.tensor([t_prev]), torch.randn(x_src.shape, generator=gen))
                    )
                    x = m * ref + (1 - m) * x
        image = self._full_size(frame_bgr, x, mask_full if masked else None)
        if masked:
            image = self._clear_new_hair(image, mask_full)
        return Translation(image, x.detach(), m, mask_full, parts)

    def _full_size(self, frame_bgr: np.ndarray, x: torch.Tensor, mask_full: np.ndarray | None) -> np.ndarray:
        h, w = frame_bgr.shape[:2]
        up = cv2.resize(to_bgr(x), (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        if self.config.keep_detail:
            up += frame_bgr.astype(np.float32) - down_up(frame_bgr, self.size)
        out = np.clip(np.round(up), 0, 255).astype(np.uint8)
        if mask_full is not None:
            keep = hair_mask(mask_full.astype(np.float32), 0.5, self.config.rim_px)
            out[keep] = frame_bgr[keep]
        return out

    def _clear_new_hair(self, image: np.ndarray, mask_full: np.ndarray) -> np.ndarray:
        """Up to ``clear_rounds`` times: where the segmenter sees hair in the output more than
        2 px from the source's hair, inpaint (Telea, from the translated scalp around it). The
        generated frame carries the source's hair truth, so it must not gain hair."""
        keep = hair_mask(mask_full.astype(np.float32), 0.5, 2)
        for _ in range(self.config.clear_rounds):
            new = hair_mask(self.segmenter.segment(image).prob, self.config.threshold, 0) & ~keep
            if not new.any():
                break
            paint = hair_mask(new.astype(np.float32), 0.5, 2) & ~mask_full
            image = cv2.inpaint(image, paint.astype(np.uint8), 5, cv2.INPAINT_TELEA)
        return image

    def info(self) -> dict[str, Any]:
        """Settings for reports and provenance."""
        return {
            **dataclasses.asdict(self.config),
            "weights": self.config.weights._asdict(),
            "size": self.size,
            "features": self.features.name,
            "checkpoint": self.checkpoint,
        }
