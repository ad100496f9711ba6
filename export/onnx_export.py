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

from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH, INSTANCE_OUTPUTS, SEG_INPUT, SEG_OUT_MASK

__all__ = ["ExportedSegmenter", "export_segmenter", "check_parity", "write_metadata"]

OPSET = 17


class ExportedSegmenter(nn.Module):
    """Wraps a registry model: Nx3xHxW normalised RGB -> (hair logits, centre logits), each
    Nx1xHxW. Only the fused output of deep-supervised models is kept."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(image)[0]
        return out[:, 0:1], out[:, 1:2]


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

    instance_head: what the model's second output learned ("centres", "lines" or "ends"); it names
    the graph output (``device.contracts.constants.INSTANCE_OUTPUTS``). metadata is written into the
    graph's ``metadata_props`` (values JSON-encoded).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportedSegmenter(model).eval()
    dummy = torch.zeros(1, 3, height, width)
    torch.onnx.export(
        wrapper,
        (dummy,),
        str(path),
        input_names=[SEG_INPUT],
        output_names=[SEG_OUT_MASK, INSTANCE_OUTPUTS[instance_head]],
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
