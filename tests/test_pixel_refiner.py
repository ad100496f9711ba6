"""The pixel refiner end to end with a tiny config: train (resumable), choose its threshold on a
validation set, export (checked ONNX + card), pack into a signed bundle, and the device measures
on its fused mask by default and says so in the record (real ONNX Runtime sessions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from device.app.analysis import analyse_frame  # noqa: E402
from device.app.pipeline import ScanPipeline  # noqa: E402
from device.capture.imageio import read_frame  # noqa: E402
from device.cli import main  # noqa: E402
from device.contracts.constants import PIX_IN_COARSE, PIX_IN_IMAGE, PIX_IN_PROMPT, PIXEL_REFINER_MODEL  # noqa: E402
from device.contracts.records import RecordFactory  # noqa: E402
from device.models.bundle import Bundle  # noqa: E402
from device.refine.fusion import RefinedSegmenter  # noqa: E402
from device.refine.pixel import PixelRefiner  # noqa: E402
from server_train.models.pixel_refiner import PixelRefinerNet  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("prompt_input", [False, True])
def test_an_untrained_refiner_returns_the_students_map(prompt_input: bool) -> None:
    net = PixelRefinerNet((4, 6, 8), prompt_input=prompt_input).eval()
    x = torch.randn(2, 3, 32, 48)
    p = torch.rand(2, 1, 32, 48) * 0.98 + 0.01
    q = torch.rand(2, 1, 32, 48) if prompt_input else None
    with torch.no_grad():
        out = net(x, p, q)
    assert out.shape == (2, 1, 32, 48)
    torch.testing.assert_close(torch.sigmoid(out), p, atol=1e-5, rtol=0)  # the head starts at zero
    with pytest.raises(ValueError, match="exactly when the network takes it"):
        net(x, p, None if prompt_input else p)
    with pytest.raises(ValueError, match="three positive widths"):
        PixelRefinerNet((4, 6))


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny training run on a few synthetic frames, exported with its threshold chosen on
    others, and the shipped segmenter + that refiner in a bundle signed by a key made here."""
    from export.bundle import build_bundle
    from tests.release_support import make_keys

    root = tmp_path_factory.mktemp("pixel")
    train, val = root / "train", root / "val"
    for folder, seed in ((train, 3), (val, 4)):
        assert main(["synth", "--n", "3", "--seed", str(seed), "--out", str(folder), "--mode", "mixed", "--hard"]) == 0
    run = root / "run"
    args = ["train", "pixel-refiner", "--data", str(train), "--out", str(run), "--steps", "4", "--batch", "2"]
    args += ["--crop", "64", "--threads", "1", "--ckpt-every", "2", "--quiet"]
    assert main([*args, "--stop-after", "2"]) == 0 and (run / "last.pt").exists()
    assert main(args) == 0  # resumed from step 2
    history = torch.load(run / "final.pt", weights_only=False)["history"]
    assert [h["step"] for h in history] == [4]
    release = root / "release"
    assert (
        main(
            ["export", "pixel-refiner", "--checkpoint", str(run / "final.pt"), "--tune", str(val)]
            + ["--out", str(release), "--threads", "1"]
        )
        == 0
    )
    private, trusted = make_keys(root)
    shipped = Bundle.open(device_bundle())
    cards = root / "cards"
    assert main(["bundle", "unpack", str(shipped.root), str(cards)]) == 0
    keep = [cards / f"{n}.card.json" for n in ("segmenter", "refiner_encoder", "refiner_decoder")]
    build_bundle(root / "bundle", [*keep, release / f"{PIXEL_REFINER_MODEL}.card.json"], private, version="2099.1.1.1")
    # the same without the prompt refiner, whose M_AP this pixel refiner fuses
    build_bundle(
        root / "lacking", [keep[0], release / f"{PIXEL_REFINER_MODEL}.card.json"], private, version="2099.1.1.2"
    )
    return {
        "release": release,
        "bundle": root / "bundle",
        "lacking": root / "lacking",
        "trusted": trusted,
        "val": val,
        "train": train,
    }


def device_bundle() -> Path:
    from device.assets import default_bundle_path

    return default_bundle_path()


def test_the_export_is_checked_and_its_card_names_the_threshold(released: dict[str, Path]) -> None:
    card = json.loads((released["release"] / f"{PIXEL_REFINER_MODEL}.card.json").read_text())
    choice = card["evaluation"]["threshold_choice"]
    assert card["thresholds"]["refined_mask"] == choice["threshold"] in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    assert choice["frames"] == 3 and choice["data"] == str(released["val"])
    assert set(choice["refined_dice"]) == set(choice["student_dice"])
    assert choice["dice"] == max(choice["refined_dice"].values())
    assert card["inputs"] == [PIX_IN_IMAGE, PIX_IN_COARSE, PIX_IN_PROMPT]  # it fuses M^ and M_AP
    assert card["evaluation"]["onnx_parity_max_abs"] < 1e-3
    refiner = PixelRefiner.from_folder(released["release"], threads=1)
    assert refiner.threshold == choice["threshold"] and (refiner.height, refiner.width) == (480, 640)
    assert refiner.takes_prompt


