"""ONNX export and INT8 quantization of the scalp classifiers.

Export-only wrappers fix the graph contract from ``device.contracts.constants`` (static 1x3xHxW input,
named outputs); every export gets ``onnx.checker`` (full check) and an ONNX Runtime vs torch
parity check. ``quantize_int8`` makes the INT8 variant the one way every model gets one:
through ``calibration`` (the model's recipe rules, then the accuracy gate against FP32).
Model cards for the bundle: ``export.classifier_cards``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device.contracts.constants import (
    CLS_HEIGHT,
    CLS_INPUT,
    CLS_OUT_AREA,
    CLS_OUT_LEVELS,
    CLS_OUT_PRESENCE,
    CLS_WIDTH,
    DISEASE_INPUT,
    DISEASE_OUT_LOGITS,
    DISEASE_SIZE,
)

__all__ = ["export_condition_classifier", "export_disease_classifier", "check_parity", "quantize_int8"]

OPSET = 17


def _export(
    wrapper: nn.Module,
    shape: tuple[int, ...],
    path: str | Path,
    input_name: str,
    outputs: list[str],
    metadata: dict[str, Any] | None,
    atol: float,
) -> Path:
    import onnx

    from calibration.trt_support import assert_tensorrt_compatible, fold_constants
    from export.onnx_export import write_metadata

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = wrapper.eval()
    torch.onnx.export(
        wrapper,
        (torch.zeros(shape),),
        str(path),
        input_names=[input_name],
        output_names=outputs,
        opset_version=OPSET,
        dynamo=False,
    )
    try:
        write_metadata(path, metadata or {})
        fold_constants(path)  # static shape arithmetic (TF "same" padding) -> constants TensorRT accepts
        onnx.checker.check_model(str(path), full_check=True)
        check_parity(wrapper, path, shape, input_name, atol)
        assert_tensorrt_compatible(path, label=str(path))
    except BaseException:
        path.unlink(missing_ok=True)  # no graph that failed its checks is left where a bundle would take it
        raise
    return path


def check_parity(wrapper: nn.Module, path: Path, shape: tuple[int, ...], input_name: str, atol: float) -> float:
    """Torch vs ONNX Runtime on one random input; raises RuntimeError if any output differs by
    more than ``atol``. Returns the largest absolute difference."""
    import onnxruntime as ort

    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = wrapper(x)
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run([o.name for o in sess.get_outputs()], {input_name: x.numpy()})
    diff = max(float(np.max(np.abs(a.numpy() - b))) for a, b in zip(ref, got, strict=True))
    if diff > atol:
        raise RuntimeError(f"ONNX Runtime differs from torch by {diff:.2e} (> {atol:.0e}) for {path}")
    return diff


class _ConditionWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model(x)  # type: ignore[no-any-return]


def export_condition_classifier(
    model: nn.Module,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    atol: float = 1e-3,
    size: tuple[int, int] = (CLS_WIDTH, CLS_HEIGHT),
) -> Path:
    """Condition classifier -> ONNX: input ``CLS_INPUT`` 1x3xHxW ((W, H) = ``size``, default
    CLS_WIDTH x CLS_HEIGHT), outputs ``CLS_OUT_LEVELS`` (1x3x4 logits), ``CLS_OUT_PRESENCE`` (1x3
    logits), ``CLS_OUT_AREA`` (1x3)."""
    outs = [CLS_OUT_LEVELS, CLS_OUT_PRESENCE, CLS_OUT_AREA]
    shape = (1, 3, size[1], size[0])
    return _export(_ConditionWrapper(model), shape, path, CLS_INPUT, outs, metadata, atol)


def export_disease_classifier(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None, atol: float = 1e-3
) -> Path:
    """Disease classifier -> ONNX: input ``DISEASE_INPUT`` 1x3xSxS (S = DISEASE_SIZE times the
    model's tile grid), output ``DISEASE_OUT_LOGITS`` 1x3."""
    side = DISEASE_SIZE * int(getattr(model, "tiles", 1))
    shape = (1, 3, side, side)
    return _export(model, shape, path, DISEASE_INPUT, [DISEASE_OUT_LOGITS], metadata, atol)


def quantize_int8(
    fp32: str | Path,
    out: str | Path,
    calib: Sequence[str | Path],
    n: int = 64,
    preprocess: str | None = None,
    gate_frames: Sequence[str | Path] | None = None,
) -> Path:
    """INT8 Q/DQ of a classifier through ``calibration``: the model's rules and CPU recipe
    (``calibration.rules``), calibrated on up to ``n`` frames spread over the ``calib`` folders,
    then gated against FP32 on up to ``n`` frames of ``gate_frames`` (default: the calibration
    frames); the record and verdict go into the graph's ``quantization`` metadata.
    ``preprocess``: the disease photos' mode (default: the graph's metadata). Raises ValueError
    (and writes nothing) when the gate refuses it. Returns ``out``."""
    import onnx

    from calibration.card import quantize_gated
    from calibration.readers import balanced_frame_files, model_reader
    from calibration.rules import judge_for, model_kind, recipes_for, rules_for
    from export.onnx_export import write_metadata

    fp32, out = Path(fp32), Path(out)
    rules = rules_for({}, fp32)
    reader = model_reader(balanced_frame_files(calib, n), fp32, preprocess)
    held = model_reader(balanced_frame_files(gate_frames, n), fp32, preprocess) if gate_frames else reader
    recipe = next(r for r in recipes_for(rules, fp32) if not r.emulated)
    record, verdict = quantize_gated(fp32, out, reader, recipe, judge_for(model_kind(fp32), rules, held))
    if not verdict.passed:
        raise ValueError(f"{out.name}: the INT8 accuracy gate refused it ({verdict}); FP32 stays the model to ship")
    write_metadata(out, {"quantization": record | {"gate": verdict.to_dict()}})
    onnx.checker.check_model(str(out), full_check=True)
    return out
