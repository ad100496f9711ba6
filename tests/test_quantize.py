"""Q/DQ quantization recipes on a real (tiny) conv graph: the TensorRT recipe yields a graph
the TensorRT check accepts, the CPU recipe keeps thin convs FP32, both stay close to FP32."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from calibration.gate import gate
from calibration.quantize import RECIPES, producing_convs, quantize_model, thin_conv_nodes
from calibration.readers import ArrayReader, FrameReader, frame_files
from calibration.trt_support import check_tensorrt_support
from device.capture.imageio import FrameError
from tests.onnx_graphs import conv_net, save


def _feeds(n: int = 16, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(n)]


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["out"], {"image": x})[0]


def _zero_points(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.name: inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.fixture()
def fp32(tmp_path: Path) -> Path:
    return save(conv_net((3, 16, 4)), tmp_path / "net.onnx")


def test_tensorrt_recipe_is_symmetric_int8_and_passes_the_trt_check(fp32: Path, tmp_path: Path) -> None:
    out = tmp_path / "trt.onnx"
    record = quantize_model(fp32, out, ArrayReader(_feeds()), RECIPES["tensorrt"])
    assert record["calibration_inputs"] == 16 and record["format"] == "qdq"
    zps = _zero_points(out)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps.values())
    assert check_tensorrt_support(out) == []
    x = _feeds(1, seed=9)[0]["image"]
    ref, got = _run(fp32, x), _run(out, x)
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_cpu_recipe_uses_uint8_activations_and_keeps_thin_convs_fp32(fp32: Path, tmp_path: Path) -> None:
    assert thin_conv_nodes(fp32, 8) == ["conv1"]  # 16 -> 4 channels
    out = tmp_path / "cpu.onnx"
    record = quantize_model(fp32, out, ArrayReader(_feeds()), RECIPES["ort-cpu"].with_options(keep_thin_fp32=8))
    assert record["recipe"]["exclude"] == ["conv1"]
    assert any(z.dtype == np.uint8 for z in _zero_points(out).values())
    model = onnx.load(str(out))
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    # conv0's weights arrive through DequantizeLinear (INT8); conv1's are the float initialiser.
    assert producers[conv["conv0"].input[1]].op_type == "DequantizeLinear"
    assert conv["conv1"].input[1] not in producers
    assert check_tensorrt_support(out) != []  # uint8 Q/DQ is not for TensorRT
    x = _feeds(1, seed=9)[0]["image"]
    ref, got = _run(fp32, x), _run(out, x)
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_producing_convs_walks_back_from_an_output(fp32: Path) -> None:
    assert producing_convs(fp32, "out") == ["conv1"]  # out <- relu1 <- conv1
    assert producing_convs(fp32, "no_such_output") == []


def test_recipe_options_are_validated() -> None:
    with pytest.raises(ValueError, match="calibration method"):
        RECIPES["ort-cpu"].with_options(method="kl")
    with pytest.raises(ValueError, match="symmetric int8"):
        RECIPES["tensorrt"].with_options(activations="uint8")
    assert RECIPES["tensorrt"].with_options(method="percentile", per_channel=None).per_channel is True


def test_frame_reader_prepares_frames_like_the_device_and_skips_bad_files(tmp_path: Path) -> None:
    import cv2

    folder = tmp_path / "frames" / "images"
    folder.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.full((60, 80, 3), 40 * i, np.uint8))
    (folder / "broken.png").write_bytes(b"not an image")
    files = frame_files([tmp_path / "frames"], limit=10)
    assert len(files) == 4
    reader = FrameReader(files, "image", 32, 48)
    items = iter(reader.get_next, None)
    batch = list(items)
    assert len(batch) == 3 and batch[0]["image"].shape == (1, 3, 32, 48)
    assert len(reader.skipped) == 1 and "broken.png" in reader.skipped[0]
    reader.rewind()
    assert reader.get_next() is not None
    with pytest.raises(FrameError, match="no such file or folder"):
        frame_files([tmp_path / "does_not_exist"])


def test_gate_passes_within_the_allowed_drop_only() -> None:
    assert gate("dice", 0.80, 0.796, 0.005).passed
    refused = gate("dice", 0.80, 0.79, 0.005)
    assert not refused.passed and "REFUSED" in str(refused) and refused.to_dict()["drop"] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        gate("dice", 0.8, 0.8, -0.1)


def test_calibrate_card_gates_times_and_prefers(tmp_path: Path) -> None:
    """A card's FP32 model gets INT8 variants; a variant that loses more than max_drop of the
    score is refused and deleted; ONNX Runtime prefers INT8 only when it is fast enough."""
    import json

    from calibration.card import calibrate_card

    folder = tmp_path / "release"
    folder.mkdir()
    save(conv_net((3, 16, 16, 4)), folder / "net.onnx")
    card_path = folder / "net.card.json"
    card = {
        "name": "net",
        "task": "test",
        "variants": [{"file": "net.onnx", "precision": "fp32", "targets": ["onnxruntime-cpu", "tensorrt"]}],
    }
    card_path.write_text(json.dumps(card))
    probe = _feeds(4, seed=3)
    reference = [_run(folder / "net.onnx", f["image"]) for f in probe]

    def agreement(path: Path) -> float:  # 1 - relative L1 error against the FP32 outputs
        err = sum(np.abs(_run(path, f["image"]) - r).mean() for f, r in zip(probe, reference, strict=True))
        return 1.0 - float(err / sum(np.abs(r).mean() for r in reference))

    recipes = [RECIPES["tensorrt"], RECIPES["ort-cpu"]]
    strict = calibrate_card(
        card_path, lambda: ArrayReader(_feeds()), agreement, "agreement", recipes, 0.0, runs=3, min_speedup=100
    )
    assert [v["precision"] for v in strict["variants"]] == ["fp32"]
    assert {r["recipe"] for r in strict["refused"]} == {"tensorrt", "ort-cpu"}
    assert all(not r["gate"]["passed"] and r["gate"]["drop"] > 0 for r in strict["refused"])
    assert not (folder / "net.int8-tensorrt.onnx").exists()
    assert strict["preferred"] == {"onnxruntime-cpu": "net.onnx", "tensorrt": "net.onnx"}

    loose = calibrate_card(
        card_path, lambda: ArrayReader(_feeds()), agreement, "agreement", recipes, 0.2, runs=3, min_speedup=0.0
    )
    files = {v["file"]: v for v in loose["variants"]}
    assert set(files) == {"net.onnx", "net.int8-tensorrt.onnx", "net.int8-ort-cpu.onnx"} and not loose["refused"]
    assert loose["preferred"] == {"onnxruntime-cpu": "net.int8-ort-cpu.onnx", "tensorrt": "net.int8-tensorrt.onnx"}
    for v in files.values():
        assert v["evaluation"]["cpu_median_ms"] > 0 and 0.8 <= v["evaluation"]["agreement"] <= 1.0
    written = json.loads(card_path.read_text())
    assert written["preferred"] == loose["preferred"] and [v["file"] for v in written["variants"]] == list(files)
