"""Static INT8 quantization to explicit Q/DQ ONNX, with recipes for each runtime.

Two recipes, because the runtimes want different graphs:

- ``tensorrt``: symmetric signed INT8 activations and weights (zero points 0), per-channel
  weights, float biases. This is the only Q/DQ form TensorRT 10 builds (explicit
  quantization); the result must pass ``calibration.trt_support``.
- ``ort-cpu``: unsigned activations with signed per-channel weights (MLAS's fast u8s8 path on
  x86). Measured here: ONNX Runtime's signed-activation QDQ can be *slower* than FP32.
  ``keep_thin_fp32`` keeps convolutions with few output channels in FP32 (they are
  memory-bound); on our student it measured no faster than quantizing everything, so it is
  off by default.

Both use ONNX Runtime's ``quantize_static`` after its pre-processing (shape inference and
graph optimisation), with a calibration method of min-max, entropy or percentile.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["QuantRecipe", "RECIPES", "METHODS", "thin_conv_nodes", "producing_convs", "quantize_model"]

METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize. activations/weights: "int8" or "uint8"; method: one of METHODS;
    keep_thin_fp32: Conv nodes with at most this many output channels stay FP32 (0: none);
    exclude: node names that stay FP32; targets: runtimes the result is meant for."""

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

    def with_options(self, **changes: Any) -> QuantRecipe:
        """A copy with the given fields changed (None values ignored); validates the method."""
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
