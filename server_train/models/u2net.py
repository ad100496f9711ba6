"""U²-Net (Qin et al., 2020): nested U-structure of residual U-blocks (RSU) with deep supervision.

Widths are configurable so the same code builds the full U²-Net, U²-NetP and the narrower
teacher we can afford to train on a CPU. Every variant outputs two maps per side output:
hair logits and per-hair centre logits (see ``device.contracts.constants``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["U2Net", "RSU", "RSUDilated"]


class ConvBNReLU(nn.Sequential):
    """3x3 conv (dilation d, 'same' padding) + BatchNorm + ReLU. NxCinxHxW -> NxCoutxHxW."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


def _upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class RSU(nn.Module):
    """Residual U-block of height ``depth`` (RSU-L): an L-level U-Net whose output is added to
    its input projection. NxCinxHxW -> NxCoutxHxW."""

    def __init__(self, depth: int, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.inp = ConvBNReLU(cin, cout)
        self.enc = nn.ModuleList([ConvBNReLU(cout, mid)])
        self.enc.extend(ConvBNReLU(mid, mid) for _ in range(depth - 2))
        self.bottom = ConvBNReLU(mid, mid, dilation=2)
        self.dec = nn.ModuleList(ConvBNReLU(2 * mid, mid) for _ in range(depth - 2))
        self.dec.append(ConvBNReLU(2 * mid, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.inp(x)
        skips = []
        h = xin
        for i, layer in enumerate(self.enc):
            h = layer(h)
            skips.append(h)
            if i < len(self.enc) - 1:
                h = F.max_pool2d(h, 2, ceil_mode=True)
        h = self.bottom(h)
        for i, layer in enumerate(self.dec):
            skip = skips[-1 - i]
            if h.shape[-2:] != skip.shape[-2:]:
                h = _upsample_like(h, skip)
            h = layer(torch.cat([h, skip], dim=1))
        return h + xin


class RSUDilated(nn.Module):
    """RSU-4F: the resolution-preserving RSU with dilations 1, 2, 4, 8 used at the coarsest
    stages. NxCinxHxW -> NxCoutxHxW."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__()
        self.inp = ConvBNReLU(cin, cout)
        self.e1 = ConvBNReLU(cout, mid, 1)
        self.e2 = ConvBNReLU(mid, mid, 2)
        self.e3 = ConvBNReLU(mid, mid, 4)
        self.bottom = ConvBNReLU(mid, mid, 8)
        self.d3 = ConvBNReLU(2 * mid, mid, 4)
        self.d2 = ConvBNReLU(2 * mid, mid, 2)
        self.d1 = ConvBNReLU(2 * mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xin = self.inp(x)
        h1 = self.e1(xin)
        h2 = self.e2(h1)
        h3 = self.e3(h2)
        h = self.bottom(h3)
        h = self.d3(torch.cat([h, h3], 1))
        h = self.d2(torch.cat([h, h2], 1))
        h = self.d1(torch.cat([h, h1], 1))
        return h + xin


class U2Net(nn.Module):
    """Two-level nested U-Net: six encoder stages (RSU-7,6,5,4,4F,4F), five decoder stages,
    a side output per decoder stage and the bottom, fused by a 1x1 conv.

    mids/outs: per-stage mid and output widths for encoder stages 1..6 (decoder stage i mirrors
    encoder stage i). ``out_ch`` maps per side output (2 = hair + centre).
    forward: Nx3xHxW -> list of 7 tensors Nx out_ch xHxW logits, fused first, then sides 1..6
    (training uses all for deep supervision; export keeps only the fused one).
    """

    def __init__(self, mids: Sequence[int], outs: Sequence[int], out_ch: int = 2) -> None:
        super().__init__()
        if len(mids) != 6 or len(outs) != 6:
            raise ValueError("U2Net needs six stage widths")
        self.config = {"mids": list(mids), "outs": list(outs), "out_ch": out_ch}
        ins = [3, *outs[:5]]
        depths = [7, 6, 5, 4]
        self.encoders = nn.ModuleList(
            [RSU(depths[i], ins[i], mids[i], outs[i]) for i in range(4)]
            + [RSUDilated(ins[4], mids[4], outs[4]), RSUDilated(ins[5], mids[5], outs[5])]
        )
        # Decoder stage i (1..5) takes cat(up(previous), encoder i) and outputs outs[i-1]-ish
        # widths mirrored as in the paper: de5 -> outs[4], de4 -> outs[3] ... de1 -> outs[0].
        dec_in = [outs[5] + outs[4], outs[4] + outs[3], outs[3] + outs[2], outs[2] + outs[1], outs[1] + outs[0]]
        dec_out = [outs[4], outs[3], outs[2], outs[1], outs[0]]
        dec_mid = [mids[4], mids[3], mids[2], mids[1], mids[0]]
        self.decoders = nn.ModuleList(
            [
                RSUDilated(dec_in[0], dec_mid[0], dec_out[0]),
                RSU(4, dec_in[1], dec_mid[1], dec_out[1]),
                RSU(5, dec_in[2], dec_mid[2], dec_out[2]),
                RSU(6, dec_in[3], dec_mid[3], dec_out[3]),
                RSU(7, dec_in[4], dec_mid[4], dec_out[4]),
            ]
        )
        side_in = [outs[0], outs[1], outs[2], outs[3], outs[4], outs[5]]
        self.sides = nn.ModuleList(nn.Conv2d(c, out_ch, 3, padding=1) for c in side_in)
        self.fuse = nn.Conv2d(6 * out_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        h = x
        for i, enc in enumerate(self.encoders):
            h = enc(h)
            feats.append(h)
            if i < 5:
                h = F.max_pool2d(h, 2, ceil_mode=True)
        # feats[5] is the bottom; decode upwards.
        dec_feats = [feats[5]]
        h = feats[5]
        for j, dec in enumerate(self.decoders):
            skip = feats[4 - j]
            h = dec(torch.cat([_upsample_like(h, skip), skip], 1))
            dec_feats.append(h)
        # dec_feats: [bottom, de5, de4, de3, de2, de1] -> sides ordered stage 1..6
        ordered = [dec_feats[5], dec_feats[4], dec_feats[3], dec_feats[2], dec_feats[1], dec_feats[0]]
        sides = [_upsample_like(s(f), x) for s, f in zip(self.sides, ordered, strict=True)]
        fused = self.fuse(torch.cat(sides, 1))
        return [fused, *sides]
