"""The frozen-trunk condition grader: prevalence thresholds, training per fold of the real
originals, export at its own input size, and the device reading that size and the thresholds
from the graph (real ONNX Runtime sessions on a tiny trained grader). Generated frames only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from device.cli import main
from device.contracts.constants import CLS_INPUT
from device.models.classifiers import SeverityClassifier, prepare_condition_input
from export.classifier_export import export_condition_classifier
from server_train.evaluation.presence_thresholds import best_threshold, prevalence_threshold
from server_train.models.classifier import create_classifier
from server_train.synth import SynthConfig
from server_train.synth.condition_dataset import write_condition_dataset
from server_train.training.condition_grader_train import GraderConfig, load_grader, train_grader

SIZE = (128, 96)


def _real_originals(root: Path, n: int = 10, copies: int = 2) -> Path:
    """Roboflow-style real frames: ``n`` originals x ``copies`` augmented files; even originals
    carry a white 'flake' inside a dandruff polygon, odd ones an oily band, every third none."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        base = rng.integers(90, 140, (120, 160, 3)).astype(np.uint8)
        label = ""
        if i % 3 == 2:
            pass
        elif i % 2 == 0:
            cv2.rectangle(base, (40, 30), (80, 60), (250, 250, 250), -1)
            label = "0 0.25 0.25 0.5 0.25 0.5 0.5 0.25 0.5"
        else:
            base[80:, :] = np.clip(base[80:, :].astype(int) + 90, 0, 255).astype(np.uint8)
            label = "2 0 0.67 1 0.67 1 1 0 1"
        for c in range(copies):
            name = f"F_{i}_jpg.rf.{c:04x}{i:04x}"
            copy = np.clip(base.astype(int) + 5 * c, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "images" / f"{name}.jpg"), copy)
            (root / "labels" / f"{name}.txt").write_text(label)
    return root


@pytest.fixture(scope="module")
def grader(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("grader")
    synth = write_condition_dataset(root / "synth", 6, 1, SynthConfig(height=120, width=160), sampling="uniform")
    real = _real_originals(root / "real")
    cfg = GraderConfig(width=SIZE[0], height=SIZE[1], folds=2, steps=15, level_steps=15, batch=8, hidden=8, tiny=True)
    report = train_grader([real], synth, root / "run", cfg)
    onnx_path = root / "grader.onnx"
    assert main(["export", "classifier", "--checkpoint", str(root / "run" / "final.pt"), "--out", str(onnx_path)]) == 0
    return {"root": root, "real": real, "synth": synth, "onnx": onnx_path, "report": report}  # type: ignore[dict-item]


def test_prevalence_threshold_keeps_the_positive_share() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random(400) < 0.2
    prob = np.clip(0.3 * truth + rng.normal(0.2, 0.15, 400), 0, 1)  # weakly separated
    t = prevalence_threshold(prob, truth)
    assert np.mean(prob >= t) == pytest.approx(0.2, abs=0.01)
    assert best_threshold(prob, truth)[0] < t  # the F1 optimum calls more frames present
    with pytest.raises(ValueError, match="at least one"):
        prevalence_threshold(np.array([]), np.array([]))


def test_grader_trains_per_fold_and_records_out_of_fold_thresholds(grader, tmp_path) -> None:
    report = grader["report"]
    assert report["real_frames"] == 20 and report["synthetic_frames"] == 6
    assert report["threshold_rule"] == "prevalence"
    thresholds = report["thresholds"]
    assert set(thresholds) == {"dandruff", "sebum", "erythema"}
    assert all(0.0 <= t <= 1.0 for t in thresholds.values())
    # the features were cached once: a second run with the same frames reuses the file
    again = tmp_path / "again"
    shutil.copytree(grader["root"] / "run", again)
    cache = again / f"features_{SIZE[0]}x{SIZE[1]}.npz"
    stamp = cache.stat().st_mtime_ns
    cfg = GraderConfig(width=SIZE[0], height=SIZE[1], folds=2, steps=1, level_steps=1, hidden=8, tiny=True)
    train_grader([grader["real"]], grader["synth"], again, cfg)
    assert cache.stat().st_mtime_ns == stamp


def test_exported_grader_runs_on_the_device_at_its_own_size(grader) -> None:
    clf = SeverityClassifier.from_onnx(grader["onnx"])
    assert clf.size == SIZE
    graph = onnx.load(str(grader["onnx"]))
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert graph.graph.input[0].name == CLS_INPUT and dims == [1, 3, SIZE[1], SIZE[0]]
    # the graph's metadata thresholds decide presence when no card is given
    assert clf.thresholds == pytest.approx(grader["report"]["thresholds"])
    frame = cv2.imread(str(next((grader["real"] / "images").glob("F_0_*.jpg"))))
    result = clf.predict(cv2.resize(frame, (640, 480)))
    assert set(result.levels) == {"dandruff", "sebum", "erythema"}
    for c, p in result.presence.items():
        assert result.present[c] == (p >= clf.thresholds[c])
    # the graph is what torch computes
    model, _ = load_grader(grader["root"] / "run" / "final.pt")
    x = prepare_condition_input(frame, SIZE)
    with torch.no_grad():
        levels, presence, area = model(torch.from_numpy(x))
    raw = clf.raw(x)
    np.testing.assert_allclose(raw["presence_logits"], presence.numpy(), atol=1e-3)
    np.testing.assert_allclose(raw["level_logits"], levels.numpy(), atol=1e-3)


def test_mirrored_frame_gets_the_same_grades(grader) -> None:
    # the grader averages the frame and its mirror, so a mirrored frame is graded the same
    clf = SeverityClassifier.from_onnx(grader["onnx"])
    frame = cv2.imread(str(next((grader["real"] / "images").glob("F_1_*.jpg"))))
    a, b = clf.predict(frame), clf.predict(cv2.flip(frame, 1))
    for c in a.presence:
        assert a.presence[c] == pytest.approx(b.presence[c], abs=1e-4)
        np.testing.assert_allclose(a.level_probs[c], b.level_probs[c], atol=1e-4)


def test_severity_graph_of_another_aspect_is_refused(tmp_path) -> None:
    model = create_classifier("severity_tiny").eval()
    path = export_condition_classifier(model, tmp_path / "square.onnx", size=(128, 128))
    with pytest.raises(ValueError, match="4:3"):
        SeverityClassifier.from_onnx(path)


def test_grader_config_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="4:3"):
        GraderConfig(width=500, height=384)
    with pytest.raises(ValueError, match="folds"):
        GraderConfig(folds=1)
    with pytest.raises(ValueError, match="threshold_rule"):
        GraderConfig(threshold_rule="median")


