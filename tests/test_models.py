"""The segmentation registry's lookup and the FLOP budget of the on-device student.
(Per-model shapes, parameter counts, config round trips and exports: tests/test_reg_models.py.)"""

import pytest
import torch
from torch import nn

from server_train.models import MODELS, count_gflop, create


def test_unknown_model_names_every_known_one() -> None:
    with pytest.raises(KeyError, match="unknown model 'nope'") as err:
        create("nope")
    assert all(name in str(err.value) for name in MODELS)


def test_gflop_is_twice_the_multiply_accumulates() -> None:
    # One 3x3 conv, 3 -> 8 channels, no bias, on 1x3x480x640: 8 x 3 x 9 MACs per output pixel.
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_gflop(conv) == pytest.approx(2 * 8 * 3 * 9 * 480 * 640 / 1e9)
    assert count_gflop(conv, height=240, width=320) == pytest.approx(count_gflop(conv) / 4)


def test_student_flop_budget_and_cost_order() -> None:
    with torch.device("meta"):  # shapes only: the count is the same, no arithmetic is run
        student = count_gflop(create("student"))
        u2netp = count_gflop(create("u2netp"))
    assert student <= 6.0
    assert 100 < u2netp < 130  # U²-NetP at 640x480 is ~118 GFLOP
    assert u2netp / student > 20
