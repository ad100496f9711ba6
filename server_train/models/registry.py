"""Model registry: every segmentation model by name, with tiny variants for tests.

Thin public ``build_<variant>()`` functions over the family constructors; ``create(name)``
looks one up, ``MODELS`` lists them so tests can parametrize over all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from server_train.models.student import StudentNet
from server_train.models.u2net import U2Net

__all__ = ["MODELS", "create", "count_gflop", "build_from_config"]


def _build_u2net_family(mid: list[int], out: list[int]) -> U2Net:
    return U2Net(mids=mid, outs=out, out_ch=2)


def build_u2net() -> nn.Module:
    """Full U²-Net (paper encoder widths, 49.2M parameters: our decoder stages mirror the encoder widths,
    wider than the paper's 44M)."""
    return _build_u2net_family([32, 32, 64, 128, 256, 256], [64, 128, 256, 512, 512, 512])


def build_u2netp() -> nn.Module:
    """U²-NetP (paper's small variant, ~1.1M parameters, ~118 GFLOP at 640x480)."""
    return _build_u2net_family([16] * 6, [64] * 6)


def build_u2net_teacher() -> nn.Module:
    """Our teacher: the full U²-Net structure at a width we can train on a CPU (~27 GFLOP at 640x480)."""
    return _build_u2net_family([8, 8, 12, 12, 12, 12], [24, 32, 48, 48, 48, 48])


def build_u2net_tiny() -> nn.Module:
    """Tiny U²-Net for tests."""
    return _build_u2net_family([4] * 6, [8] * 6)


def build_student() -> nn.Module:
    """The on-device student (about 4 GFLOP at 640x480)."""
    return StudentNet(widths=(16, 32, 64, 96, 128), head=8)


def build_student_tiny() -> nn.Module:
    """Tiny student for tests."""
    return StudentNet(widths=(4, 8, 8, 16, 16), head=4)


MODELS: dict[str, Callable[[], nn.Module]] = {
    "u2net": build_u2net,
    "u2netp": build_u2netp,
    "teacher": build_u2net_teacher,
    "teacher_tiny": build_u2net_tiny,
    "student": build_student,
    "student_tiny": build_student_tiny,
}


def create(name: str) -> nn.Module:
    """Build a registered model by name (randomly initialised)."""
    try:
        return MODELS[name]()
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from the ``config`` dict a checkpoint carries."""
    family = config["family"]
    if family == "u2net":
        return U2Net(config["mids"], config["outs"], config["out_ch"])
    if family == "student":
        return StudentNet(config["widths"], config["head"], config["out_ch"])
    raise ValueError(f"unknown model family {family!r}")


def model_config(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments of a model, plus its family, for checkpoints."""
    family = "u2net" if isinstance(model, U2Net) else "student"
    return {"family": family, **model.config}  # type: ignore[operator]


def count_gflop(model: nn.Module, height: int = 480, width: int = 640) -> float:
    """Forward GFLOP (2 x multiply-accumulates of convs/matmuls) for one 1x3xHxW frame."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, height, width))
    return counter.get_total_flops() / 1e9
