"""ONNX export and INT8 quantization of the scalp classifiers.

Export-only wrappers fix the graph contract from ``device.contracts.constants`` (static 1x3xHxW input,
named outputs); every export gets ``onnx.checker`` (full check) and an ONNX Runtime vs torch
parity check. ``quantize_int8`` writes the static Q/DQ INT8 model calibrated on representative
frames: U8 activations with S8 per-channel weights, the variant that runs fast on x86 CPUs with
ONNX Runtime (signed activations left most convolutions in FP32 here; see DESIGN.md).
``calibration/`` had no quantizer yet when this was written; move this there when it has one.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device.capture.imageio import IMAGE_SUFFIXES, read_frame
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
from device.models.classifiers import prepare_condition_input, prepare_disease_input

__all__ = [
    "export_condition_classifier",
    "export_disease_classifier",
    "FrameCalibrationReader",
    "quantize_int8",
    "calibration_frames",
]

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
    write_metadata(path, metadata or {})
    fold_constants(path)  # static shape arithmetic (TF "same" padding) -> constants TensorRT accepts
    onnx.checker.check_model(str(path), full_check=True)
    check_parity(wrapper, path, shape, input_name, atol)
    assert_tensorrt_compatible(path, label=str(path))
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
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None, atol: float = 1e-3
) -> Path:
    """Condition classifier -> ONNX: input ``CLS_INPUT`` 1x3xCLS_HEIGHTxCLS_WIDTH, outputs
    ``CLS_OUT_LEVELS`` (1x3x4 logits), ``CLS_OUT_PRESENCE`` (1x3 logits), ``CLS_OUT_AREA`` (1x3)."""
    outs = [CLS_OUT_LEVELS, CLS_OUT_PRESENCE, CLS_OUT_AREA]
    return _export(_ConditionWrapper(model), (1, 3, CLS_HEIGHT, CLS_WIDTH), path, CLS_INPUT, outs, metadata, atol)


def export_disease_classifier(
    model: nn.Module, path: str | Path, metadata: dict[str, Any] | None = None, atol: float = 1e-3
) -> Path:
    """Disease classifier -> ONNX: input ``DISEASE_INPUT`` 1x3xSxS (S = DISEASE_SIZE times the
    model's tile grid), output ``DISEASE_OUT_LOGITS`` 1x3."""
    side = DISEASE_SIZE * int(getattr(model, "tiles", 1))
    shape = (1, 3, side, side)
    return _export(model, shape, path, DISEASE_INPUT, [DISEASE_OUT_LOGITS], metadata, atol)


def calibration_frames(folders: Sequence[str | Path], n: int) -> list[Path]:
    """Up to ``n`` image paths spread evenly over ``folders`` (an ``images/`` sub-folder is used
    when present), evenly spaced within each folder (deterministic)."""
    found = []
    for f in folders:
        root = Path(f) / "images" if (Path(f) / "images").is_dir() else Path(f)
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        k = max(1, n // max(len(folders), 1))
        if paths:
            found += [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(k, len(paths)))]
    return found


class FrameCalibrationReader:
    """ONNX Runtime ``CalibrationDataReader``: ``get_next()`` returns ``{input_name: 1x3xHxW}``
    for each frame in turn (prepared by ``prepare``), then None."""

    def __init__(self, paths: Sequence[Path], input_name: str, prepare: Callable[[np.ndarray], np.ndarray]) -> None:
        self.paths = list(paths)
        self.input_name = input_name
        self.prepare = prepare
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.paths):
            return None
        x = self.prepare(read_frame(self.paths[self._i]))
        self._i += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self._i = 0


def quantize_int8(
    fp32: str | Path,
    out: str | Path,
    calib: Sequence[str | Path],
    n: int = 64,
    input_name: str | None = None,
    preprocess: str = "paper",
) -> Path:
    """Static Q/DQ INT8 (QUInt8 activations, QInt8 per-channel weights, MinMax calibration) of
    ``fp32``, calibrated on up to ``n`` frames from the ``calib`` folders. The input name picks
    the preprocessing (condition frames, or disease photos with ``preprocess``). Returns ``out``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, out = Path(fp32), Path(out)
    graph_input = onnx.load(str(fp32)).graph.input[0]
    name = input_name or graph_input.name
    side = graph_input.type.tensor_type.shape.dim[-1].dim_value

    def prepare_disease(im: np.ndarray) -> np.ndarray:
        return prepare_disease_input(im, preprocess, side)

    prepare = prepare_disease if name == DISEASE_INPUT else prepare_condition_input
    paths = calibration_frames(calib, n)
    if not paths:
        raise FileNotFoundError(f"no calibration frames in {list(calib)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            FrameCalibrationReader(paths, name, prepare),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    proto = onnx.load(str(out))
    entry = proto.metadata_props.add()
    entry.key = "quantization"
    entry.value = json.dumps(
        {"format": "QDQ", "activations": "QUInt8", "weights": "QInt8 per-channel", "calibration_frames": len(paths)}
    )
    onnx.save(proto, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    return out


MANIFEST_NAME = "classifiers.json"
_TASKS = {
    "severity": "scalp condition levels (dandruff, sebum, erythema) x (good, mild, moderate, severe) + presence",
    "alopecia": "alopecia level (good, mild, moderate, severe) from hair features",
    "disease": "disease type of a clinical scalp photo (alopecia, psoriasis, folliculitis)",
}


def update_manifest(
    folder: str | Path,
    kind: str,
    files: dict[str, str | Path],
    commands: Sequence[str],
    metrics: dict[str, Any] | None = None,
    default_precision: str = "fp32",
) -> Path:
    """Add or replace the entry ``kind`` of ``folder/classifiers.json``: files by precision
    (copied into ``folder`` when elsewhere), sha256, graph I/O (names, shapes, dtypes), the
    training config and seed read from the FP32 graph's metadata, the commands that produced
    it, git commit and metrics. Returns the manifest path."""
    import shutil
    from datetime import datetime, timezone

    import onnx

    from device.models.bundle import sha256_file
    from export.release import git_commit

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text()) if path.is_file() else {"schema": "scalpedge.classifiers/1", "models": {}}
    names: dict[str, str] = {}
    for precision, src in files.items():
        src = Path(src)
        dst = folder / src.name
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        names[precision] = dst.name
    proto = onnx.load(str(folder / names["fp32"]))
    meta = {p.key: p.value for p in proto.metadata_props}

    def _io(values: Any) -> dict[str, Any]:
        return {
            v.name: {
                "shape": [d.dim_value for d in v.type.tensor_type.shape.dim],
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
            }
            for v in values
        }

    manifest["models"][kind] = {
        "task": _TASKS.get(kind, kind),
        "files": names,
        "sha256": {p: sha256_file(folder / n) for p, n in names.items()},
        "default_precision": default_precision,
        "inputs": _io(proto.graph.input),
        "outputs": _io(proto.graph.output),
        "metadata": {k: (json.loads(v) if v[:1] in "[{" else v) for k, v in meta.items()},
        "metrics": metrics or {},
        "provenance": {
            "commands": list(commands),
            "git_commit": git_commit(),
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    path.write_text(json.dumps(manifest, indent=2))
    return path
