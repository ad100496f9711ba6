"""Export-only wrappers and ONNX export for the prompt refiner (image encoder, mask decoder).

The encoder graph: ``REF_ENC_INPUT`` 1x3x480x640 -> ``REF_ENC_OUT`` 1xCx30x40. The decoder graph
takes static B groups of K points (``REF_DEC_*``) and returns low-resolution mask logits and
IoU predictions; resizing to the frame happens outside the graph (segment-anything issue #56:
an in-graph crop bakes in one frame size).

``ExportedRefinerDecoder`` re-implements ``segment_anything``'s prompt encoder and
``MaskDecoder.predict_masks`` as static arithmetic that TensorRT's parser takes: boolean index
assignment on labels becomes multiply-by-indicator, ``repeat_interleave`` of the image embedding
becomes a broadcast ``expand`` to the static B, the dense positional encoding is a constant, and
every reshape uses Python ints (no int64 shape tensors). ``check_decoder_rewrite`` proves the
rewrite equals the stock path. Every export is checked with ``onnx.checker`` (full), ORT vs
torch (encoder embeddings and decoder logits within ``ATOL``), and ``calibration.trt_support``.

``model`` is a ``server_train.models.refiner.Refiner``; this module names what it needs of one in
``RefinerModel`` and imports nothing from ``server_train`` (export sits below training).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from device.contracts.constants import (
    FRAME_HEIGHT,
    FRAME_WIDTH,
    PROMPT_GROUP_SIZE,
    REF_DEC_COORDS,
    REF_DEC_EMBED,
    REF_DEC_LABELS,
    REF_DEC_MASK_INPUT,
    REF_DEC_OUT_IOU,
    REF_DEC_OUT_MASKS,
    REF_ENC_INPUT,
    REF_ENC_OUT,
    REFINER_DECODER_FILE,
    REFINER_ENCODER_FILE,
    REFINER_GROUPS_PER_CALL,
)

__all__ = [
    "ExportedRefinerEncoder",
    "ExportedRefinerDecoder",
    "export_refiner",
    "RefinerModel",
    "check_decoder_rewrite",
    "fold_constant_inputs",
    "decoder_example",
    "ATOL",
    "ENCODER_FILE",
    "DECODER_FILE",
]


class RefinerModel(Protocol):
    """What the export uses of a refiner (``server_train.models.refiner.Refiner``, an nn.Module
    around segment_anything's prompt encoder and mask decoder)."""

    @property
    def encoder(self) -> nn.Module: ...  # 1x3xHxW normalised RGB -> 1xCxhxw image embedding

    @property
    def prompt_encoder(self) -> Any: ...  # segment_anything PromptEncoder

    @property
    def mask_decoder(self) -> Any: ...  # segment_anything MaskDecoder

    @property
    def to_decoder(self) -> nn.Module: ...  # image embedding -> decoder width

    @property
    def embed_size(self) -> tuple[int, int]: ...  # (h, w) of the image embedding

    @property
    def image_size(self) -> tuple[int, ...]: ...  # (H, W) of the frame, pixels

    @property
    def mask_scale(self) -> int: ...  # low-res masks are mask_scale x the embedding size

    @property
    def use_mask_input(self) -> bool: ...

    @property
    def config(self) -> dict[str, Any]: ...  # constructor arguments

    def decode(
        self, emb: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...  # the stock segment_anything decoder path

    def eval(self) -> Any: ...


OPSET = 17
ATOL = {"encoder": 1e-3, "decoder": 2e-3, "rewrite": 1e-4}  # max |difference|: embeddings, logits
ENCODER_FILE = REFINER_ENCODER_FILE
DECODER_FILE = REFINER_DECODER_FILE


class ExportedRefinerEncoder(nn.Module):
    """1x3xHxW normalised RGB -> 1xCxhxw image embedding."""

    def __init__(self, model: RefinerModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


class ExportedRefinerDecoder(nn.Module):
    """(image embedding 1xCxhxw, coords BxKx2 px, labels BxK, mask_input 1x1x4hx4w) ->
    (low-res mask logits Bx1xShxSw, S = the model's mask_scale, IoU predictions Bx1), with
    static B and K."""

    def __init__(self, model: RefinerModel, batch: int = REFINER_GROUPS_PER_CALL, k: int = PROMPT_GROUP_SIZE) -> None:
        super().__init__()
        pe, dec = model.prompt_encoder, model.mask_decoder
        self.batch, self.k = int(batch), int(k)
        self.h, self.w = model.embed_size
        self.scale = model.mask_scale
        self.dim = dec.transformer_dim
        self.use_mask_input = model.use_mask_input
        self.to_decoder = model.to_decoder
        self.mask_downscaling = pe.mask_downscaling
        self.transformer = dec.transformer
        self.output_upscaling = dec.output_upscaling
        self.hyper = dec.output_hypernetworks_mlps[0]
        self.iou_head = dec.iou_prediction_head
        img_h, img_w = model.image_size
        self.register_buffer("dense_pe", pe.get_dense_pe().detach().clone())
        self.register_buffer("gauss", pe.pe_layer.positional_encoding_gaussian_matrix.detach().clone())
        self.register_buffer("inv_size", torch.tensor([1.0 / img_w, 1.0 / img_h]))
        self.register_buffer("not_a_point", pe.not_a_point_embed.weight.detach().clone())
        self.register_buffer("neg_embed", pe.point_embeddings[0].weight.detach().clone())
        self.register_buffer("pos_embed", pe.point_embeddings[1].weight.detach().clone())
        self.register_buffer("no_mask", pe.no_mask_embed.weight.detach().reshape(1, -1, 1, 1).clone())
        self.register_buffer("out_tokens", torch.cat([dec.iou_token.weight, dec.mask_tokens.weight[:1]], 0).clone())

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """SAM's ``_embed_points`` (pad=False) as arithmetic: BxKx2, BxK -> BxKxD."""
        c = ((coords + 0.5) * self.inv_size) * 2.0 - 1.0
        c = (c @ self.gauss) * (2.0 * math.pi)
        pe = torch.cat([torch.sin(c), torch.cos(c)], dim=-1)
        lab = labels.unsqueeze(-1)
        pad = (lab < -0.5).to(pe.dtype)
        pos = (lab > 0.5).to(pe.dtype)
        neg = 1.0 - pad - pos
        return pe * (1.0 - pad) + pad * self.not_a_point + neg * self.neg_embed + pos * self.pos_embed

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, d, h, w = self.batch, self.dim, self.h, self.w
        dense = self.mask_downscaling(mask_input) if self.use_mask_input else self.no_mask + 0.0 * mask_input.mean()
        src = (self.to_decoder(image_embeddings) + dense).expand(b, d, h, w)  # was repeat_interleave
        pos_src = self.dense_pe.expand(b, d, h, w)
        tokens = torch.cat(
            [self.out_tokens.unsqueeze(0).expand(b, 2, d), self.embed_points(point_coords, point_labels)], 1
        )
        hs, keys = self.transformer(src, pos_src, tokens)
        src = keys.transpose(1, 2).reshape(b, d, h, w)
        up = self.output_upscaling(src)  # B x D/8 x Sh x Sw
        hyper = self.hyper(hs[:, 1, :]).unsqueeze(1)  # B x 1 x D/8
        s = self.scale
        masks = torch.matmul(hyper, up.reshape(b, d // 8, s * s * h * w)).reshape(b, 1, s * h, s * w)
        iou = self.iou_head(hs[:, 0, :])[:, :1]
        return masks, iou


def decoder_example(model: RefinerModel, batch: int, k: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random decoder inputs of the export shapes (labels in {-1, 0, 1}, points in the frame)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = model.embed_size
    c = model.encoder.config["embed_dim"]
    size = torch.tensor([model.image_size[1], model.image_size[0]], dtype=torch.float32)
    return {
        REF_DEC_EMBED: torch.randn(1, c, h, w, generator=gen),
        REF_DEC_COORDS: torch.floor(torch.rand(batch, k, 2, generator=gen) * size),
        REF_DEC_LABELS: torch.randint(-1, 2, (batch, k), generator=gen).float(),
        REF_DEC_MASK_INPUT: torch.randn(1, 1, 4 * h, 4 * w, generator=gen) * 4,
    }


def check_decoder_rewrite(model: RefinerModel, wrapper: ExportedRefinerDecoder, seed: int = 0) -> float:
    """Max |logit difference| between the wrapper and the stock segment_anything path; raises
    above ``ATOL['rewrite']``."""
    ex = decoder_example(model, wrapper.batch, wrapper.k, seed)
    with torch.no_grad():
        ref, _ = model.decode(*ex.values())
        got, _ = wrapper(*ex.values())
    diff = float((ref - got).abs().max())
    if diff > ATOL["rewrite"]:
        raise RuntimeError(f"decoder rewrite differs from segment_anything by {diff:.2e}")
    return diff


def fold_constant_inputs(proto: Any) -> int:
    """Replace every Pad/Slice/Squeeze/Unsqueeze/Reshape/Expand/Tile parameter input that the exporter
    computes from constants only (torch's ZeroPad2d emits a Concat/Slice/Transpose/Cast chain)
    by one initializer, then drop nodes nothing reads. Returns the number of inputs folded."""
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}

    def ancestors(name: str, acc: list[Any]) -> bool:
        if name in inits:
            return True
        node = producer.get(name)
        if node is None:
            return False  # a graph input: not constant
        if node in acc:
            return True
        if not all(ancestors(i, acc) for i in node.input if i):
            return False
        acc.append(node)
        return True

    folded = 0
    for node in list(graph.node):
        if node.op_type not in ("Pad", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Expand", "Tile"):
            continue
        for name in node.input[1:]:
            if not name or name in inits or producer.get(name) is None or producer[name].op_type == "Constant":
                continue
            chain: list[Any] = []
            if not ancestors(name, chain):
                continue
            sub = helper.make_graph(
                chain,
                "fold",
                [],
                [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
                [i for i in graph.initializer if any(i.name in n.input for n in chain)],
            )
            value = ReferenceEvaluator(helper.make_model(sub, opset_imports=proto.opset_import)).run(None, {})[0]
            graph.node.remove(producer.pop(name))
            graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
            inits.add(name)
            folded += 1
    used = {o.name for o in graph.output}
    for node in reversed(list(graph.node)):  # dead-node elimination, outputs first
        if any(o in used for o in node.output):
            used.update(node.input)
        else:
            graph.node.remove(node)
    return folded


def _onnx_export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], meta: dict) -> None:
    import onnx

    torch.onnx.export(
        module, args, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET, dynamo=False
    )
    proto = onnx.load(str(path))
    fold_constant_inputs(proto)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))


def _ort_diff(module: nn.Module, path: Path, feeds: dict[str, torch.Tensor]) -> float:
    import onnxruntime as ort

    with torch.no_grad():
        ref = module(*feeds.values())
    ref = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([o.name for o in sess.get_outputs()], {k: v.numpy() for k, v in feeds.items()})
    return max(float(np.max(np.abs(a.numpy() - b))) for a, b in zip(ref, got, strict=True))


def export_refiner(
    model: RefinerModel,
    out_dir: str | Path,
    batch: int = REFINER_GROUPS_PER_CALL,
    k: int = PROMPT_GROUP_SIZE,
    metadata: dict[str, Any] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Write ``ENCODER_FILE`` and ``DECODER_FILE`` into ``out_dir``; with ``check``, run every
    check and raise on failure. Returns {"encoder": path, "decoder": path, "parity": {...}}."""
    import onnx

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    enc, dec = ExportedRefinerEncoder(model).eval(), ExportedRefinerDecoder(model, batch, k).eval()
    meta = {**(metadata or {}), "model_config": model.config, "groups_per_call": batch, "points_per_group": k}
    enc_path, dec_path = out / ENCODER_FILE, out / DECODER_FILE
    image = torch.randn(1, 3, FRAME_HEIGHT, FRAME_WIDTH, generator=torch.Generator().manual_seed(0))
    _onnx_export(enc, (image,), enc_path, [REF_ENC_INPUT], [REF_ENC_OUT], meta)
    ex = decoder_example(model, batch, k)
    _onnx_export(dec, tuple(ex.values()), dec_path, list(ex), [REF_DEC_OUT_MASKS, REF_DEC_OUT_IOU], meta)
    report: dict[str, Any] = {"encoder": enc_path, "decoder": dec_path, "parity": {}}
    if check:
        from calibration.trt_support import assert_tensorrt_compatible

        parity = {"rewrite_vs_segment_anything": check_decoder_rewrite(model, dec)}
        for name, path, module, feeds in (
            ("encoder", enc_path, enc, {REF_ENC_INPUT: image}),
            ("decoder", dec_path, dec, ex),
        ):
            onnx.checker.check_model(str(path), full_check=True)
            diff = _ort_diff(module, path, feeds)
            if diff > ATOL[name]:
                raise RuntimeError(f"{path}: ONNX Runtime differs from torch by {diff:.2e} (> {ATOL[name]:.0e})")
            parity[name] = diff
            assert_tensorrt_compatible(path, label=str(path))
        report["parity"] = parity
    return report
