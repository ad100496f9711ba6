"""Scalp classifiers: backbone weights, registry, training on cached features, ONNX export with
parity, INT8 quantization, the device classes and their errors, eval and classify commands.
Tiny models and generated data only (no ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from device.capture.imageio import FrameError
from device.cli import main
from device.contracts.constants import (
    ALOPECIA_FEATURES,
    CLS_HEIGHT,
    CLS_WIDTH,
    CONDITION_NAMES,
    DISEASE_NAMES,
    DISEASE_SIZE,
    LEVEL_NAMES,
)
from device.models.backends import OrtBackend
from device.models.classifiers import (
    AlopeciaGrader,
    ClassifierInputError,
    DiseaseClassifier,
    SeverityClassifier,
    disease_preprocess,
    prepare_condition_input,
    prepare_disease_input,
)
from export.classifier_export import export_condition_classifier, export_disease_classifier, quantize_int8
from server_train.models.classifier import DiseaseClassifier as DiseaseNet
from server_train.models.classifier import create_classifier
from server_train.models.efficientnet_lite import EfficientNetLite, load_lite0_imagenet
from server_train.synth import SynthConfig
from server_train.synth.condition_dataset import write_condition_dataset
from server_train.training.alopecia_train import export_grader, fit_grader
from server_train.training.classifier_data import load_real, read_yolo_conditions
from server_train.training.classifier_train import ClsTrainConfig, load_classifier, sample_weights, train_classifier
from server_train.training.disease_train import cross_validate, fit_head, load_photos, train_and_export, view_features

SMALL = SynthConfig(height=240, width=320, n_strands=(5, 30))


def _real_folder(root: Path) -> Path:
    """A folder laid out like scalp-microscope/valid: 4 frames, YOLO-seg labels."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    labels = ["0 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5", "2 0 0 1 0 1 1 0 1", "", "3 0.2 0.2 0.4 0.2 0.3 0.4"]
    for i, text in enumerate(labels):
        cv2.imwrite(str(root / "images" / f"f{i}.jpg"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
        (root / "labels" / f"f{i}.txt").write_text(text)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny severity classifier trained a few steps, exported to ONNX and INT8."""
    root = tmp_path_factory.mktemp("cls")
    synth = write_condition_dataset(root / "synth", 8, 1, SMALL, sampling="uniform")
    real = _real_folder(root / "real")
    cfg = ClsTrainConfig(
        synth=str(synth), real=str(real), out=str(root / "run"), model="severity_tiny", pretrained=False, split=2
    )
    cfg = ClsTrainConfig(**{**cfg.__dict__, "steps": 4, "batch": 6, "ckpt_every": 2})
    ckpt = train_classifier(cfg, log_every=1)
    model, _ = load_classifier(ckpt)
    onnx_path = export_condition_classifier(model, root / "sev.onnx")
    int8 = quantize_int8(onnx_path, root / "sev_int8.onnx", [synth, real], n=6)
    return {"root": root, "synth": synth, "real": real, "ckpt": ckpt, "onnx": onnx_path, "int8": int8}


def test_lite0_imagenet_weights_load_strictly() -> None:
    net = load_lite0_imagenet(EfficientNetLite()).eval()
    with torch.no_grad():
        feats = net(torch.zeros(1, 3, CLS_HEIGHT, CLS_WIDTH))
    assert feats.shape == (1, 1280) and torch.isfinite(feats).all()


def test_yolo_polygons_to_presence_and_area(tmp_path) -> None:
    real = load_real(_real_folder(tmp_path / "r"))
    np.testing.assert_array_equal(real.presence, [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]])
    assert real.area[1, 1] == pytest.approx(1.0, abs=0.02)  # the whole frame is oily
    assert real.area[0, 0] == pytest.approx(0.16, abs=0.02)  # 0.4 x 0.4 square
    assert (real.levels == -1).all()
    p = tmp_path / "ds.txt"
    p.write_text("1 0 0 0.5 0 0.5 0.5 0 0.5\n")
    presence, area = read_yolo_conditions(p)
    np.testing.assert_array_equal(presence, [1, 0, 1])  # ds = dandruff and sensitive
    assert area[0] == area[2] == pytest.approx(0.25, abs=0.02)


def test_inverse_frequency_weights_favour_rare_levels() -> None:
    levels = np.array([[0, 0, 0]] * 9 + [[3, 0, 0]])
    w = sample_weights(levels)
    assert w.sum() == pytest.approx(1.0)
    assert w[-1] == pytest.approx(9 * w[0])


def test_training_resumes_and_export_matches(trained) -> None:
    log = [json.loads(x) for x in (trained["root"] / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {"levels", "presence", "area"} <= set(log[-1])
    model, ck = load_classifier(trained["ckpt"])
    assert ck["step"] == 4
    frame = cv2.imread(str(next((trained["synth"] / "images").iterdir())))
    x = prepare_condition_input(frame)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))[0].numpy()
    got = SeverityClassifier.from_onnx(trained["onnx"]).raw(x)["level_logits"]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_int8_graph_is_quantized_and_close(trained) -> None:
    import onnx

    proto = onnx.load(str(trained["int8"]))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in proto.graph.node}
    record = json.loads({p.key: p.value for p in proto.metadata_props}["quantization"])
    assert record["recipe"]["name"] == "ort-cpu" and record["recipe"]["reduce_range"]  # 7-bit: no saturation
    assert record["calibration_inputs"] == 6  # 3 frames from each of the two folders
    assert record["gate"]["metric"] == "agreement" and record["gate"]["passed"]
    frame = cv2.imread(str(next((trained["synth"] / "images").iterdir())))
    x = prepare_condition_input(frame)
    fp = SeverityClassifier.from_onnx(trained["onnx"]).raw(x)["level_logits"]
    q = SeverityClassifier.from_onnx(trained["int8"]).raw(x)["level_logits"]
    assert np.abs(fp - q).max() < 0.25 * (np.abs(fp).max() + 1e-3) + 0.05


def test_calibrate_int8_gates_a_classifier_card(trained, tmp_path) -> None:
    """The one INT8 path: a classifier's FP32 card -> its rules' CPU recipe -> agreement gate."""
    from export.classifier_cards import write_card

    card = write_card(tmp_path / "release", "severity", {"fp32": trained["onnx"]}, ["test"])
    assert card.name == "conditions.card.json"
    args = ["calibrate", "int8", "--card", str(card), "--frames", str(trained["synth"]), "--runs", "2"]
    assert main([*args, "--limit", "6", "--threads", "1", "--min-speedup", "100"]) == 0
    written = json.loads(card.read_text())
    int8 = next(v for v in written["variants"] if v["precision"] == "int8")
    assert int8["file"] == "sev.int8-ort-cpu.onnx" and int8["targets"] == ["onnxruntime-cpu"]
    assert int8["gate"]["passed"] and int8["gate"]["candidate"] >= 0.95 and not written["refused"]
    assert int8["gate"]["checks"]["max_logit_error"] <= 0.25
    assert int8["quantization"]["recipe"]["reduce_range"]
    assert written["preferred"]["onnxruntime-cpu"] == "sev.onnx"  # not 100x faster than FP32


class _ColourNet(torch.nn.Module):
    """A disease-type graph that tells the photos of ``_photo_classes`` apart by colour:
    conv 3x3 -> ReLU -> global mean -> linear, fixed random weights."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Linear(8, len(DISEASE_NAMES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_gate_refuses_an_int8_classifier_calibrated_on_black_frames(tmp_path) -> None:
    """Calibrated on black frames, the input's range ends at black: the photos' colours clip and
    the INT8 logits leave FP32's on them. The gate refuses it, says why, and leaves no file;
    calibrated on the photos it passes."""
    photos = _photo_classes(tmp_path / "photos")
    fp32 = export_disease_classifier(_ColourNet().eval(), tmp_path / "d.onnx", metadata={"preprocess": "resize"})
    black = tmp_path / "black"
    black.mkdir()
    for i in range(4):
        cv2.imwrite(str(black / f"b{i}.png"), np.zeros((96, 128, 3), np.uint8))
    out = tmp_path / "d.int8.onnx"
    with pytest.raises(ValueError, match=r"accuracy gate refused it \(agreement: .*REFUSED"):
        quantize_int8(fp32, out, [black], n=12, gate_frames=[photos])
    assert not out.exists()
    assert quantize_int8(fp32, out, [photos], n=12) == out and out.is_file()


def test_severity_classifier_results_and_errors(trained) -> None:
    clf = SeverityClassifier.from_onnx(trained["onnx"])
    res = clf.predict(np.full((480, 640, 3), 128, np.uint8))
    assert set(res.levels) == set(CONDITION_NAMES) and set(res.levels.values()) <= set(LEVEL_NAMES)
    for probs in res.level_probs.values():
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    json.dumps(res.to_dict())
    good = prepare_condition_input(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ClassifierInputError, match="dtype float64, expected float32"):
        clf.predict_tensor(good.astype(np.float64))
    with pytest.raises(ClassifierInputError, match=r"shape \(1, 3, 10, 10\)"):
        clf.predict_tensor(np.zeros((1, 3, 10, 10), np.float32))
    with pytest.raises(ClassifierInputError, match="NaN"):
        clf.predict_tensor(np.full_like(good, np.nan))
    with pytest.raises(FrameError, match="pixel type float32"):
        clf.predict(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(FrameError, match="too small"):
        clf.predict(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="no input"):
        AlopeciaGrader(OrtBackend(trained["onnx"]))


def test_alopecia_grader_export_matches_sklearn(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    x = rng.normal(0, 1, (len(y), len(ALOPECIA_FEATURES))).astype(np.float32)
    x[:, 0] += 40 - 10 * y  # count falls with the level
    model = fit_grader(x, y)
    grader = AlopeciaGrader.from_onnx(export_grader(model, tmp_path / "a.onnx"))
    for row in x[::17]:
        level, probs = grader.predict_features(row[None])
        np.testing.assert_allclose(probs, model.predict_proba(row[None])[0], atol=1e-4)
        assert level == LEVEL_NAMES[int(model.predict(row[None])[0])]
    with pytest.raises(ClassifierInputError, match="shape"):
        grader.predict_features(np.zeros((1, 3), np.float32))


def test_disease_preprocess_and_export(tmp_path) -> None:
    photo = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    out = disease_preprocess(photo)
    assert out.shape == (DISEASE_SIZE, DISEASE_SIZE, 3) and out.dtype == np.uint8
    plain = disease_preprocess(photo, mode="resize")
    assert plain.shape == out.shape and not np.array_equal(plain, out)  # denoised, equalised, sharpened
    with pytest.raises(ValueError, match="preprocessing"):
        disease_preprocess(photo, mode="sharpen")
    model = create_classifier("disease_tiny").eval()
    path = export_disease_classifier(model, tmp_path / "d.onnx", metadata={"preprocess": "resize"})
    clf = DiseaseClassifier.from_onnx(path)
    assert clf.preprocess == "resize"
    label, probs = clf.predict(photo)
    assert label in DISEASE_NAMES and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(prepare_disease_input(photo, "resize"))), 1)[0].numpy()
    np.testing.assert_allclose([probs[n] for n in DISEASE_NAMES], ref, atol=1e-4)


def test_eval_conditions_keys(trained, tmp_path) -> None:
    out = tmp_path / "r.json"
    args = ["eval", "conditions", "--data", str(trained["real"]), "--out", str(out), "--model", str(trained["onnx"])]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 4
    assert set(report["f1"]) == {"dandruff", "oiliness", "erythema"}
    assert report["macro_f1"] == pytest.approx(np.mean(list(report["f1"].values())), abs=1e-3)


def test_eval_synthetic_conditions_writes_confusions(trained, tmp_path) -> None:
    out = tmp_path / "s.json"
    args = ["eval", "synth-conditions", "--data", str(trained["synth"]), "--out", str(out)]
    assert main([*args, "--model", str(trained["onnx"]), "--figures", str(tmp_path / "fig")]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 8 and set(report["severe_f1"]) == set(CONDITION_NAMES)
    assert sum(map(sum, report["conditions"]["sebum"]["confusion"])) == 8
    assert Path(report["figure"]).is_file()


def test_classify_command(trained, tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    grader = export_grader(fit_grader(rng.normal(0, 1, (40, len(ALOPECIA_FEATURES))), y), tmp_path / "a.onnx")
    frame = next((trained["synth"] / "images").iterdir())
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    out = tmp_path / "c.json"
    args = ["classify", str(frame), str(bad), "--out", str(out), "--severity", str(trained["onnx"])]
    assert main([*args, "--alopecia", str(grader)]) == 1  # one unreadable file
    report = json.loads(out.read_text())
    assert report["models"]["hair_classes"] == "hair_classes"  # the shipped segmenter, classed as on the scanner
    frames = report["frames"]
    assert set(frames[0]["conditions"]["levels"]) == set(CONDITION_NAMES)
    assert frames[0]["alopecia"]["level"] in (*LEVEL_NAMES, None)
    assert "not a readable image" in frames[1]["error"]


def test_tiled_disease_model_averages_tile_features() -> None:
    model = create_classifier("disease_tiny_tiles").eval()
    x = torch.randn(2, 3, 2 * DISEASE_SIZE, 2 * DISEASE_SIZE)
    tiles = [x[:, :, i : i + DISEASE_SIZE, j : j + DISEASE_SIZE] for i in (0, DISEASE_SIZE) for j in (0, DISEASE_SIZE)]
    with torch.no_grad():
        expected = model.fc(torch.stack([model.backbone(t) for t in tiles], 1).mean(1))
        np.testing.assert_allclose(model(x).numpy(), expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="tiles"):
        DiseaseNet(model.backbone, tiles=0)


def _photo_classes(root: Path, per_class: int = 4) -> Path:
    """Class folders of small photos, one colour channel raised per class."""
    rng = np.random.default_rng(7)
    for k, name in enumerate(DISEASE_NAMES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (120, 160, 3), dtype=np.uint8)
            img[:, :, k] += 150
            cv2.imwrite(str(root / name / f"{i}.png"), img)
    return root


def test_disease_cross_validation_and_tiled_export(tmp_path) -> None:
    photos = _photo_classes(tmp_path / "photos")
    report = cross_validate(photos, folds=2, model="disease_tiny_tiles", preprocess="resize", repeats=2)
    assert report["photos"] == 12 and report["repeats"] == 2
    assert len(report["fold_accuracy"]) == 4 and len(report["repeat_accuracy"]) == 2
    assert report["accuracy_mean"] == pytest.approx(np.mean(report["fold_accuracy"]), abs=1e-3)
    assert sum(sum(row) for row in report["confusion"]) == 24  # every photo once per repeat
    assert set(report["per_class"]) == set(DISEASE_NAMES)
    fp32, int8 = train_and_export(
        photos, tmp_path / "d.onnx", int8=tmp_path / "d.int8.onnx", model="disease_tiny_tiles", preprocess="resize"
    )
    torch.manual_seed(0)  # train_and_export's seed: the same random tiny backbone
    net = create_classifier("disease_tiny_tiles").eval()
    paths, labels = load_photos(photos)
    head = fit_head(view_features(net, paths, preprocess="resize"), labels)
    with torch.no_grad():
        net.fc.weight.copy_(torch.from_numpy(head.coef_.astype(np.float32)))
        net.fc.bias.copy_(torch.from_numpy(head.intercept_.astype(np.float32)))
    img = cv2.imread(str(paths[5]))
    x = prepare_disease_input(img, "resize", 2 * DISEASE_SIZE)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)), 1)[0].numpy()
    for path, atol in ((fp32, 1e-4), (int8, 0.15)):
        clf = DiseaseClassifier.from_onnx(path)
        assert clf.size == 2 * DISEASE_SIZE and clf.preprocess == "resize"
        _, probs = clf.predict(img)
        np.testing.assert_allclose([probs[n] for n in DISEASE_NAMES], ref, atol=atol)


def test_alopecia_features_are_measured_as_the_device_measures_them(trained, tmp_path) -> None:
    """With the shipped segmenter, the grader's training features class each located hair with
    the shipped per-hair class model, so its thin ratio is the scanner's."""
    from device.app.analysis import analyse_frame
    from device.app.pipeline import ScanPipeline
    from device.assets import default_bundle_path
    from device.capture.imageio import read_frame
    from device.models.bundle import Bundle
    from device.models.classifiers import hair_features
    from server_train.training.alopecia_train import train_alopecia

    report = train_alopecia(trained["synth"], tmp_path / "alo", limit=8)
    assert report["hair_classes"] == "shipped" and Path(report["onnx"]).is_file()
    x = np.load(tmp_path / "alo" / "features_train.npy")
    pipeline = ScanPipeline(Bundle.open(default_bundle_path()), threads=1)
    first = json.loads((trained["synth"] / "labels.jsonl").read_text().splitlines()[0])["stem"]
    frame = read_frame(trained["synth"] / "images" / f"{first}.jpg")
    device = analyse_frame(pipeline.segmenter, frame, hair_classes=pipeline.hair_classes)
    np.testing.assert_allclose(x[0], hair_features(device.metrics)[0], rtol=1e-5)
