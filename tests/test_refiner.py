"""Prompt refiner: model, export (checker, parity, TensorRT rules), device runtime, fusion,
training on a tiny synthetic set."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from calibration.trt_support import check_tensorrt_support
from device.contracts.constants import PROMPT_GROUP_SIZE
from device.refine.fusion import RefinedSegmenter, fuse, fuse_prob, recalibrate
from device.refine.prompts import PromptConfig, auto_prompts
from device.refine.refiner import PromptRefiner
from export.refiner_export import ATOL, ExportedRefinerDecoder, decoder_example, export_refiner, fold_constant_inputs
from scoring.classical import BASELINES
from server_train.models.refiner import build_refiner_tiny, refiner_from_config

pytestmark = pytest.mark.slow
K = 16


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = build_refiner_tiny().eval()
    report = export_refiner(model, tmp_path_factory.mktemp("refiner"), batch=2, k=K)
    return model, report


def _frame() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frame = rng.integers(150, 200, (480, 640, 3), dtype=np.uint8)
    for i in range(5):
        y = 60 + 80 * i
        frame[y : y + 4, 40:600] = 30
    prob = np.zeros((480, 640), np.float32)
    prob[(frame[:, :, 0] < 100)] = 0.9
    return frame, prob


def test_model_rebuilds_from_config_and_decodes() -> None:
    model = build_refiner_tiny().eval()
    clone = refiner_from_config(model.config)
    clone.load_state_dict(model.state_dict())
    ex = decoder_example(model, 3, K)
    with torch.no_grad():
        masks, iou = model.decode(*ex.values())
        again, _ = clone.decode(*ex.values())
    assert masks.shape == (3, 1, 120, 160) and iou.shape == (3, 1)
    torch.testing.assert_close(masks, again)


def test_export_passes_every_check(exported: tuple) -> None:
    """export_refiner enforces parity and the TensorRT rules itself; here, what it does not check:
    static shapes, no data-dependent ops, and the decoder graph on inputs it never saw."""
    model, report = exported
    for path in (report["encoder"], report["decoder"]):
        proto = onnx.load(str(path))
        assert all(d.dim_value > 0 for i in proto.graph.input for d in i.type.tensor_type.shape.dim)
        assert not {n.op_type for n in proto.graph.node} & {"Where", "ScatterND", "NonZero", "OneHot"}
    session = ort.InferenceSession(str(report["decoder"]), providers=["CPUExecutionProvider"])
    fresh = decoder_example(model, 2, K, seed=1)
    feeds = {i.name: fresh[i.name].numpy() for i in session.get_inputs()}
    with torch.no_grad():
        want, _ = model.decode(*fresh.values())
    got = session.run(None, feeds)[0]
    assert got.shape == tuple(want.shape)
    assert float(np.abs(got - want.numpy()).max()) <= ATOL["decoder"]


def test_half_resolution_masks_rewrite_matches() -> None:
    """mask_scale 8 (one more 2x upscale than SAM): stock path and export wrapper agree."""
    from export.refiner_export import check_decoder_rewrite
    from server_train.models.refiner import TINY_BLOCKS, Refiner, RefinerEncoder

    enc = RefinerEncoder(TINY_BLOCKS, prefix=3, detail=3, downsample=1, embed_dim=32)
    model = Refiner(enc, decoder_dim=32, depth=1, heads=2, mask_scale=8).eval()
    wrapper = ExportedRefinerDecoder(model, 2, K)
    assert check_decoder_rewrite(model, wrapper) <= ATOL["rewrite"]
    with torch.no_grad():
        masks, _ = wrapper(*decoder_example(model, 2, K).values())
    assert masks.shape == (2, 1, 240, 320)
    clone = refiner_from_config(model.config)
    assert clone.mask_scale == 8
    with pytest.raises(ValueError):
        Refiner(enc, decoder_dim=32, depth=1, heads=2, mask_scale=2)


def test_rewrite_catches_a_wrong_decoder() -> None:
    model = build_refiner_tiny().eval()
    wrapper = ExportedRefinerDecoder(model, 2, K)
    ex = decoder_example(model, 2, K)
    with torch.no_grad():
        ref, _ = model.decode(*ex.values())
        wrapper.pos_embed += 1.0  # a wrong "hair" point embedding must show
        got, _ = wrapper(*ex.values())
    assert float((ref - got).abs().max()) > ATOL["rewrite"]


def test_device_refiner_matches_torch_and_handles_bad_prompts(exported: tuple) -> None:
    model, report = exported
    refiner = PromptRefiner.from_onnx(report["encoder"], report["decoder"], threads=1)
    assert (refiner.batch, refiner.k) == (2, K)
    frame, prob = _frame()
    groups = auto_prompts(prob >= 0.5, PromptConfig(group_size=K, negatives=2))
    with pytest.raises(RuntimeError):
        refiner.predict(groups)
    refiner.set_image(frame, prob)
    low = refiner.predict_low_res(groups)
    assert low.shape == (groups.count, 120, 160)
    from device.contracts.preprocess import to_network_input
    from device.refine.refiner import mask_prompt

    with torch.no_grad():
        emb = model.embed(torch.from_numpy(to_network_input(frame)))
        ref, _ = model.decode(
            emb,
            torch.from_numpy(groups.points),
            torch.from_numpy(groups.labels),
            torch.from_numpy(mask_prompt(prob, (120, 160))),
        )
    assert np.abs(ref[:, 0].numpy() - low).max() <= ATOL["decoder"] + ATOL["encoder"] * 10
    out = refiner.predict(groups)
    assert out.prob.shape == (480, 640) and out.calls == -(-groups.count // 2) and out.groups == groups.count
    assert 0.0 <= out.prob.min() and out.prob.max() <= 1.0
    none = refiner.predict(auto_prompts(np.zeros((480, 640), bool), PromptConfig(group_size=K)))
    assert none.groups == 0 and not none.prob.any()
    with pytest.raises(ValueError):
        refiner.predict(auto_prompts(prob >= 0.5, PromptConfig(group_size=K + 1)))


def test_the_papers_fusion_is_an_and(exported: tuple) -> None:
    _, report = exported
    refiner = PromptRefiner.from_onnx(report["encoder"], report["decoder"], threads=1)
    frame, _ = _frame()
    base = BASELINES["blackhat_otsu"]()
    coarse = base.segment(frame)
    outs = {}
    for stage in ("coarse", "refined", "paper"):
        seg = RefinedSegmenter(base, refiner, stage=stage, config=PromptConfig(group_size=K, negatives=2))
        outs[stage] = seg.segment(frame)
    np.testing.assert_array_equal(outs["coarse"].prob, coarse.prob)
    m_hat = coarse.prob >= seg.coarse_threshold  # M^ as it enters the AND
    np.testing.assert_array_equal(outs["paper"].mask(), fuse(m_hat, outs["refined"].mask()))
    assert not (outs["paper"].mask() & ~m_hat).any()
    with pytest.raises(ValueError, match="needs the pixel refiner"):
        RefinedSegmenter(base, refiner, stage="fused")
    assert seg.last_timings_ms["groups"] >= 1 and "encoder_ms" in seg.last_timings_ms
    blank = np.full((480, 640, 3), 180, np.uint8)  # nothing to prompt: M_AP and M are empty
    empty = RefinedSegmenter(base, refiner, config=PromptConfig(group_size=K)).segment(blank)
    assert not empty.mask().any()
    with pytest.raises(ValueError):
        RefinedSegmenter(base, refiner, config=PromptConfig(group_size=PROMPT_GROUP_SIZE + 1))
    with pytest.raises(ValueError):
        fuse_prob(np.zeros((2, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("threshold", [0.05, 0.3, 0.5, 0.7])
def test_recalibrated_coarse_mask_keeps_its_threshold(threshold: float) -> None:
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(5000), [0.0, 1.0, threshold, np.nextafter(threshold, 0)]]).astype(np.float32)
    q = recalibrate(p, threshold)
    np.testing.assert_array_equal(q >= 0.5, p >= threshold)
    assert q.dtype == np.float32 and ((q >= 0) & (q <= 1)).all()
    order = np.argsort(p, kind="stable")
    assert (np.diff(q[order]) >= 0).all()  # monotone: a recalibration, not a new mask
    refined = (rng.random(p.shape) > 0.5).astype(np.float32)
    np.testing.assert_array_equal(fuse_prob(p, refined, threshold) >= 0.5, (p >= threshold) & (refined >= 0.5))
    with pytest.raises(ValueError, match="threshold"):
        recalibrate(p, 1.0)


def test_fold_constant_inputs_on_a_small_graph() -> None:
    """Pad whose pads come from Concat(Constant, Constant) -> Cast: folded to one initializer."""
    c1 = helper.make_node("Constant", [], ["a"], value=numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64)))
    c2 = helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.array([0, 0, 1, 1], np.int64)))
    cat = helper.make_node("Concat", ["a", "b"], ["ab"], axis=0)
    cast = helper.make_node("Cast", ["ab"], ["pads"], to=TensorProto.INT64)
    pad = helper.make_node("Pad", ["x", "pads"], ["y"])
    graph = helper.make_graph(
        [c1, c2, cat, cast, pad],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert check_tensorrt_support(model)  # the computed pads are refused before folding
    assert fold_constant_inputs(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Pad"]
    pads = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["pads"]
    np.testing.assert_array_equal(pads, [0, 0, 0, 0, 0, 0, 1, 1])
    assert check_tensorrt_support(model) == []


def test_cli_stages_and_ablation(exported: tuple, tmp_path) -> None:
    """``eval seg --stage`` and ``eval refiner`` end to end (tiny refiner, classical coarse mask)."""
    import json
    import shutil

    from device.cli import main
    from server_train.synth import SynthConfig, write_dataset

    _, report = exported
    folder = tmp_path / "refiner"
    folder.mkdir()
    for key in ("encoder", "decoder"):
        shutil.copy(report[key], folder / report[key].name)
    data = tmp_path / "synth"
    write_dataset(data, n=2, seed=3, config=SynthConfig(), progress=False)
    dice = {}
    for stage in ("coarse", "refined", "paper"):
        out = tmp_path / f"{stage}.json"
        args = ["eval", "seg", "--data", str(data), "--out", str(out), "--model", "blackhat_otsu", "--threads", "1"]
        assert main([*args, "--stage", stage, "--refiner", str(folder)]) == 0
        dice[stage] = json.loads(out.read_text())["dice"]
    assert len(set(dice.values())) > 1  # the stages really differ
    out = tmp_path / "ablation.json"
    args = ["eval", "refiner", "--synthetic", str(data), "--refiner", str(folder), "--model", "blackhat_otsu"]
    assert main([*args, "--out", str(out), "--figure", str(tmp_path / "fig.png"), "--threads", "1"]) == 0
    ablation = json.loads(out.read_text())["synthetic"]
    assert ablation["frames"] == 2 and ablation["coarse"]["dice"] == pytest.approx(dice["coarse"])
    assert ablation["fused_auto"]["dice"] == pytest.approx(dice["paper"], abs=1e-9)  # the ablation's AND
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_find_refiner_uses_the_verified_shipped_bundle(tmp_path) -> None:
    from device.assets import default_bundle_path
    from server_train.refiner_cli import DECODER_FILE, ENCODER_FILE, find_refiner

    shipped = find_refiner(None)  # the default bundle ships the refiner
    assert shipped == default_bundle_path()
    assert (shipped / ENCODER_FILE).is_file() and (shipped / DECODER_FILE).is_file()
    with pytest.raises(FileNotFoundError, match="lacks"):
        find_refiner(str(tmp_path))
