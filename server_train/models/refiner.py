"""The prompt refiner: a small image encoder with SAM's prompt encoder and mask decoder.

``RefinerEncoder``: EfficientNet-Lite0 (ImageNet weights, stem and first stages frozen) on the
frame pooled to 240x320, its 80-channel stage at stride 8 (= 16 of the frame), stride-4
detail folded in by space-to-depth, and a SAM-like neck -> a SAM-shaped embedding
``REFINER_EMBED_DIM`` x 30 x 40 at 480x640 (SAM: 256 x 64 x 64 at 1024); 1.08 GFLOP per frame.
``Refiner``: that encoder + ``segment_anything``'s ``PromptEncoder`` and ``MaskDecoder``
(one mask token, no multimask). The decoder runs at width ``decoder_dim`` (a 1x1 projection
from the embedding width when they differ): at 30x40 tokens its transformer, not the mask
upscaling, is most of its cost (torch, 1 thread, 30x40: 256 wide 1.2 GFLOP / 41 ms per group;
ONNX Runtime, 1 thread, K=64, CPU shared with a training job: 128 wide 19.6 ms, 64 wide 11.2 ms).

Input: Nx3xHxW RGB normalised with ``device.contracts.constants.PIXEL_MEAN/STD`` (the segmenter's own
input); the encoder converts to the Lite models' (x - 127) / 128 internally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from device.contracts.constants import (
    CLS_PIXEL_MEAN,
    CLS_PIXEL_STD,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    PIXEL_MEAN,
    PIXEL_STD,
    REFINER_EMBED_DIM,
)
from server_train.models.efficientnet_lite import LITE0_BLOCKS, EfficientNetLite

__all__ = ["RefinerEncoder", "Refiner", "REFINERS", "build_refiner", "build_refiner_tiny", "refiner_from_config"]

TINY_BLOCKS = ((3, 1, 1, 8, 8, 1), (3, 2, 2, 8, 8, 1), (3, 2, 2, 8, 16, 1), (3, 2, 2, 16, 16, 1))


def _lite0_half_res() -> list[list[int]]:
    """Lite0 stages to 80 channels with the last stride set to 1: on a 240x320 input that ends
    at stride 8 = a 30x40 grid, stride 16 of the 480x640 frame."""
    blocks = [list(b) for b in LITE0_BLOCKS[:4]]
    blocks[3][1] = 1
    return blocks


class RefinerEncoder(nn.Module):
    """Nx3xHxW normalised RGB -> N x embed_dim x H/16 x W/16 image embedding.

    The frame is average-pooled by ``downsample`` (2: 240x320) and run through EfficientNet-Lite
    ``blocks``; the first ``prefix`` blocks are frozen and cacheable (``forward_prefix`` /
    ``forward_from_prefix``). The output of block ``detail - 1`` (stride 4 of the pooled frame)
    is folded into the embedding grid by space-to-depth, next to the last block's output, then a
    1x1 projection and a depthwise-separable mixer with SAM's LayerNorm2d (SAM's neck, cheaper).
    """

    def __init__(
        self,
        blocks: Any = None,
        prefix: int = 5,
        detail: int = 3,
        downsample: int = 2,
        embed_dim: int = REFINER_EMBED_DIM,
    ) -> None:
        super().__init__()
        blocks = [list(b) for b in (blocks if blocks is not None else _lite0_half_res())]
        self.config = {
            "blocks": blocks,
            "prefix": prefix,
            "detail": detail,
            "downsample": downsample,
            "embed_dim": embed_dim,
        }
        self.backbone = EfficientNetLite(blocks, stem=blocks[0][3], head=8)
        del self.backbone._conv_head, self.backbone._bn1
        self.prefix, self.detail = prefix, detail
        self.pool = nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity()
        c_detail = self.backbone._blocks[detail - 1]._project_conv.out_channels
        c_last = blocks[-1][4]
        self.proj = nn.Sequential(nn.Conv2d(c_last + 4 * c_detail, embed_dim, 1, bias=False), LayerNorm2d(embed_dim))
        self.mix = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, 3, padding=1, groups=embed_dim, bias=False),
            nn.Conv2d(embed_dim, embed_dim, 1, bias=False),
            LayerNorm2d(embed_dim),
        )
        # (x_imagenet * std + mean - 127/255) / (128/255), per channel, as a 1x1 affine.
        scale = torch.tensor([s / c for s, c in zip(PIXEL_STD, CLS_PIXEL_STD, strict=True)])
        shift = torch.tensor([(m - cm) / c for m, cm, c in zip(PIXEL_MEAN, CLS_PIXEL_MEAN, CLS_PIXEL_STD, strict=True)])
        self.register_buffer("in_scale", scale.view(1, 3, 1, 1))
        self.register_buffer("in_shift", shift.view(1, 3, 1, 1))

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Stem and prefix blocks (kept at their ImageNet values)."""
        bb = self.backbone
        mods = [bb._conv_stem, bb._bn0, *bb._blocks[: self.prefix]]
        return [p for m in mods for p in m.parameters()]

    def forward_prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen part: Nx3xHxW -> (detail features, prefix output)."""
        bb = self.backbone
        y = bb.act(bb._bn0(bb._conv_stem(bb._pad0(self.pool(x * self.in_scale + self.in_shift)))))
        detail = y
        for i, block in enumerate(bb._blocks[: self.prefix]):
            y = block(y)
            if i == self.detail - 1:
                detail = y
        return detail, y

    def forward_from_prefix(self, detail: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Trainable part: the prefix's outputs -> embedding."""
        if self.detail > self.prefix:
            raise ValueError("detail must be inside the prefix")
        for block in self.backbone._blocks[self.prefix :]:
            y = block(y)
        x = self.proj(torch.cat([y, F.pixel_unshuffle(detail, 2)], dim=1))
        return x + self.mix(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_prefix(*self.forward_prefix(x))


class Refiner(nn.Module):
    """Image encoder + SAM prompt encoder + SAM mask decoder (single mask output).

    ``embed(x)`` once per frame; ``decode(emb, coords, labels, mask_input)`` per batch of
    prompt groups: emb 1xCxhxw, coords BxKx2 (x, y) pixels, labels BxK (1/0/-1),
    mask_input 1x1x4hx4w logits or None -> (Bx1xShxSw mask logits, Bx1 IoU predictions), with
    S = ``mask_scale`` (SAM: 4).
    """

    def __init__(
        self,
        encoder: RefinerEncoder,
        decoder_dim: int = 128,
        depth: int = 2,
        heads: int = 8,
        image_size: tuple[int, int] = (FRAME_HEIGHT, FRAME_WIDTH),
        use_mask_input: bool = True,
        mask_scale: int = 4,
    ) -> None:
        super().__init__()
        self.config = {
            "encoder": encoder.config,
            "decoder_dim": decoder_dim,
            "depth": depth,
            "heads": heads,
            "image_size": list(image_size),
            "use_mask_input": use_mask_input,
            "mask_scale": mask_scale,
        }
        self.encoder = encoder
        embed_dim = encoder.config["embed_dim"]
        self.embed_size = (image_size[0] // 16, image_size[1] // 16)
        self.image_size = tuple(image_size)
        self.use_mask_input = use_mask_input
        self.to_decoder = nn.Identity() if embed_dim == decoder_dim else nn.Conv2d(embed_dim, decoder_dim, 1)
        self.prompt_encoder = PromptEncoder(
            embed_dim=decoder_dim,
            image_embedding_size=self.embed_size,
            input_image_size=self.image_size,
            mask_in_chans=16,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=0,
            transformer=TwoWayTransformer(
                depth=depth, embedding_dim=decoder_dim, mlp_dim=8 * decoder_dim, num_heads=heads
            ),
            transformer_dim=decoder_dim,
            iou_head_hidden_dim=decoder_dim,
        )
        self.mask_scale = mask_scale
        if mask_scale == 8:  # one more 2x stage: masks at half the frame size instead of a quarter
            c = decoder_dim // 8
            self.mask_decoder.output_upscaling.extend([nn.ConvTranspose2d(c, c, kernel_size=2, stride=2), nn.GELU()])
        elif mask_scale != 4:
            raise ValueError("mask_scale must be 4 (SAM) or 8")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(
        self, emb: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The stock segment_anything path (training, and the reference for export parity)."""
        sparse = self.prompt_encoder._embed_points(coords, labels, pad=False)
        if self.use_mask_input and mask_input is not None:
            dense = self.prompt_encoder._embed_masks(mask_input)
        else:
            dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *self.embed_size)
        masks, iou = self.mask_decoder.predict_masks(
            self.to_decoder(emb), self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        return masks[:, :1], iou[:, :1]

    def forward(
        self, x: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.embed(x), coords, labels, mask_input)


def refiner_from_config(config: dict[str, Any]) -> Refiner:
    """Rebuild a refiner from the ``config`` dict a checkpoint carries."""
    enc = config["encoder"]
    return Refiner(
        RefinerEncoder(enc["blocks"], enc["prefix"], enc["detail"], enc["downsample"], enc["embed_dim"]),
        decoder_dim=config["decoder_dim"],
        depth=config["depth"],
        heads=config["heads"],
        image_size=tuple(config["image_size"]),  # type: ignore[arg-type]
        use_mask_input=config["use_mask_input"],
        mask_scale=config.get("mask_scale", 4),
    )


def build_refiner(pretrained: bool = True) -> Refiner:
    """Lite0 encoder on the half-resolution frame (ImageNet-initialised when ``pretrained``),
    64-wide decoder (4 heads), masks at 240x320 (one more 2x upscale than SAM's)."""
    model = Refiner(RefinerEncoder(), decoder_dim=64, heads=4, mask_scale=8)
    if pretrained:
        from server_train.models.efficientnet_lite import lite0_weights_path

        state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        own = model.encoder.backbone.state_dict()
        keep = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.encoder.backbone.load_state_dict(keep, strict=False)
        missing = [k for k in own if k not in keep and not k.endswith("num_batches_tracked")]
        if missing:
            raise RuntimeError(f"ImageNet weights lack {missing[:4]}")
    return model


def build_refiner_tiny() -> Refiner:
    """Tiny refiner for tests (random weights)."""
    return Refiner(
        RefinerEncoder(TINY_BLOCKS, prefix=3, detail=3, downsample=1, embed_dim=32), decoder_dim=32, depth=1, heads=2
    )


REFINERS: dict[str, Callable[[], Refiner]] = {"refiner": build_refiner, "refiner_tiny": build_refiner_tiny}
