"""Small conditional U-Net for DDPM/DDIM on scalp frames.

Input ``x`` Nx3xHxW float32 in [-1, 1] (RGB), timesteps ``t`` (N,) int64 in [0, T), condition
levels ``levels`` Nx3 int64 in ``CONDITION_NAMES`` order (dandruff, sebum, erythema), each a
``LEVEL_NAMES`` index 0..3 or ``NULL_LEVEL`` (-1: unknown / dropped). Output: predicted noise
(epsilon) Nx3xHxW.

Conditioning: one embedding table per condition (4 levels + a learnt null token) summed with a
sinusoidal timestep embedding; every residual block gets a per-channel scale and shift from it
(FiLM). Classifier-free guidance needs the unconditional prediction: pass all levels = -1.
``UNetConfig.cond_drop`` is the training-time probability of dropping a frame's whole condition
(``drop_conditions``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES

__all__ = ["UNetConfig", "CondUNet", "NULL_LEVEL", "drop_conditions", "timestep_embedding"]

NULL_LEVEL = -1


@dataclass(frozen=True)
class UNetConfig:
    """base: channels at full resolution; mults: channel multiplier per level (each level but
    the last halves the resolution); attn_last: self-attention at the coarsest level;
    cond_drop: probability of training a frame unconditionally."""

    base: int = 32
    mults: tuple[int, ...] = (1, 2, 2, 4)
    attn_last: bool = True
    cond_drop: float = 0.15
    groups: int = 8

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "mults": list(self.mults)}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> UNetConfig:
        return cls(**{**d, "mults": tuple(d["mults"])})  # type: ignore[arg-type]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) timesteps -> Nxdim sinusoidal embedding (float32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def drop_conditions(levels: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nx3 levels with each row replaced by NULL_LEVEL with probability ``p`` (classifier-free
    guidance training)."""
    if p <= 0:
        return levels
    drop = torch.rand(levels.shape[0], generator=generator, device=levels.device) < p
    return torch.where(drop[:, None], torch.full_like(levels, NULL_LEVEL), levels)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, FiLM from the embedding after the first conv, 1x1 skip."""

    def __init__(self, cin: int, cout: int, emb: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h  # type: ignore[no-any-return]


class _Attention(nn.Module):
    """Single-head self-attention over the HxW positions, residual."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        a = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / math.sqrt(c), dim=-1)
        return x + self.out(torch.einsum("nqk,nck->ncq", a, v).reshape(n, c, h, w))  # type: ignore[no-any-return]


class CondUNet(nn.Module):
    """Nx3xHxW noisy image, (N,) timesteps, Nx3 levels -> Nx3xHxW epsilon. H, W multiples of
    2 ** (len(mults) - 1)."""

    def __init__(self, config: UNetConfig = UNetConfig()) -> None:
        super().__init__()
        self.config = config
        b, g = config.base, config.groups
        emb = 4 * b
        self.time_mlp = nn.Sequential(nn.Linear(b, emb), nn.SiLU(), nn.Linear(emb, emb))
        # per condition: LEVEL_NAMES levels + the null token (index len(LEVEL_NAMES))
        self.cond = nn.ModuleList(nn.Embedding(len(LEVEL_NAMES) + 1, emb) for _ in CONDITION_NAMES)
        self.stem = nn.Conv2d(3, b, 3, padding=1)
        chans = [b * m for m in config.mults]
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        cin = b
        for i, c in enumerate(chans):
            self.down.append(_ResBlock(cin, c, emb, g))
            last = i == len(chans) - 1
            self.pool.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            cin = c
        self.mid1 = _ResBlock(cin, cin, emb, g)
        self.attn = _Attention(cin, g) if config.attn_last else nn.Identity()
        self.mid2 = _ResBlock(cin, cin, emb, g)
        self.up = nn.ModuleList()
        for c in reversed(chans):
            self.up.append(_ResBlock(cin + c, c, emb, g))
            cin = c
        self.out_norm = nn.GroupNorm(min(g, b), b)
        self.out = nn.Conv2d(b, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def embed(self, t: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """(N,) timesteps and Nx3 levels (-1 = null) -> Nx(4*base) embedding."""
        e = self.time_mlp(timestep_embedding(t, self.config.base))
        idx = torch.where(levels < 0, torch.full_like(levels, len(LEVEL_NAMES)), levels)
        for c, table in enumerate(self.cond):
            e = e + table(idx[:, c])
        return e  # type: ignore[no-any-return]

    def forward(self, x: torch.Tensor, t: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t, levels)
        h = self.stem(x)
        skips = []
        for block, pool in zip(self.down, self.pool, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = pool(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        for block in self.up:
            s = skips.pop()
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = block(torch.cat([h, s], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))  # type: ignore[no-any-return]
