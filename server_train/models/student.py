"""The on-device student: a FLOP-budgeted U-Net built for 640x480 on a Jetson.

Design for cost, not parameters: a stride-2 stem, a five-level encoder (stride 32, plain 3x3
convs that every runtime and INT8 kernel handles well), additive (FPN-style) skips so the
decoder never convolves wide concatenations, and a narrow full-resolution head that sees the
raw frame so 1-2 px strands survive. About 4 GFLOP at 640x480 for the default widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from server_train.models.u2net import ConvBNReLU

__all__ = ["StudentNet"]


class _Down(nn.Sequential):
    """Stride-2 3x3 conv then a 3x3 conv. NxCinxHxW -> NxCoutx(H/2)x(W/2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            ConvBNReLU(cout, cout),
        )


class _Up(nn.Module):
    """Upsample the coarse map x2, project it to the skip's width (1x1), add, refine (3x3)."""

    def __init__(self, cin: int, cskip: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, cskip, 1, bias=False)
        self.refine = ConvBNReLU(cskip, cskip)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.proj(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(up + skip)


class StudentNet(nn.Module):
    """widths: channels at strides 2, 4, 8, 16, 32; head: channels of the full-res head.
    forward: Nx3xHxW -> list with one Nx out_ch xHxW logits tensor (hair, centre).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96, 128), head: int = 8, out_ch: int = 2) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError("StudentNet needs five widths")
        self.config = {"widths": list(widths), "head": head, "out_ch": out_ch}
        w = list(widths)
        self.stem = _Down(3, w[0])
        self.downs = nn.ModuleList(_Down(w[i], w[i + 1]) for i in range(4))
        self.ups = nn.ModuleList(_Up(w[i + 1], w[i]) for i in reversed(range(4)))
        self.full = ConvBNReLU(3, head)
        self.full_proj = nn.Conv2d(w[0], head, 1, bias=False)
        self.head = ConvBNReLU(head, head)
        self.out = nn.Conv2d(head, out_ch, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        h = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
            h = up(h, skip)
        up = F.interpolate(self.full_proj(h), size=x.shape[-2:], mode="bilinear", align_corners=False)
        h = self.head(self.full(x) + up)
        return [self.out(h)]
