"""The pixel refiner: the student's hair probabilities refined at full resolution.

The student (``server_train.models.student``) is a FLOP-budgeted network whose full-resolution
head is 8 channels wide: it misses faint, thin strands and draws soft edges. The pixel refiner
sees the frame again beside the student's P(hair) and, with ``prompt_input``, the prompt
refiner's P(hair) of M_AP (ScalpVision's second mask), and predicts a correction of the
student's logit at every pixel (a residual: at initialisation it returns the student's map):

    frame (3) + P (1) + logit(P) / 8 (1) [+ Q (1)] -> 2x2 stride-2 conv (w0: every full-res pixel
    is seen, the grid is halved) -> 3x3 (w0) -> stride 4 (w1, dilated) -> stride 8 (w2) ->
    additive skips back to stride 2 -> 1x1 to 4 channels -> pixel shuffle: a full-resolution
    delta; refined logit = logit(P) + delta

It is the fusion of M^ and M_AP, learnt instead of ScalpVision's AND (which can only remove
pixels). No convolution runs at full resolution: a first design with 12-channel full-res
convs cost 72 ms at 640x480 on one core of the development CPU (ONNX Runtime), this one 21 ms
(widths 16, 24, 32: 36 k parameters, about 0.7 GMAC).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PixelRefinerNet", "pixel_refiner_from_config", "LOGIT_EPS"]

LOGIT_EPS = 1e-4  # P is clamped to [eps, 1 - eps] before its logit (P = 0 or 1 would be infinite)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation), nn.ReLU(inplace=True)
    )


class PixelRefinerNet(nn.Module):
    """widths: channels at strides 2, 4 and 8; prompt_input: take the prompt refiner's P(hair).
    forward(x Nx3xHxW normalised frame, p Nx1xHxW student P(hair) in [0, 1], q Nx1xHxW prompt
    refiner P(hair) when ``prompt_input``) -> Nx1xHxW refined logits (H, W divisible by 8)."""

    def __init__(self, widths: Sequence[int] = (16, 24, 32), prompt_input: bool = False) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"the pixel refiner needs three positive widths, got {list(widths)}")
        w0, w1, w2 = (int(w) for w in widths)
        self.prompt_input = bool(prompt_input)
        self.config: dict[str, Any] = {"widths": [w0, w1, w2], "prompt_input": self.prompt_input}
        self.stem = nn.Sequential(
            nn.Conv2d(6 if self.prompt_input else 5, w0, 2, stride=2), nn.ReLU(inplace=True), _conv(w0, w0)
        )
        self.down1 = nn.Sequential(_conv(w0, w1, stride=2), _conv(w1, w1, dilation=2))
        self.down2 = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))
        self.proj2, self.refine1 = nn.Conv2d(w2, w1, 1), _conv(w1, w1)
        self.proj1, self.refine0 = nn.Conv2d(w1, w0, 1), _conv(w0, w0)
        self.head = nn.Conv2d(w0, 4, 1)
        self.shuffle = nn.PixelShuffle(2)
        nn.init.zeros_(self.head.weight)  # starts as the identity on the student's map
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, p: torch.Tensor, q: torch.Tensor | None = None) -> torch.Tensor:
        if (q is not None) != self.prompt_input:
            raise ValueError("give q (the prompt refiner's P(hair)) exactly when the network takes it")
        logit = torch.logit(p.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS))
        h1 = self.stem(torch.cat([x, p, logit * 0.125, *([q] if q is not None else [])], dim=1))
        h2 = self.down1(h1)
        h3 = self.down2(h2)
        h2 = self.refine1(h2 + F.interpolate(self.proj2(h3), size=h2.shape[-2:], mode="bilinear", align_corners=False))
        h1 = self.refine0(h1 + F.interpolate(self.proj1(h2), size=h1.shape[-2:], mode="bilinear", align_corners=False))
        return logit + self.shuffle(self.head(h1))


def pixel_refiner_from_config(config: dict[str, Any]) -> PixelRefinerNet:
    """The network a checkpoint's ``model_config`` describes."""
    return PixelRefinerNet(widths=config.get("widths", (16, 24, 32)), prompt_input=config.get("prompt_input", False))
