"""Export-only wrapper and ONNX export for segmenters.

The wrapper fixes the graph contract from ``device.contracts.constants``: one static 1x3xHxW input named
``SEG_INPUT`` and two named outputs (hair logits, centre logits), no deep-supervision sides.
Every export is checked with ``onnx.checker`` (full check), against torch with ONNX Runtime
(max |logit difference| <= 1e-3), and against TensorRT's parser rules (``calibration.trt_support``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device.contracts.constants import (
    FRAME_HEIGHT,
    FRAME_WIDTH,
    INSTANCE_OUTPUTS,
    SEG_INPUT,
    SEG_OUT_MASK,
    SEG_OUT_THIN,
)

__all__ = ["ExportedSegmenter", "export_segmenter", "output_names", "check_parity", "write_metadata"]

OPSET = 17


class ExportedSegmenter(nn.Module):
    """Wraps a registry model: Nx3xHxW normalised RGB -> its first ``outputs`` channels, each
    Nx1xHxW (hair logits, then the instance output(s)). Only the fused output of
    deep-supervised models is kept."""

    def __init__(self, model: nn.Module, outputs: int = 2) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)[0]
        return tuple(out[:, i : i + 1] for i in range(self.outputs))


def output_names(instance_head: str) -> list[str]:
    """The graph's output names for a model whose instance output learnt ``instance_head``
    (a hair density comes with its thin-hair density)."""
    names = [SEG_OUT_MASK, INSTANCE_OUTPUTS[instance_head]]
    return [*names, SEG_OUT_THIN] if instance_head == "density" else names


def export_segmenter(
    model: nn.Module,
    path: str | Path,
    height: int = FRAME_HEIGHT,
    width: int = FRAME_WIDTH,
    metadata: dict[str, Any] | None = None,
    check: bool = True,
    instance_head: str = "centres",
) -> Path:
    """Export ``model`` to ONNX at a static 1x3xheightxwidth input; returns the path.

    instance_head: what the model's second output learned ("centres", "lines", "ends" or
    "density", which has a third output, the thin-hair density); it names the graph outputs
    (``output_names``). metadata is written into the graph's ``metadata_props`` (values
    JSON-encoded).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = output_names(instance_head)
    wrapper = ExportedSegmenter(model, len(names)).eval()
    dummy = torch.zeros(1, 3, height, width)
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        input_names=[SEG_INPUT],
        output_names=names,
        opset_version=OPSET,
        dynamo=False,
    )
    write_metadata(path, metadata or {})
    if check:
        from calibration.trt_support import assert_tensorrt_compatible

        onnx.checker.check_model(str(path), full_check=True)
        check_parity(wrapper, path, height, width)
        assert_tensorrt_compatible(path, label=str(path))
    return path


def write_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Add ``metadata`` to the ONNX file's ``metadata_props`` (non-string values JSON-encoded)."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    onnx.save(proto, str(path))


def check_parity(wrapper: nn.Module, path: Path, height: int, width: int, atol: float = 1e-3, seed: int = 0) -> float:
    """Run torch and ONNX Runtime on the same random input; raise if outputs differ by more
    than ``atol`` (logits). Returns the max absolute difference."""
    import onnxruntime as ort

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, height, width, generator=gen)
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(x)]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([o.name for o in sess.get_outputs()], {SEG_INPUT: x.numpy()})
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref, got, strict=True))
    if diff > atol:
        raise RuntimeError(f"ONNX Runtime differs from torch by {diff:.2e} (> {atol:.0e}) for {path}")
    return diff
