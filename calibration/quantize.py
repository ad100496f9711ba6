"""Static INT8 quantization to explicit Q/DQ ONNX, with recipes for each runtime.

Two recipes, because the runtimes want different graphs:

- ``tensorrt``: symmetric signed INT8 activations and weights (zero points 0), per-channel
  weights, float biases. This is the only Q/DQ form TensorRT 10 builds (explicit
  quantization); the result must pass ``calibration.trt_support``.
- ``ort-cpu``: unsigned activations with signed per-channel weights (MLAS's fast u8s8 path on
  x86). Measured here: ONNX Runtime's signed-activation QDQ can be *slower* than FP32.
  Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2 only) ONNX Runtime
  multiplies u8 x s8 with ``vpmaddubsw``, whose pairwise sums saturate at int16 (255 x 127 x 2
  > 32767), so a full-range 8-bit model computes something else there than on a VNNI CPU (the
  shipped 2026-11 segmenter counted 5.8 hairs off FP32 on one frame). 7-bit weights cannot
  saturate (255 x 64 x 2 < 32767) and give the same result on every CPU.

TensorRT computes a Q/DQ graph exactly (int32 accumulation), so the ``tensorrt`` recipe keeps
8-bit weights; its candidates are scored through ``calibration.gate.qdq_reference_backend``
(ONNX Runtime running the Q/DQ nodes as written), not through the CPU's integer kernels.
Which nodes stay FP32 for a given model is a rule of that model (``calibration.rules``).

Both use ONNX Runtime's ``quantize_static`` after its pre-processing (shape inference and
graph optimisation), with a calibration method of min-max, entropy or percentile.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "QuantRecipe",
    "RECIPES",
    "METHODS",
    "thin_conv_nodes",
    "producing_convs",
    "quantize_model",
    "u8s8_saturates",
]

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize. activations/weights: "int8" or "uint8"; method: one of METHODS;
    keep_thin_fp32: Conv nodes with at most this many output channels stay FP32 (0: none);
    exclude: node names that stay FP32; targets: runtimes the result is meant for;
    reduce_range: 7-bit weights, so that u8 x s8 products cannot saturate on CPUs without VNNI."""

    name: str
    activations: str
    symmetric_activations: bool
    quantize_bias: bool
    targets: tuple[str, ...]
    weights: str = "int8"
    per_channel: bool = True
    method: str = "minmax"
    percentile: float = 99.999
    keep_thin_fp32: int = 0
    exclude: tuple[str, ...] = field(default_factory=tuple)
    reduce_range: bool = False

    @property
    def emulated(self) -> bool:
        """True when no CPU runs the result natively (TensorRT only): it is scored through the
        exact Q/DQ reference rather than ONNX Runtime's integer kernels."""
        return "onnxruntime-cpu" not in self.targets

    def with_options(self, **changes: Any) -> QuantRecipe:
        """A copy with the given fields changed (None values ignored); validates the method."""
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        recipe = replace(self, **{k: v for k, v in changes.items() if v is not None})
        if recipe.method not in METHODS:
            raise ValueError(f"calibration method {recipe.method!r}; choose from {METHODS}")
        if recipe.activations not in ("int8", "uint8") or recipe.weights not in ("int8", "uint8"):
            raise ValueError("activations and weights must be 'int8' or 'uint8'")
        if "tensorrt" in recipe.targets and (recipe.activations != "int8" or not recipe.symmetric_activations):
            raise ValueError("a TensorRT recipe needs symmetric int8 activations")
        return recipe


RECIPES = {
    "tensorrt": QuantRecipe(
        "tensorrt", activations="int8", symmetric_activations=True, quantize_bias=False, targets=("tensorrt",)
    ),
    "ort-cpu": QuantRecipe(
        "ort-cpu",
        activations="uint8",
        symmetric_activations=False,
        quantize_bias=True,
        targets=("onnxruntime-cpu",),
        reduce_range=True,
    ),
}