def test_refined_probabilities_put_the_cards_threshold_at_one_half(released: dict[str, Path]) -> None:
    refiner = PixelRefiner.from_folder(released["release"], threads=1)
    frame = read_frame(sorted((released["val"] / "images").glob("*.png"))[0])
    rng = np.random.default_rng(0)
    coarse = np.clip(rng.random(frame.shape[:2], dtype=np.float32), 0.01, 0.99)
    prompt = rng.random(frame.shape[:2], dtype=np.float32)
    prob = refiner.refine(frame, coarse, prompt)
    feeds = {PIX_IN_IMAGE: refiner_input(frame), PIX_IN_COARSE: coarse[None, None], PIX_IN_PROMPT: prompt[None, None]}
    logits = refiner.backend.run(feeds)["refined_logits"][0, 0].astype(np.float64)
    assert prob.shape == coarse.shape and refiner.last_ms > 0
    # the card's threshold on the graph's P(hair) is 0.5 of the refined map (away from float ties)
    margin = np.abs(logits - np.log(refiner.threshold / (1 - refiner.threshold))) > 1e-4
    assert np.array_equal((prob >= 0.5)[margin], (1 / (1 + np.exp(-logits)) >= refiner.threshold)[margin])
    assert margin.mean() > 0.99
    small = refiner.refine(frame[::2, ::2].copy(), coarse[::2, ::2].copy(), prompt[::2, ::2].copy())  # any size
    assert small.shape == (240, 320)
    with pytest.raises(ValueError, match="does not match the frame"):
        refiner.refine(frame, coarse[:10], prompt)
    with pytest.raises(ValueError, match="pass prompt_prob"):
        refiner.refine(frame, coarse)


def refiner_input(frame: np.ndarray) -> np.ndarray:
    from device.contracts.preprocess import to_network_input

    return to_network_input(frame)


def test_the_device_measures_on_the_fused_mask_of_a_bundle_with_the_pixel_refiner(released: dict[str, Path]) -> None:
    bundle = Bundle.open(released["bundle"], [released["trusted"]])
    pipeline = ScanPipeline(bundle, threads=1)
    assert pipeline.mask_stage == "fused" and pipeline.pixel is not None and pipeline.refiner is not None
    frame = read_frame(sorted((released["val"] / "images").glob("*.png"))[1])
    live = pipeline.live(frame)
    diagnosis = pipeline.diagnose(live)
    assert diagnosis.mask_stage == "fused" and diagnosis.timings_ms["pixel_refiner_ms"] > 0
    assert diagnosis.timings_ms["refiner_decoder_ms"] > 0 and "fusion_ms" not in diagnosis.timings_ms
    # the evaluation's segmenter at stage fused makes the same mask and metrics in one thread
    fused = RefinedSegmenter(pipeline.segmenter, pipeline.refiner, stage="fused", pixel=pipeline.pixel)
    alone = analyse_frame(fused, frame, pipeline.um_per_px(frame.shape[1]), hair_classes=pipeline.hair_classes)
    assert np.array_equal(alone.seg.mask(), diagnosis.analysis.seg.mask())
    assert alone.metrics.to_dict() == diagnosis.analysis.metrics.to_dict()
    record = RecordFactory("scanner-t", bundle.version).build(1, **diagnosis.record_fields())
    assert record["mask_stage"] == "fused"
    assert ScanPipeline(bundle, threads=1, mask_stage="paper").diagnose(live).mask_stage == "paper"
    # a bundle whose pixel refiner fuses M_AP but lacks the prompt refiner is refused
    from device.models.bundle import BundleError

    lacking = Bundle.open(released["lacking"], [released["trusted"]])
    with pytest.raises(BundleError, match="the prompt refiner is missing"):
        ScanPipeline(lacking, threads=1)
    assert ScanPipeline(lacking, threads=1, mask_stage="coarse").mask_stage == "coarse"


