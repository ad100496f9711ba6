"""TinyViT-5M laid out as MobileSAM's image encoder, for timing the naive edge pipeline only.

Written from the TinyViT paper and MobileSAM's configuration (the ``mobile_sam`` package is
not a dependency): a conv patch embedding to stride 4, one MBConv stage (64), window-attention
stages (128, 160, 320 channels; depths 2, 2, 6, 2; heads 2, 4, 5, 10; windows 7, 7, 14, 7)
with attention biases and a depthwise "local conv" in each block, MobileSAM's stride-1 last
merge (64x64 tokens at 1024), and SAM's neck to 256 channels. Random weights: it measures
cost, not quality.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

__all__ = ["TinyViTSam", "build_tinyvit_sam"]


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class _MBConv(nn.Module):
    def __init__(self, dim: int, expand: int = 4) -> None:
        super().__init__()
        mid = dim * expand
        self.conv1, self.conv2, self.conv3 = _conv_bn(dim, mid), _conv_bn(mid, mid, 3, groups=mid), _conv_bn(mid, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(x + self.conv3(y))


class _Merge(nn.Module):
    """Patch merging: 1x1 conv, depthwise 3x3 (stride 2, or 1 for MobileSAM's last stage), 1x1."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv_bn(cin, cout), _conv_bn(cout, cout, 3, stride, groups=cout)
        self.conv3 = _conv_bn(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class _Block(nn.Module):
    """Window attention (with a learned bias per head and offset) + depthwise conv + MLP."""

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        yx = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"), -1).reshape(-1, 2)
        off = (yx[:, None] - yx[None]).abs()  # (|dy|, |dx|) between two tokens of a window
        self.register_buffer("bias_index", off[..., 0] * window + off[..., 1], persistent=False)
        self.bias_table = nn.Parameter(torch.zeros(heads, window * window))
        self.local = _conv_bn(dim, dim, 3, groups=dim)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws = self.window
        ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
        t = F.pad(x, (0, pw, 0, ph)).permute(0, 2, 3, 1)
        hh, ww = h + ph, w + pw
        t = t.reshape(b, hh // ws, ws, ww // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        qkv = self.qkv(self.norm1(t)).reshape(t.shape[0], ws * ws, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5 + self.bias_table[:, self.bias_index]
        t = self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(t.shape[0], ws * ws, c))
        t = t.reshape(b, hh // ws, ww // ws, ws, ws, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, hh, ww)
        x = x + t[:, :, :h, :w]
        x = self.local(x)
        return x + self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TinyViTSam(nn.Module):
    """Nx3xSxS -> Nx256x(S/16)x(S/16), MobileSAM's encoder layout."""

    def __init__(self, dims: tuple[int, ...] = (64, 128, 160, 320), depths: tuple[int, ...] = (2, 2, 6, 2)) -> None:
        super().__init__()
        heads, windows = (2, 4, 5, 10), (7, 7, 14, 7)
        self.embed = nn.Sequential(_conv_bn(3, dims[0] // 2, 3, 2), nn.GELU(), _conv_bn(dims[0] // 2, dims[0], 3, 2))
        layers: list[nn.Module] = [_MBConv(dims[0]) for _ in range(depths[0])]
        layers.append(_Merge(dims[0], dims[1], 2))
        for i in range(1, 4):
            layers += [_Block(dims[i], heads[i], windows[i]) for _ in range(depths[i])]
            if i < 3:
                layers.append(_Merge(dims[i], dims[i + 1], 2 if i == 1 else 1))
        self.layers = nn.Sequential(*layers)
        self.neck = nn.Sequential(
            nn.Conv2d(dims[3], 256, 1, bias=False), LayerNorm2d(256), nn.Conv2d(256, 256, 3, padding=1, bias=False)
        )
        self.neck_norm = LayerNorm2d(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck_norm(self.neck(self.layers(self.embed(x))))


def build_tinyvit_sam() -> TinyViTSam:
    """TinyViT-5M (MobileSAM), random weights."""
    return TinyViTSam()