def test_eval_conditions_says_which_frames_the_grader_trained_on(grader, tmp_path, capsys) -> None:
    from server_train.evaluation.classifier_eval import evaluate_real_conditions

    trained = evaluate_real_conditions(grader["real"], grader["onnx"])
    assert trained["frames_seen_in_training"] == 20
    assert "trained on 20 of these 20" in capsys.readouterr().err
    other = _real_originals(tmp_path / "other", n=3, copies=1)
    for f in (other / "images").iterdir():  # new originals: nothing seen
        f.rename(f.with_name("N" + f.name))
    for f in (other / "labels").iterdir():
        f.rename(f.with_name("N" + f.name))
    assert evaluate_real_conditions(other, grader["onnx"])["frames_seen_in_training"] == 0
    assert "WARNING" not in capsys.readouterr().err


def test_train_grader_cli_writes_a_report(grader, tmp_path) -> None:
    out = tmp_path / "cli_run"
    args = ["train", "grader", "--real", str(grader["real"]), "--synth", str(grader["synth"]), "--out", str(out)]
    args += ["--size", "128x96", "--folds", "2", "--steps", "2", "--level-steps", "2", "--tiny", "--threads", "1"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["width"] == 128 and (out / "final.pt").is_file()
    with pytest.raises(SystemExit):
        main([*args[:-4], "--size", "128", "--tiny"])


def test_single_view_grader_keeps_the_heads_and_grades_the_frame_alone(grader, tmp_path) -> None:
    # the shipped setting since 2026-12-07: the same heads (trained on random views, the cached
    # features reused), thresholds from single-view out-of-fold scores, one trunk pass
    run = tmp_path / "single"
    run.mkdir()
    for cache in (grader["root"] / "run").glob("features_*.npz"):
        shutil.copy(cache, run / cache.name)
    cfg = GraderConfig(
        width=SIZE[0], height=SIZE[1], folds=2, steps=15, level_steps=15, batch=8, hidden=8, tiny=True, mirror=False
    )
    train_grader([grader["real"]], grader["synth"], run, cfg)
    single, ck = load_grader(run / "final.pt")
    mirrored, _ = load_grader(grader["root"] / "run" / "final.pt")
    assert not single.mirror and mirrored.mirror
    for a, b in zip(single.heads.parameters(), mirrored.heads.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=5e-3, rtol=0)  # same seeds; threads reorder sums
    onnx_path = tmp_path / "single.onnx"
    assert main(["export", "classifier", "--checkpoint", str(run / "final.pt"), "--out", str(onnx_path)]) == 0
    clf = SeverityClassifier.from_onnx(onnx_path)
    assert clf.thresholds == pytest.approx(ck["presence_thresholds"])
    frame = cv2.imread(str(next((grader["real"] / "images").glob("F_0_*.jpg"))))
    x = prepare_condition_input(frame, SIZE)
    with torch.no_grad():
        want = single(torch.from_numpy(x))
    for got, expected in zip(clf.raw(x).values(), want, strict=True):
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-3)
    # one trunk pass: the stem convolution sees a batch of one frame (two with the mirror)
    assert _stem_batch(onnx_path) == 1 and _stem_batch(grader["onnx"]) == 2


def _stem_batch(path: Path) -> int:
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    stem = next(n for n in graph.node if n.op_type == "Conv")
    shapes = {v.name: v.type.tensor_type.shape.dim for v in graph.value_info}
    return int(shapes[stem.output[0]][0].dim_value)
