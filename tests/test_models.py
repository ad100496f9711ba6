"""Every registered segmentation model: output contract, FLOP budget, checkpoint round trip."""

import pytest
import torch

from server_train.models import MODELS, build_from_config, count_gflop, create, model_config

SMALL = ["student", "student_tiny", "teacher_tiny", "teacher"]


@pytest.mark.parametrize("name", SMALL)
def test_forward_shapes(name: str) -> None:
    model = create(name).eval()
    with torch.no_grad():
        outs = model(torch.zeros(2, 3, 64, 96))
    assert all(o.shape == (2, 2, 64, 96) for o in outs)
    # U²-Net family: fused + 6 deep-supervision sides; the student: one output.
    assert len(outs) == (7 if name.startswith("teacher") else 1)


def test_registry_lists_paper_models() -> None:
    assert {"u2net", "u2netp", "teacher", "student"} <= set(MODELS)
    with pytest.raises(KeyError, match="unknown model"):
        create("nope")


def test_student_flop_budget_and_cost_order() -> None:
    student = count_gflop(create("student"))
    u2netp = count_gflop(create("u2netp"))
    assert student <= 6.0
    assert 100 < u2netp < 130  # U²-NetP at 640x480 is ~118 GFLOP
    assert u2netp / student > 20


@pytest.mark.parametrize("name", ["student_tiny", "teacher_tiny"])
def test_config_round_trip(name: str) -> None:
    model = create(name).eval()
    clone = build_from_config(model_config(model)).eval()
    clone.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], clone(x)[0])