def test_eval_seg_scores_the_fused_stage_of_a_staged_refiner(released: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "seg.json"
    args = ["eval", "seg", "--data", str(released["val"]), "--out", str(out), "--threads", "1"]
    assert main([*args, "--pixel-refiner", str(released["release"]), "--stage", "fused"]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 3 and 0 <= report["dice"] <= 1 and "pixel" in report["model"]


def test_real_dandruff_polygons_teach_where_no_hair_is(released: dict[str, Path], tmp_path: Path) -> None:
    """Real frames whose only label is a dandruff polygon: inside it, where the student sees no
    hair, the loss pushes the refined map toward no hair (and frames without one are skipped)."""
    import cv2

    from server_train.training.pixel_refiner_train import default_student, load_negatives

    real = tmp_path / "microscope"
    (real / "images").mkdir(parents=True)
    (real / "labels").mkdir()
    rng = np.random.default_rng(0)
    for stem, label in (("flakes", "0 0.2 0.2 0.6 0.2 0.6 0.7 0.2 0.7\n"), ("oily", "2 0.1 0.1 0.5 0.1 0.5 0.5\n")):
        frame = np.full((640, 640, 3), 200, np.uint8) + rng.integers(0, 30, (640, 640, 3), dtype=np.uint8)
        cv2.imwrite(str(real / "images" / f"{stem}.jpg"), frame)
        (real / "labels" / f"{stem}.txt").write_text(label)
    negatives, where = load_negatives(str(real), default_student("", 1))
    assert len(negatives) == 1 and negatives.frames[0].shape == (480, 640, 3)  # the oily frame has no dandruff
    inside = negatives.truths[0]
    assert inside[240, 250] and not inside[10, 10] and len(where[0]) == int(inside.sum())
    run = tmp_path / "run"
    args = ["train", "pixel-refiner", "--data", str(released["train"]), "--out", str(run), "--steps", "2"]
    args += ["--batch", "4", "--crop", "64", "--threads", "1", "--quiet", "--negatives", str(real)]
    assert main(args) == 0
    history = torch.load(run / "final.pt", weights_only=False)["history"]
    assert history[-1]["negative"] >= 0 and history[-1]["step"] == 2
    with pytest.raises(FileNotFoundError, match="scalp-microscope split folder"):
        load_negatives(str(tmp_path / "nothing"), default_student("", 1))


def test_int8_calibration_feeds_the_device_inputs_and_gates_on_the_fused_dice(
    released: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`calibrate int8` of a pixel refiner card: its inputs are made by the bundle's student and
    prompt refiner as a diagnosis makes them, and its gate scores the fused mask against the
    held-out truth; the variant it adds is what the device then loads."""
    import shutil

    import cv2

    from calibration.pixel_refiner import FusedDiceGate, held_out_masks, pixel_refiner_feeds

    monkeypatch.setenv("SCALPEDGE_TRUSTED_KEYS", str(released["trusted"]))
    staged = tmp_path / "release"
    shutil.copytree(released["release"], staged)
    card_path = staged / f"{PIXEL_REFINER_MODEL}.card.json"
    fp32 = staged / f"{PIXEL_REFINER_MODEL}.onnx"
    bundle = Bundle.open(released["bundle"])
    files, truths = held_out_masks(released["val"])
    feeds, kept = pixel_refiner_feeds(files, fp32, bundle, threads=1)
    assert kept == files and set(feeds[0]) == {PIX_IN_IMAGE, PIX_IN_COARSE, PIX_IN_PROMPT}
    # the feeds are the diagnosis's own: the refiner's fused mask from them is the device's
    pipeline = ScanPipeline(bundle, threads=1, parallel=False)
    frame = read_frame(files[0])
    device_mask = pipeline.diagnose(pipeline.live(frame)).analysis.seg.mask()
    refiner = PixelRefiner.from_folder(staged, threads=1)
    logits = refiner.backend.run(feeds[0])["refined_logits"][0, 0]
    assert np.array_equal(1 / (1 + np.exp(-logits.astype(np.float64))) >= refiner.threshold, device_mask)
    reference = FusedDiceGate(feeds, truths, refiner.threshold, 0.005, threads=1).dice(fp32)
    args = ["calibrate", "int8", "--card", str(card_path), "--frames", str(released["train"]), "--gate-data"]
    args += [str(released["val"]), "--bundle", str(released["bundle"]), "--runs", "2", "--threads", "1"]
    assert main([*args, "--max-drop", "1.0"]) == 0
    card = json.loads(card_path.read_text())
    int8 = [v for v in card["variants"] if v["precision"] == "int8"]
    assert len(int8) == 1 and int8[0]["gate"]["metric"] == "fused_dice"
    assert int8[0]["gate"]["reference"] == pytest.approx(reference)
    assert int8[0]["quantization"]["calibration_inputs"] == 3 and (staged / int8[0]["file"]).exists()
    assert main(args[: args.index("--gate-data")] + ["--bundle", str(released["bundle"])]) != 0
    assert "needs held-out frames with masks (--gate-data)" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((480, 640, 3), np.uint8))
    with pytest.raises(ValueError, match="rejected all 1 frames"):
        pixel_refiner_feeds([blank], fp32, bundle, threads=1)
