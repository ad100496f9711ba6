"""Q/DQ quantization recipes on a real (tiny) conv graph: the TensorRT recipe yields a graph
the TensorRT check accepts, the CPU recipe keeps thin convs FP32 and cannot saturate ONNX
Runtime's u8 x s8 kernels on x86 CPUs without VNNI, both stay close to FP32 on any CPU."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from calibration.gate import gate, qdq_reference_backend
from calibration.quantize import RECIPES, producing_convs, quantize_model, thin_conv_nodes, u8s8_saturates
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


def _exact(path: Path, x: np.ndarray) -> np.ndarray:
    """The Q/DQ graph computed as written (what TensorRT computes), not by this CPU's kernels."""
    return qdq_reference_backend(path, threads=1).run({"image": x}, ["out"])["out"]


def _weights(path: Path) -> list[np.ndarray]:
    """The quantized (int8) weight initialisers of a Q/DQ graph."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


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
    assert max(int(np.abs(w.astype(int)).max()) for w in _weights(out) if w.ndim == 4) == 127  # 8-bit for TensorRT
    x = _feeds(1, seed=9)[0]["image"]
    ref, got = _run(fp32, x), _exact(out, x)
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_cpu_recipe_uses_uint8_activations_and_keeps_thin_convs_fp32(fp32: Path, tmp_path: Path) -> None:
    assert thin_conv_nodes(fp32, 8) == ["conv1"]  # 16 -> 4 channels
    out = tmp_path / "cpu.onnx"
    record = quantize_model(fp32, out, ArrayReader(_feeds()), RECIPES["ort-cpu"].with_options(keep_thin_fp32=8))
    assert record["recipe"]["exclude"] == ["conv1"] and record["recipe"]["reduce_range"]
    assert record["u8s8_saturates_here"] == u8s8_saturates()
    assert any(z.dtype == np.uint8 for z in _zero_points(out).values())
    assert max(int(np.abs(w.astype(int)).max()) for w in _weights(out) if w.ndim == 4) <= 64  # 7-bit weights
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


def test_full_range_u8s8_saturates_exactly_where_the_probe_says_and_7_bit_weights_never(
    fp32: Path, tmp_path: Path
) -> None:
    """ONNX Runtime's x86 u8 x s8 kernel without VNNI (vpmaddubsw) clamps pairwise sums at int16:
    a full-range 8-bit model computes something else than its own Q/DQ graph there, while the
    CPU recipe's 7-bit weights give the graph's result on every CPU."""
    x = _feeds(1, seed=9)[0]["image"]
    gaps = {}
    for reduce_range in (False, True):
        out = tmp_path / f"cpu_{reduce_range}.onnx"
        quantize_model(fp32, out, ArrayReader(_feeds()), RECIPES["ort-cpu"].with_options(reduce_range=reduce_range))
        gaps[reduce_range] = float(np.abs(_run(out, x) - _exact(out, x)).max())
    scale = float(np.abs(_run(fp32, x)).max())
    assert gaps[True] < 0.01 * scale
    assert (gaps[False] > 0.05 * scale) == u8s8_saturates(), gaps


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
    from calibration.gate import GateResult, Judge
    from calibration.quantize import QuantRecipe

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

    def judge(max_drop: float) -> Judge:
        def agreement(fp32: Path, path: Path, recipe: QuantRecipe) -> GateResult:
            run = _exact if recipe.emulated else _run  # 1 - relative L1 error against the FP32 outputs
            err = sum(np.abs(run(path, f["image"]) - r).mean() for f, r in zip(probe, reference, strict=True))
            return gate("agreement", 1.0, 1.0 - float(err / sum(np.abs(r).mean() for r in reference)), max_drop)

        return agreement

    recipes = [RECIPES["tensorrt"], RECIPES["ort-cpu"]]
    strict = calibrate_card(card_path, lambda: ArrayReader(_feeds()), judge(0.0), recipes, runs=3, min_speedup=100)
    assert [v["precision"] for v in strict["variants"]] == ["fp32"]
    assert {r["recipe"] for r in strict["refused"]} == {"tensorrt", "ort-cpu"}
    assert all(not r["gate"]["passed"] for r in strict["refused"])
    assert not (folder / "net.int8-tensorrt.onnx").exists()
    assert strict["preferred"] == {"onnxruntime-cpu": "net.onnx", "tensorrt": "net.onnx"}

    loose = calibrate_card(card_path, lambda: ArrayReader(_feeds()), judge(0.2), recipes, runs=3, min_speedup=0.0)
    files = {v["file"]: v for v in loose["variants"]}
    assert set(files) == {"net.onnx", "net.int8-tensorrt.onnx", "net.int8-ort-cpu.onnx"} and not loose["refused"]
    assert loose["preferred"] == {"onnxruntime-cpu": "net.int8-ort-cpu.onnx", "tensorrt": "net.int8-tensorrt.onnx"}
    # FP32 agrees with itself exactly; each INT8 variant loses something, within the loose gate.
    assert files["net.onnx"]["evaluation"]["agreement"] == 1.0
    for name in ("net.int8-tensorrt.onnx", "net.int8-ort-cpu.onnx"):
        assert 0.8 <= files[name]["evaluation"]["agreement"] < 1.0
    written = json.loads(card_path.read_text())
    assert written["preferred"] == loose["preferred"] and [v["file"] for v in written["variants"]] == list(files)
