"""Tiny ONNX graphs built with onnx.helper for export, quantization and bundle tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_net(
    channels: tuple[int, ...] = (3, 16, 4), size: int = 32, input_name: str = "image", seed: int = 0
) -> onnx.ModelProto:
    """input (1 x channels[0] x size x size) -> [Conv 3x3 -> Relu] per stage -> output "out".

    Weights are random but fixed by ``seed``; opset 17."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = input_name
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"b{i}")
        inits += [w, b]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        last = i == len(channels) - 2
        nodes.append(helper.make_node("Relu", [f"c{i}"], ["out" if last else f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, channels[0], size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, channels[-1], size, size])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path
