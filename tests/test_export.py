"""Export a real (tiny) model to ONNX and run it on the device side with ONNX Runtime."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from device.contracts.constants import SEG_INPUT, SEG_OUT_CENTRE, SEG_OUT_MASK
from device.models.backends import OrtBackend
from device.models.onnx_segmenter import ModelSegmenter
from export.onnx_export import ExportedSegmenter, check_parity, export_segmenter
from server_train.models import create


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create("student_tiny").eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_segmenter(model, path, height=96, width=128, metadata={"model": "student_tiny", "seed": 0})


def test_graph_contract(tiny_onnx: Path) -> None:
    proto = onnx.load(str(tiny_onnx))
    assert [i.name for i in proto.graph.input] == [SEG_INPUT]
    assert [o.name for o in proto.graph.output] == [SEG_OUT_MASK, SEG_OUT_CENTRE]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model"] == "student_tiny" and meta["seed"] == "0"
    backend = OrtBackend(tiny_onnx, threads=1)
    assert backend.input_shapes[SEG_INPUT] == (1, 3, 96, 128)


@pytest.mark.parametrize("name", ["student", "teacher_tiny", "u2netp"])
def test_registry_models_export_with_checker_parity_and_tensorrt_rules(name: str, tmp_path: Path) -> None:
    from calibration.trt_support import check_tensorrt_support

    torch.manual_seed(0)
    path = export_segmenter(create(name).eval(), tmp_path / f"{name}.onnx", height=64, width=96)
    assert check_tensorrt_support(path) == []
    with pytest.raises(ValueError, match="expected float32"):
        OrtBackend(path, threads=1).run({SEG_INPUT: np.zeros((1, 3, 64, 96), np.float64)})


def test_parity_check_catches_a_different_model(tiny_onnx: Path) -> None:
    other = ExportedSegmenter(create("student_tiny")).eval()
    with pytest.raises(RuntimeError, match="differs from torch"):
        check_parity(other, tiny_onnx, 96, 128)


def test_backend_rejects_wrong_shapes_and_missing_inputs(tiny_onnx: Path) -> None:
    backend = OrtBackend(tiny_onnx, threads=1)
    with pytest.raises(ValueError, match="expected"):
        backend.run({SEG_INPUT: np.zeros((1, 3, 10, 10), np.float32)})
    with pytest.raises(KeyError, match="missing inputs"):
        backend.run({})


def test_segmenter_returns_frame_sized_probabilities(tiny_onnx: Path) -> None:
    seg = ModelSegmenter.from_onnx(tiny_onnx, threads=1)
    frame = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    out = seg.segment(frame)
    assert out.prob.shape == (300, 400) and out.prob.dtype == np.float32
    assert out.centre is not None and out.centre.shape == (300, 400)
    assert 0.0 <= out.prob.min() and out.prob.max() <= 1.0
