"""Static check of an ONNX graph against what TensorRT 10's ONNX parser accepts.

Run on the server so an unsupported graph fails here, not on the Jetson. The check is
conservative: an op must be on ``TRT_OPS`` (ops the parser of TensorRT 10.x, as shipped with
JetPack 6, converts) and pass the per-op rules below, which encode the restrictions of the
parser's operator table that our exporters can trip over:

- Conv/ConvTranspose weights must be constant (an initialiser, or DequantizeLinear of one).
- QuantizeLinear/DequantizeLinear: INT8 with zero points all 0 (symmetric); TensorRT has no
  UINT8 Q/DQ, so ONNX Runtime's default asymmetric uint8 activations are refused.
- Resize: nearest/linear/cubic, with a coordinate transformation the parser knows.
- Slice/Squeeze/Unsqueeze/Reduce* axes, and Pad pads, must be constants.
- INT64 constants are cast to INT32 by the parser: values outside int32 are refused.
- Graph inputs must have static shapes (engines here are built for one shape) and dtypes
  TensorRT binds (float32, float16, int32, int8, bool, uint8).
- Default-domain opset within ``OPSET_RANGE``; ops from other domains are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TRT_OPS",
    "OPSET_RANGE",
    "Finding",
    "check_tensorrt_support",
    "assert_tensorrt_compatible",
    "fold_constants",
]

OPSET_RANGE = (9, 20)

TRT_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
    Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
    Dropout Einsum Elu Equal Erf Exp Expand Flatten Floor Gather GatherElements GatherND Gelu Gemm
    GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization HardSigmoid HardSwish
    Identity If InstanceNormalization LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LRN MatMul Max
    MaxPool Mean Min Mul Neg Not Or Pad Pow PRelu QuantizeLinear Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round
    Selu Shape Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum
    Tan Tanh ThresholdedRelu Tile TopK Transpose Unsqueeze Where Xor""".split()
)

_RESIZE_MODES = {"nearest", "linear", "cubic"}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
# op type -> input index that must be a constant (opset >= 13 moved axes to inputs).
_CONST_INPUTS = {"Slice": (1, 2, 3, 4), "Squeeze": (1,), "Unsqueeze": (1,), "Pad": (1, 2), "TopK": (1,)}
_BINDABLE = {1, 2, 3, 6, 9, 10}  # float32, uint8, int8, int32, bool, float16
_INT32 = np.iinfo(np.int32)


@dataclass(frozen=True)
class Finding:
    """One reason TensorRT would reject the graph. node is the node name (or tensor name)."""

    node: str
    op_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.op_type} {self.node!r}: {self.message}"


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def check_tensorrt_support(model: Any) -> list[Finding]:
    """Every rule violation in ``model`` (an onnx.ModelProto or a path); empty means it passes."""
    import onnx
    from onnx import numpy_helper

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    graph = model.graph
    findings: list[Finding] = []
    inits = {i.name: i for i in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}

    def constant(name: str) -> bool:
        if name in inits:
            return True
        node = producers.get(name)
        return node is not None and node.op_type == "Constant"

    def const_value(name: str) -> np.ndarray | None:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = producers.get(name)
        if node is not None and node.op_type == "Constant":
            t = _attr(node, "value", None)
            return None if t is None else numpy_helper.to_array(t)
        return None

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        findings.append(Finding("<model>", "opset", f"default-domain opset {opset} outside {OPSET_RANGE}"))

    for value in graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        if any(not d.HasField("dim_value") for d in t.shape.dim):
            findings.append(Finding(value.name, "input", "dynamic shape; engines here are built for static shapes"))
        if t.elem_type not in _BINDABLE:
            findings.append(Finding(value.name, "input", f"dtype {t.elem_type} cannot be bound by TensorRT"))

    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.INT64:
            arr = numpy_helper.to_array(init)
            if arr.size and (arr.min() < _INT32.min or arr.max() > _INT32.max):
                findings.append(Finding(init.name, "initializer", "INT64 values outside int32 range"))

    for node in graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        if node.domain not in ("", "ai.onnx"):
            findings.append(Finding(name, node.op_type, f"custom domain {node.domain!r}"))
            continue
        if node.op_type not in TRT_OPS:
            findings.append(Finding(name, node.op_type, "op not supported by the TensorRT 10 ONNX parser"))
            continue
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            w = node.input[1]
            dq = producers.get(w)
            ok = constant(w) or (dq is not None and dq.op_type == "DequantizeLinear" and constant(dq.input[0]))
            if not ok:
                findings.append(Finding(name, node.op_type, "weights are not a constant"))
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = const_value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if zp is None and len(node.input) > 2 and node.input[2]:
                findings.append(Finding(name, node.op_type, "zero point is not a constant"))
            elif zp is not None and (zp.dtype != np.int8 or np.any(zp != 0)):
                findings.append(
                    Finding(name, node.op_type, f"needs int8 zero point 0 (symmetric), got {zp.dtype} {zp.ravel()[:4]}")
                )
        elif node.op_type == "Resize":
            mode = _attr(node, "mode", "nearest")
            coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
            if mode not in _RESIZE_MODES:
                findings.append(Finding(name, node.op_type, f"mode {mode!r} not supported"))
            if coord not in _RESIZE_COORDS:
                findings.append(Finding(name, node.op_type, f"coordinate_transformation_mode {coord!r} not supported"))
        elif node.op_type.startswith("Reduce") and len(node.input) > 1 and node.input[1]:
            if not constant(node.input[1]):
                findings.append(Finding(name, node.op_type, "axes are not a constant"))
        for idx in _CONST_INPUTS.get(node.op_type, ()):
            if len(node.input) > idx and node.input[idx] and not constant(node.input[idx]):
                findings.append(Finding(name, node.op_type, f"input {idx} ({node.input[idx]!r}) is not a constant"))
    return findings


def assert_tensorrt_compatible(model: Any, label: str = "model") -> None:
    """Raise ValueError listing every finding when ``model`` would not parse in TensorRT."""
    findings = check_tensorrt_support(model)
    if findings:
        lines = "\n  ".join(str(f) for f in findings[:20])
        more = f"\n  ... and {len(findings) - 20} more" if len(findings) > 20 else ""
        raise ValueError(f"{label}: {len(findings)} TensorRT incompatibilities:\n  {lines}{more}")


def fold_constants(path: str | Path) -> Path:
    """Rewrite ``path`` in place with shape arithmetic on static shapes folded into constants
    (ONNX Runtime's basic, standard-ops-only graph optimisation), keeping the graph's metadata.
    Exporters turn TF-style "same" padding into Shape -> ... -> Pad chains; folded, the pads are
    the constants TensorRT needs."""
    import tempfile

    import onnx
    import onnxruntime as ort

    path = Path(path)
    original = onnx.load(str(path))
    with tempfile.TemporaryDirectory(prefix="scalpedge-fold-") as tmp:
        folded_path = Path(tmp) / "folded.onnx"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(folded_path)
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        folded = onnx.load(str(folded_path))
    del folded.metadata_props[:]
    folded.metadata_props.extend(original.metadata_props)
    onnx.save(folded, str(path))
    return path
