"""SAM image encoders as distillation teachers (MobileSAM's decoupled distillation).

``load_sam_image_encoder`` reads a ``segment_anything`` checkpoint (ViT-B/L/H as released, i.e.
a full ``Sam`` state dict, or an image-encoder-only state dict) and rebuilds its
``ImageEncoderViT`` with the architecture *inferred from the weights* (depth, width, heads,
MLP ratio, global-attention blocks, window, input size, output channels), so the official
files and the small ViT-B-shaped test teacher load through the same code. MobileSAM's TinyViT
needs the ``mobile_sam`` package, which is not a dependency here: such files are refused with
that message.

``teacher_embedding`` applies SAM's preprocessing (resize the longest side to the encoder's
input size, pad bottom/right) to a 480x640 frame normalised with ImageNet mean/std (SAM's own
pixel mean/std are the same numbers in 0..255 units) and pools the valid part of the embedding
to the student's grid.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT
from torch import nn

__all__ = ["load_sam_image_encoder", "infer_vit_config", "teacher_embedding", "save_small_vit_teacher"]

_PREFIX = "image_encoder."


def infer_vit_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """ImageEncoderViT constructor arguments from an encoder state dict (no prefix)."""
    if "patch_embed.proj.weight" not in state:
        if any(k.startswith("layers.") for k in state):
            raise ValueError("this looks like a MobileSAM TinyViT checkpoint: install mobile_sam to load it")
        raise ValueError("not a segment_anything ViT image encoder state dict")
    embed_dim, _, patch, _ = state["patch_embed.proj.weight"].shape
    grid = state["pos_embed"].shape[1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    head_dim = state["blocks.0.attn.rel_pos_h"].shape[1]
    global_idx, window = [], 0
    for i in range(depth):
        size = state[f"blocks.{i}.attn.rel_pos_h"].shape[0]
        if size == 2 * grid - 1:
            global_idx.append(i)
        else:
            window = (size + 1) // 2
    return {
        "img_size": int(grid * patch),
        "patch_size": int(patch),
        "embed_dim": int(embed_dim),
        "depth": int(depth),
        "num_heads": int(embed_dim // head_dim),
        "mlp_ratio": float(state["blocks.0.mlp.lin1.weight"].shape[0] / embed_dim),
        "out_chans": int(state["neck.0.weight"].shape[0]),
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "use_rel_pos": True,
        "window_size": int(window),
        "global_attn_indexes": tuple(global_idx),
    }


def load_sam_image_encoder(path: str | Path) -> ImageEncoderViT:
    """The image encoder of a segment_anything checkpoint file (eval mode, frozen)."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if any(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items() if k.startswith(_PREFIX)}
    config = infer_vit_config(state)
    encoder = ImageEncoderViT(norm_layer=partial(nn.LayerNorm, eps=1e-6), **config)
    encoder.load_state_dict(state, strict=True)
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()


def teacher_embedding(encoder: ImageEncoderViT, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Teacher embedding of Nx3xHxW ImageNet-normalised frames, pooled to N x C x grid.

    SAM's transform: resize so the longest side is ``encoder.img_size``, pad bottom/right with
    zeros (the normalised mean), encode, keep the embedding cells of the unpadded part.
    """
    size = encoder.img_size
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    nh, nw = int(round(h * scale)), int(round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    x = F.pad(x, (0, size - nw, 0, size - nh))
    with torch.no_grad():
        emb = encoder(x)
    cells = emb.shape[-1] / size
    valid = emb[..., : max(1, round(nh * cells)), : max(1, round(nw * cells))]
    return F.adaptive_avg_pool2d(valid, grid)


def save_small_vit_teacher(
    path: str | Path, embed_dim: int = 64, depth: int = 2, out_chans: int = 32, img_size: int = 128, seed: int = 0
) -> Path:
    """Write a randomly initialised, shrunken ViT-B-shaped SAM image encoder in the official
    checkpoint layout (``image_encoder.*`` keys), for tests of the real loading path."""
    torch.manual_seed(seed)
    enc = ImageEncoderViT(
        img_size=img_size,
        patch_size=16,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=4,
        mlp_ratio=4.0,
        out_chans=out_chans,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        window_size=14,
        global_attn_indexes=(depth - 1,),
    )
    path = Path(path)
    torch.save({_PREFIX + k: v for k, v in enc.state_dict().items()}, path)
    return path
