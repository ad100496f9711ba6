"""Export a real (tiny) model to ONNX and run it on the device side with ONNX Runtime; release
it with a model card that a signed bundle takes and the device loads."""

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from device.contracts.constants import (
    END_DENSITY_SCALE,
    INSTANCE_OUTPUTS,
    MASK_THRESHOLD,
    SEG_INPUT,
    SEG_OUT_CENTRE,
    SEG_OUT_MASK,
)
from device.contracts.preprocess import to_network_input
from device.models.backends import OrtBackend
from device.models.bundle import TARGETS, Bundle
from device.models.onnx_segmenter import ModelSegmenter
from export.bundle import build_bundle, generate_key
from export.onnx_export import ExportedSegmenter, check_parity, export_segmenter
from export.release import CARD_NAME, Recipe, release_segmenter
from server_train.models import create, model_config


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
    with pytest.raises(ValueError, match="expected float32"):
        backend.run({SEG_INPUT: np.zeros((1, 3, 96, 128), np.float64)})


def test_segmenter_returns_frame_sized_probabilities(tiny_onnx: Path) -> None:
    seg = ModelSegmenter.from_onnx(tiny_onnx, threads=1)
    frame = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    out = seg.segment(frame)
    assert out.prob.shape == (300, 400) and out.prob.dtype == np.float32
    assert out.centre is not None and out.centre.shape == (300, 400)
    # the probabilities are the sigmoid of the graph's own mask logits, resized to the frame
    raw = OrtBackend(tiny_onnx, threads=1).run({SEG_INPUT: to_network_input(frame, 96, 128)}, [SEG_OUT_MASK])
    want = cv2.resize(1.0 / (1.0 + np.exp(-raw[SEG_OUT_MASK][0, 0])), (400, 300), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out.prob, want, atol=1e-6)


def test_release_writes_a_card_from_the_model_and_numbers_given(tmp_path: Path) -> None:
    """``release_segmenter`` takes the model and the numbers (no checkpoint): the card records
    them, names the graph's real outputs, and packs into a bundle the device opens."""
    torch.manual_seed(0)
    model = create("student_tiny").eval()
    lineage = [{"checkpoint": "run/final.pt", "train_config": {"seed": 7}, "steps": 5}]
    recipe = Recipe(model_config(model), {"seed": 7, "instance_target": "ends"}, lineage)
    metrics = {"eval_seg": {"dice": 0.5}}
    command = "scalpedge export release --checkpoint run/final.pt"
    card_path = release_segmenter(model, tmp_path / "stage", recipe, 1.23456, metrics, command=command)

    assert card_path == tmp_path / "stage" / CARD_NAME
    card = json.loads(card_path.read_text())
    graph = onnx.load(str(tmp_path / "stage" / "segmenter.onnx"))
    assert card["outputs"] == [o.name for o in graph.graph.output] == [SEG_OUT_MASK, INSTANCE_OUTPUTS["ends"]]
    assert card["instance_head"] == "ends"
    assert card["thresholds"] == {"mask": MASK_THRESHOLD, "end_density_scale": END_DENSITY_SCALE}
    assert card["gflop"] == 1.235
    assert card["model_config"] == recipe.model_config
    assert (card["provenance"]["seed"], card["provenance"]["lineage"]) == (7, lineage)
    assert card["provenance"]["command"] == command and card["evaluation"] == metrics
    assert card["preferred"] == {target: "segmenter.onnx" for target in TARGETS}
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["model_config"]) == recipe.model_config
    assert json.loads(meta["train_config"]) == recipe.train_config

    private, public = tmp_path / "keys" / "release.pem", tmp_path / "trusted" / "release.pem"
    generate_key(private, public)
    build_bundle(tmp_path / "bundle", [card_path], private, version="test-1")
    variant = Bundle.open(tmp_path / "bundle", trusted_keys=[public]).select("segmenter", "onnxruntime-cpu")
    assert variant.precision == "fp32" and variant.path.name == "segmenter.onnx"


def test_export_release_command_loads_the_checkpoint_and_records_its_lineage(tmp_path: Path) -> None:
    """``scalpedge export release``: server_train loads the checkpoint, follows its teacher to
    the lineage, counts its GFLOP, and the card records them with the metrics reports given."""
    from device.cli import main
    from server_train.models import count_gflop

    torch.manual_seed(0)
    teacher, student = create("student_tiny").eval(), create("student_tiny").eval()
    student_config = {"seed": 3, "teacher_checkpoint": str(tmp_path / "teacher.pt")}
    for path, model, train_config, step in (
        (tmp_path / "teacher.pt", teacher, {"seed": 1}, 2),
        (tmp_path / "student.pt", student, student_config, 4),
    ):
        state = {"model": model.state_dict(), "model_config": model_config(model), "train_config": train_config}
        torch.save({**state, "step": step}, path)
    report = tmp_path / "eval_seg.json"
    report.write_text(json.dumps({"dice": 0.5, "per_frame": [{"dice": 0.5}]}))
    argv = ["export", "release", "--checkpoint", str(tmp_path / "student.pt"), "--out", str(tmp_path / "stage")]
    assert main([*argv, "--metrics", str(report)]) == 0

    card = json.loads((tmp_path / "stage" / CARD_NAME).read_text())
    assert card["provenance"]["lineage"] == [
        {"checkpoint": str(tmp_path / "student.pt"), "train_config": student_config, "steps": 4},
        {
            "checkpoint": str(tmp_path / "teacher.pt"),
            "train_config": {"seed": 1},
            "steps": 2,
            "model_config": model_config(teacher),
        },
    ]
    assert card["instance_head"] == "centres" and card["outputs"] == [SEG_OUT_MASK, SEG_OUT_CENTRE]
    assert card["gflop"] == round(count_gflop(student), 3)
    assert card["evaluation"] == {"eval_seg": {"dice": 0.5}}
