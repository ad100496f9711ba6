"""Hair-photo segmenter: preprocessing, split, the three networks train on a tiny photo set
(one budget), export with parity and a gated INT8 file, the device class, ``eval seg`` and
``segment --model`` with hair-photo models, and the INT8 gate refusing a worse candidate."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from calibration.gate import MiouGate, mask_pairs
from calibration.quantize import RECIPES
from device.cli import main
from device.contracts.constants import HAIR_PHOTO_INPUT
from device.contracts.preprocess import photo_input
from device.models.backends import OrtBackend
from device.models.bundle import Bundle
from device.models.bundle_trust import BundleError
from device.models.hair_photo import HairPhotoSegmenter
from server_train.hair_photo.split import in_val, split_pairs
from server_train.hair_photo.train import HairPhotoConfig, load_hair_photo, train_hair_photo

pytestmark = pytest.mark.slow


def _photo(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A 'portrait': light skin-coloured background with noise, a dark textured hair blob
    (ellipse) on top; returns (BGR photo, mask 255 = hair)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (150 + rng.integers(-20, 20), 170 + rng.integers(-20, 20), 200 + rng.integers(-20, 20))
    img = np.clip(img.astype(int) + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    centre = (int(w * rng.uniform(0.3, 0.7)), int(h * rng.uniform(0.25, 0.5)))
    axes = (int(w * rng.uniform(0.2, 0.4)), int(h * rng.uniform(0.15, 0.35)))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    hair = np.clip(rng.normal(45, 20, img.shape), 0, 255).astype(np.uint8)
    img[mask > 0] = hair[mask > 0]
    return img, mask


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for k in range(40):
        img, mask = _photo(rng, int(rng.integers(60, 90)), int(rng.integers(60, 90)))
        cv2.imwrite(str(root / "images" / f"p{k:03d}.jpg"), img)
        cv2.imwrite(str(root / "masks" / f"p{k:03d}.png"), mask)
    return root


def _config(photos: Path, out: Path, **kw) -> HairPhotoConfig:
    base = dict(data=str(photos), out=str(out), side=64, crop=48, steps=60, batch=4, lr=5e-3, warmup=5)
    base |= dict(eval_every=30, val_percent=25, save_every=20)
    return HairPhotoConfig(**(base | kw))


@pytest.fixture(scope="module")
def tiny_run(photos, tmp_path_factory) -> Path:
    return train_hair_photo(_config(photos, tmp_path_factory.mktemp("run"), model="tiny_unet"), progress=False)


def test_photo_input_shape_and_normalisation() -> None:
    grey = np.full((30, 50, 3), 127, np.uint8)
    x = photo_input(grey, 32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, 0.0, atol=1e-6)  # 127 is the Lite models' zero
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 2] = 255  # BGR red
    assert photo_input(rgb, 8)[0, 0].mean() > 0.9 and photo_input(rgb, 8)[0, 2].mean() < -0.9  # RGB order
    with pytest.raises(ValueError, match="HxWx3"):
        photo_input(np.zeros((10, 10), np.uint8))


def test_split_is_stable_and_near_its_share(photos) -> None:
    stems = [f"Frame{k:05d}" for k in range(2000)]
    share = np.mean([in_val(s, 15) for s in stems])
    assert 0.12 < share < 0.18
    assert [in_val(s, 15) for s in stems[:50]] == [in_val(s, 15) for s in stems[:50]]
    val, train = split_pairs(photos, "val", 25), split_pairs(photos, "train", 25)
    assert len(val) + len(train) == 40 and not {i for i, _ in val} & {i for i, _ in train}
    with pytest.raises(ValueError, match="split"):
        split_pairs(photos, "test")


def test_training_learns_and_resumes(photos, tiny_run, tmp_path) -> None:
    result = json.loads((tiny_run.parent / "result.json").read_text())
    assert result["best"]["miou"] > 0.6  # a blob of dark texture on skin: learnt within 60 steps
    assert result["val_photos"] + result["train_photos"] == 40
    # Resume: a run stopped at step 20 continues from its last.pt to the end.
    cfg = _config(photos, tmp_path / "r", model="tiny_unet", steps=20)
    train_hair_photo(cfg, progress=False)
    train_hair_photo(_config(photos, tmp_path / "r", model="tiny_unet", steps=40), progress=False)
    steps = [json.loads(line)["step"] for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))


def test_init_starts_from_a_run_and_refuses_another_network(photos, tiny_run, tmp_path) -> None:
    cfg = _config(
        photos, tmp_path / "ft", model="tiny_unet", init=str(tiny_run), side=96, crop=64, steps=2, eval_every=2
    )
    _, ck = load_hair_photo(train_hair_photo(cfg, progress=False))
    assert ck["model_config"]["init"]["checkpoint"] == str(tiny_run)
    assert ck["best"]["miou"] > 0.5  # starts from the trained weights: 2 steps alone would not get there
    with pytest.raises(ValueError, match="is not"):
        train_hair_photo(_config(photos, tmp_path / "x", model="scratch_unet", init=str(tiny_run), steps=1))


def test_export_parity_int8_gate_and_device_segmenter(photos, tiny_run, tmp_path) -> None:
    out = tmp_path / "export"
    assert main(["export", "hair-photo", "--checkpoint", str(tiny_run), "--out", str(out), "--int8", str(photos)]) == 0
    card = json.loads((out / "hair_photo.card.json").read_text())
    assert card["name"] == "hair_photo" and card["class_names"] == ["background", "hair"]
    assert card["evaluation"]["validation"]["miou"] > 0.6
    files = {v["precision"]: v["file"] for v in card["variants"]}
    assert files["fp32"] == "hair_photo.onnx"
    assert card["evaluation"]["int8"]["gate"]["metric"] == "miou"
    assert ("int8" in files) == card["evaluation"]["int8"]["gate"]["passed"]
    if "int8" in files:  # --int8-only lists the INT8 file alone (what the bundle then carries)
        only = tmp_path / "only"
        args = ["export", "hair-photo", "--checkpoint", str(tiny_run), "--out", str(only), "--int8", str(photos)]
        assert main([*args, "--int8-only"]) == 0
        variants = json.loads((only / "hair_photo.card.json").read_text())["variants"]
        assert [v["precision"] for v in variants] == ["int8"]
    seg = HairPhotoSegmenter.from_onnx(out / "hair_photo.onnx", threads=1)
    img, mask = _photo(np.random.default_rng(5), 70, 90)
    found = seg.segment(img)
    assert found.mask.shape == (70, 90) and found.probability.shape == (70, 90)
    truth = mask > 0
    assert (found.mask & truth).sum() / max(1, (found.mask | truth).sum()) > 0.5  # IoU on a new photo
    assert abs(found.coverage - truth.mean()) < 0.15
    # Torch and the ONNX graph agree on the logits.
    model, _ = load_hair_photo(tiny_run)
    x = photo_input(img, 64)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = OrtBackend(out / "hair_photo.onnx", threads=1).run({HAIR_PHOTO_INPUT: x})["hair_logit"]
    assert np.abs(ref - got).max() < 1e-3


def test_device_segmenter_refuses_other_models_and_bundles_without_it(tmp_path, capsys) -> None:
    from device.assets import default_model_path
    from tests.release_support import make_keys, slim_release

    with pytest.raises(ValueError, match="not a hair-photo model"):
        HairPhotoSegmenter.from_onnx(default_model_path())
    private, trusted = make_keys(tmp_path)
    slim = slim_release(tmp_path, private)  # the shipped segmenter alone, no hair_photo
    with pytest.raises(BundleError, match="no 'hair_photo'"):
        HairPhotoSegmenter.from_bundle(Bundle.open(slim, trusted_keys=[trusted]))
    image = tmp_path / "p.png"
    cv2.imwrite(str(image), np.zeros((40, 50, 3), np.uint8))
    args = ["segment", str(image), "--model", "hair_photo", "--bundle", str(slim), "--trust", str(trusted)]
    assert main([*args, "--out", str(tmp_path / "o")]) != 0
    assert "has no hair_photo model" in capsys.readouterr().err


def test_eval_seg_and_segment_cli_with_a_hair_photo_model(photos, tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "export"
    assert main(["export", "hair-photo", "--checkpoint", str(tiny_run), "--out", str(out)]) == 0
    model = str(out / "hair_photo.onnx")
    report = tmp_path / "r.json"
    args = ["eval", "seg", "--data", str(photos), "--model", model, "--split", "val", "--out", str(report)]
    assert main(args) == 0
    r = json.loads(report.read_text())
    assert r["frames"] == len(split_pairs(photos, "val")) and 0.5 < r["miou"] <= 1.0
    assert {"accuracy", "precision", "f1"} <= set(r) and len(r["per_photo"]) == r["frames"]
    seg_out = tmp_path / "seg"
    image = sorted((photos / "images").iterdir())[0]
    assert main(["segment", str(image), "--model", model, "--out", str(seg_out), "--save-mask"]) == 0
    line = json.loads((seg_out / "metrics.jsonl").read_text().splitlines()[0])
    assert 0.0 < line["hair_coverage"] < 1.0
    overlay = cv2.imread(str(seg_out / line["overlay"]))
    saved = cv2.imread(str(seg_out / line["mask"]), cv2.IMREAD_GRAYSCALE)
    assert saved.shape == cv2.imread(str(image)).shape[:2] and overlay.shape[1] == saved.shape[1]
    assert abs((saved > 0).mean() - line["hair_coverage"]) < 1e-3
    capsys.readouterr()
    assert main(["segment", str(image), "--model", model, "--out", str(tmp_path / "s2"), "--um-per-px", "3"]) != 0
    assert "a hair photo has no scale" in capsys.readouterr().err


def test_mirror_averaged_graph_is_mirror_equivariant(tiny_run, tmp_path) -> None:
    out = tmp_path / "mirror"
    assert main(["export", "hair-photo", "--checkpoint", str(tiny_run), "--out", str(out), "--mirror"]) == 0
    card = json.loads((out / "hair_photo.card.json").read_text())
    assert card["preprocessing"]["test_time"].startswith("mean of the logits")
    seg = HairPhotoSegmenter.from_onnx(out / "hair_photo.onnx", threads=1)
    img, _ = _photo(np.random.default_rng(9), 64, 64)  # the graph's side: no resampling to break symmetry
    a = seg.segment(img).probability
    b = seg.segment(np.ascontiguousarray(img[:, ::-1])).probability
    assert np.abs(a - b[:, ::-1]).max() < 1e-4


def test_miou_gate_refuses_a_worse_candidate(photos, tiny_run, tmp_path) -> None:
    good = tmp_path / "good"
    assert main(["export", "hair-photo", "--checkpoint", str(tiny_run), "--out", str(good)]) == 0
    untrained = tmp_path / "untrained"
    train_hair_photo(_config(photos, untrained, model="tiny_unet", steps=1, eval_every=1), progress=False)
    bad = tmp_path / "bad"
    assert main(["export", "hair-photo", "--checkpoint", str(untrained / "final.pt"), "--out", str(bad)]) == 0
    gate = MiouGate(mask_pairs(photos), max_drop=0.005, threads=1)
    recipe = RECIPES["ort-cpu"]
    assert gate(good / "hair_photo.onnx", good / "hair_photo.onnx", recipe).passed
    verdict = gate(good / "hair_photo.onnx", bad / "hair_photo.onnx", recipe)
    assert not verdict.passed and verdict.candidate < verdict.reference - 0.05


def test_diffusion_features_network_trains_on_the_same_loop(photos, tmp_path) -> None:
    from server_train.diffusion.train import DiffusionConfig, train

    diffusion = train(
        DiffusionConfig(data=str(photos / "images"), out=str(tmp_path / "d"), preset="tiny", steps=4, load=24),
        progress=False,
    )
    run = train_hair_photo(
        _config(
            photos, tmp_path / "f", model="diffusion_features", diffusion=str(diffusion), feature_side=32, steps=30
        ),
        progress=False,
    )
    model, ck = load_hair_photo(run)
    assert ck["model_config"]["kind"] == "diffusion" and ck["model_config"]["t"] == 50
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("head.") for n in trainable)  # the diffusion U-Net stays frozen
    out = tmp_path / "export"
    assert main(["export", "hair-photo", "--checkpoint", str(run), "--out", str(out)]) == 0
    seg = HairPhotoSegmenter.from_onnx(out / "hair_photo.onnx", threads=1)
    assert seg.segment(np.zeros((40, 50, 3), np.uint8)).mask.shape == (40, 50)


def test_shipped_bundle_carries_the_hair_photo_segmenter(tmp_path) -> None:
    from device.assets import default_bundle_path

    bundle = Bundle.open(default_bundle_path())
    card = bundle.model("hair_photo")
    assert [v["precision"] for v in card["variants"]] == ["int8"]  # gated INT8 alone: <= 10 MB
    assert bundle.select("hair_photo").path.stat().st_size < 10e6
    scores = card["evaluation"]
    assert scores["lite0_unet_val"]["miou"] > scores["scratch_unet_val"]["miou"]  # the winner is recorded
    seg = HairPhotoSegmenter.from_bundle(bundle, threads=1)
    img, _ = _photo(np.random.default_rng(3), seg.side, seg.side)
    found = seg.segment(img)
    mirrored = seg.segment(np.ascontiguousarray(img[:, ::-1]))
    assert found.mask.shape == img.shape[:2] and 0.0 <= found.coverage <= 1.0
    # the mirror-averaged graph, up to INT8 rounding (asymmetric activations)
    assert np.abs(found.probability - mirrored.probability[:, ::-1]).mean() < 0.01
    assert (found.mask == mirrored.mask[:, ::-1]).mean() > 0.99
