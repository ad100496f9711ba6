"""Rebuild a trainable student from an exported ONNX graph (a released bundle's segmenter).

A release keeps the ONNX graph, not always the checkpoint. Export folds every BatchNorm into the
convolution before it, so each ONNX Conv carries a weight and a bias. The student is rebuilt
with the same convolution weights and each BatchNorm set to add the folded bias (running mean
0, running variance 1, scale sqrt(1 + eps)): in eval mode it computes what the graph computes,
and it trains like any other student (its BatchNorms re-learn their statistics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from server_train.models.student import StudentNet

__all__ = ["student_from_onnx"]


def _conv_order(model: nn.Module, shape: tuple[int, int]) -> list[nn.Conv2d]:
    """The student's convolutions in the order its forward pass runs them (the order the
    exporter wrote the graph's Conv nodes)."""
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, *shape))
    for h in hooks:
        h.remove()
    return order


def student_from_onnx(path: str | Path, config: dict[str, Any], out_ch: int | None = None) -> StudentNet:
    """A StudentNet of ``config`` (``widths``, ``head``, ``out_ch``: the model card's
    ``model_config``) with the weights of the ONNX graph at ``path``. out_ch: output channels
    of the rebuilt model; channels beyond the graph's keep their fresh initialisation (a new
    head on the same features). Raises ValueError when the graph does not match the config."""
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # the exporter writes some weights as Constant nodes, or Identity of equal ones
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            inits[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    convs = [n for n in graph.node if n.op_type == "Conv"]
    model = StudentNet(config["widths"], config["head"], out_ch or config["out_ch"])
    order = _conv_order(model, (64, 64))
    if len(order) != len(convs):
        raise ValueError(f"{path}: {len(convs)} Conv nodes, the student of {config} has {len(order)} convolutions")
    following = {}
    modules = list(model.modules())
    for a, b in zip(modules, modules[1:], strict=False):
        if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
            following[a] = b
    with torch.no_grad():
        for conv, node in zip(order, convs, strict=True):
            weight = inits[node.input[1]]
            bias = inits[node.input[2]] if len(node.input) > 2 else None
            target = conv.weight
            if conv is model.out:
                n = weight.shape[0]
                if n > target.shape[0]:
                    raise ValueError(f"{path}: {n} output channels, the rebuilt model has {target.shape[0]}")
                target[:n].copy_(torch.from_numpy(np.array(weight)))
                if bias is not None and conv.bias is not None:
                    conv.bias[:n].copy_(torch.from_numpy(np.array(bias)))
                continue
            if tuple(weight.shape) != tuple(target.shape):
                raise ValueError(f"{path}: Conv {node.name} is {weight.shape}, the student's is {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.array(weight)))
            bn = following.get(conv)
            if bias is None:
                bias = np.zeros(weight.shape[0], np.float32)
            if bn is not None:
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0)
                bn.weight.fill_(float(np.sqrt(1.0 + bn.eps)))
                bn.bias.copy_(torch.from_numpy(np.array(bias)))
            elif conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(np.array(bias)))
            elif np.abs(bias).max() > 0:
                raise ValueError(f"{path}: Conv {node.name} has a bias the student's convolution cannot hold")
    return model.eval()