def thin_conv_nodes(model: Any, max_out_channels: int) -> list[str]:
    """Names of Conv nodes whose weight has at most ``max_out_channels`` output channels."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and len(n.input) > 1 and shapes.get(n.input[1], (1 << 30,))[0] <= max_out_channels
    ]


def producing_convs(model: Any, output: str) -> list[str]:
    """Names of the Conv nodes that compute graph output ``output``, found by walking back
    through the ops in between (Slice, Split, Identity, ...). An output that a whole frame is
    summed over (the strand-end density) keeps these in FP32: their rounding error adds up."""
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model))
    producer = {o: n for n in model.graph.node for o in n.output}
    found: list[str] = []
    todo, seen = [output], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type == "Conv":
            found.append(node.name)
        else:
            todo.extend(i for i in node.input[:1] if i)
    return found


def u8s8_saturates() -> bool:
    """Whether this CPU's ONNX Runtime saturates full-range u8 x s8 products (x86 without VNNI).

    Runs one QLinearConv over 8 channels of activation 255 and weight 127; the exact sum is
    8 x 255 x 127 = 259080, which ``vpmaddubsw`` clamps pairwise to 2 x 32767."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, exact = 8, 8 * 255 * 127
    inits = [
        numpy_helper.from_array(np.array(v, dtype), name)
        for name, v, dtype in (
            ("s", 1.0, np.float32),
            ("zp", 0, np.uint8),
            ("w", np.full((1, k, 1, 1), 127), np.int8),
            ("wzp", 0, np.int8),
            ("ys", exact / 250.0, np.float32),
        )
    ]
    node = helper.make_node("QLinearConv", ["x", "s", "zp", "w", "s", "wzp", "ys", "zp"], ["y"])
    graph = helper.make_graph(
        [node],
        "u8s8_probe",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, k, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(["y"], {"x": np.full((1, k, 1, 1), 255, np.uint8)})[0]
    return int(y.ravel()[0]) < 240  # exact: 250


def quantize_model(src: str | Path, dst: str | Path, reader: Any, recipe: QuantRecipe) -> dict[str, Any]:
    """Quantize ``src`` to ``dst`` (Q/DQ ONNX) calibrated on ``reader``; returns a record of what
    was done (recipe, excluded nodes, calibration inputs, seconds). A TensorRT recipe's output
    is checked against the TensorRT op rules and refused (ValueError) if it breaks them."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from calibration.trt_support import assert_tensorrt_compatible

    recipe = recipe.with_options()
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[recipe.method]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scalpedge-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        exclude = list(recipe.exclude)
        if recipe.keep_thin_fp32:
            exclude += [n for n in thin_conv_nodes(pre, recipe.keep_thin_fp32) if n not in exclude]
        counting = _Counting(reader)
        quantize_static(
            str(pre),
            str(dst),
            counting,
            quant_format=QuantFormat.QDQ,
            activation_type=qtype[recipe.activations],
            weight_type=qtype[recipe.weights],
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            calibrate_method=method,
            nodes_to_exclude=exclude or None,
            extra_options={
                "ActivationSymmetric": recipe.symmetric_activations,
                "WeightSymmetric": True,
                "QuantizeBias": recipe.quantize_bias,
                "CalibPercentile": recipe.percentile,
            },
            calibration_cache_path=None,
        )
    if "tensorrt" in recipe.targets:
        assert_tensorrt_compatible(dst, label=str(dst))
    return {
        "format": "qdq",
        "recipe": asdict(recipe) | {"exclude": exclude},
        "calibration_inputs": counting.count,
        "u8s8_saturates_here": u8s8_saturates(),
        "seconds": round(time.perf_counter() - start, 1),
    }


class _Counting:
    """Wraps a reader to count the inputs calibration consumed."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.count = 0

    def get_next(self) -> Any:
        item = self.reader.get_next()
        self.count += item is not None
        return item

    def rewind(self) -> None:
        if hasattr(self.reader, "rewind"):
            self.reader.rewind()
        self.count = 0
