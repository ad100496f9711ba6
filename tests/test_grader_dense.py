"""Condition grader on real-frame signals: polygons rasterised to per-condition maps, the split by
original, the dense map head and its loss, F1-maximising presence thresholds, and the device
reading thresholds from the model card (a real ONNX Runtime session on a tiny exported graph).
Tiny models and generated frames only (no ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from device.cli import main
from device.contracts.constants import CLS_HEIGHT, CLS_WIDTH, CONDITION_NAMES
from device.models.classifiers import SeverityClassifier, presence_thresholds
from export.classifier_export import export_condition_classifier
from server_train.evaluation.presence_thresholds import (
    best_threshold,
    choose_thresholds,
    pool_heldout,
    presence_auc,
    presence_scores,
)
from server_train.models.classifier import ConditionEnsemble, create_classifier
from server_train.synth import SynthConfig
from server_train.synth.condition_dataset import write_condition_dataset
from server_train.training.condition_losses import balance_weights, map_loss
from server_train.training.condition_maps import condition_maps, fold_range, holdout_mask, original_name


def test_polygons_rasterise_to_condition_maps(tmp_path) -> None:
    label = tmp_path / "f.txt"
    # ds square over x 0.25..0.5, y 0..0.5; an oily full-width band y 0.75..1; a 2-point s line
    label.write_text("1 0.25 0 0.5 0 0.5 0.5 0.25 0.5\n2 0 0.75 1 0.75 1 1 0 1\n3 0.1 0.1 0.2 0.2\n")
    presence, maps = condition_maps(label, 4, 8, supersample=16)
    np.testing.assert_array_equal(presence, [1, 1, 1])
    assert maps.shape == (3, 4, 8) and maps.dtype == np.float32
    want = np.zeros((4, 8), np.float32)
    want[:2, 2:4] = 1.0
    np.testing.assert_allclose(maps[0], want, atol=0.1)  # dandruff = d | ds
    np.testing.assert_allclose(maps[2], maps[0])  # erythema = s | ds; the 2-point line draws nothing
    np.testing.assert_allclose(maps[1][3], 1.0, atol=0.1)  # oiliness band: the bottom row only
    assert maps[1][:2].max() == 0.0
    assert maps[0].mean() == pytest.approx(0.125, abs=0.02)  # a quarter x a half of the frame
    empty_presence, empty = condition_maps(tmp_path / "missing.txt", 4, 8)
    assert not empty_presence.any() and not empty.any()


def test_split_keeps_augmentations_of_an_original_together() -> None:
    names = [f"D_{i}_jpg.rf.{h}.jpg" for i in range(60) for h in ("ab12", "cd34", "ef56")]
    assert original_name(names[0]) == "D_0" and original_name("plain_frame.png") == "plain_frame"
    held = holdout_mask(names, 0.25)
    per_original = held.reshape(60, 3)
    assert (per_original == per_original[:, :1]).all()
    assert 5 <= per_original[:, 0].sum() <= 25
    assert not holdout_mask(names, 0.0).any()
    assert (holdout_mask(names, 0.25, salt="x") != held).any()


def test_dense_head_shapes_and_map_loss_trains() -> None:
    torch.manual_seed(0)
    model = create_classifier("severity_dense_tiny").train()
    x = torch.randn(4, 3, CLS_HEIGHT, CLS_WIDTH)
    levels, presence, area, maps = model.from_split(model.backbone.forward_until(x, 0), 0)
    assert levels.shape == (4, 3, 4) and presence.shape == (4, 3) and area.shape == (4, 3)
    assert maps.shape == (4, 3, CLS_HEIGHT // 16, CLS_WIDTH // 16)
    assert ((area >= 0) & (area <= 1)).all()
    target = torch.zeros_like(maps)
    target[:, 0, :6, :8] = 1.0  # dandruff in the top-left quarter
    loss0 = map_loss(maps, target)
    assert map_loss(target * 40 - 20, target) < 0.05 < loss0  # confident, right logits score ~0
    with pytest.raises(ValueError, match="differ"):
        map_loss(maps, target[:, :2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(25):
        out = model.from_split(model.backbone.forward_until(x, 0), 0)[3]
        loss = map_loss(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.8 * float(loss0.detach())
    p = torch.sigmoid(out.detach())[:, 0]
    assert p[:, :6, :8].mean() > p[:, 6:, 8:].mean() + 0.2  # the map learnt where dandruff is


def test_balance_weights_inverse_frequency() -> None:
    presence = np.array([[1, 0, 0]] + [[0, 0, 1]] * 3, np.float32)
    w = balance_weights(presence)
    np.testing.assert_allclose(w[:, 0], [0.5 / 0.75, 0.5 / 0.25])
    assert w[1, 1] == 0.0  # never present: positives get no weight


def test_threshold_selection_maximises_f1_on_a_toy_set() -> None:
    prob = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.9])
    truth = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    t, f1 = best_threshold(prob, truth)
    grid = np.linspace(0, 1, 1001)
    brute = max(presence_scores(prob[:, None], truth[:, None], [g], ["c"])["f1"]["c"] for g in grid)
    assert f1 == pytest.approx(brute, abs=1e-4) and f1 == pytest.approx(8 / 9, abs=1e-4)
    assert 0.2 < t <= 0.3  # calls 0.3 and up: TP 4, FP 1 (0.7), FN 0; any other cut scores less
    both = choose_thresholds(np.stack([prob, 1 - prob], 1), np.stack([truth, 1 - truth], 1))
    assert both[0] == t and 0.7 < both[1] <= 0.8  # TP 3, FP 0, FN 1


def test_threshold_separates_probabilities_closer_than_rounding() -> None:
    # A barely trained head: every probability within 1e-4; the chosen cut must still split them.
    prob = np.array([0.50001, 0.50002, 0.50003, 0.50004])
    truth = np.array([0, 0, 1, 1])
    t, f1 = best_threshold(prob, truth)
    assert 0.50002 < t < 0.50003 and f1 == 1.0
    assert presence_scores(prob[:, None], truth[:, None], [t], ["c"])["f1"]["c"] == 1.0


def _tiny_graph(tmp_path: Path, thresholds: dict[str, float] | None) -> Path:
    torch.manual_seed(0)
    model = create_classifier("severity_dense_tiny").eval()
    meta = {"presence_thresholds": thresholds} if thresholds else {}
    return export_condition_classifier(model, tmp_path / "dense.onnx", metadata=meta)


def test_device_reads_card_thresholds(tmp_path) -> None:
    graph = _tiny_graph(tmp_path, {"dandruff": 0.2, "sebum": 0.7, "erythema": 0.4})
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    from_graph = SeverityClassifier.from_onnx(graph)
    assert from_graph.thresholds == {"dandruff": 0.2, "sebum": 0.7, "erythema": 0.4}
    card = {"thresholds": {f"presence_{c}": t for c, t in zip(CONDITION_NAMES, (0.0, 1.0, 0.5), strict=True)}}
    clf = SeverityClassifier.from_onnx(graph, card=card)  # the card wins over the graph's metadata
    res = clf.predict(frame)
    assert clf.thresholds == {"dandruff": 0.0, "sebum": 1.0, "erythema": 0.5}
    assert res.present["dandruff"] and not res.present["sebum"]
    assert res.present["erythema"] == (res.presence["erythema"] >= 0.5)
    assert res.to_dict()["present"] == res.present
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        presence_thresholds({"thresholds": {"presence_sebum": 1.5}})


def test_card_without_thresholds_defaults_to_half(tmp_path) -> None:
    graph = _tiny_graph(tmp_path, None)
    for card in (None, {"thresholds": None}, {"thresholds": {}}):
        clf = SeverityClassifier.from_onnx(graph, card=card)
        assert clf.thresholds == dict.fromkeys(CONDITION_NAMES, 0.5)
    res = clf.predict(np.full((96, 96, 3), 90, np.uint8))
    assert res.present == {c: res.presence[c] >= 0.5 for c in CONDITION_NAMES}
    partial = presence_thresholds({"thresholds": {"presence_sebum": 0.3}})
    assert partial == {"dandruff": 0.5, "sebum": 0.3, "erythema": 0.5}


def _real_folder(root: Path, n: int = 12) -> Path:
    """Frames named like Roboflow augmentations (n/3 originals x 3), bright flakes where labelled."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        img = rng.integers(60, 120, (120, 120, 3), dtype=np.uint8)
        text = ""
        if i % 2 == 0:
            img[10:50, 10:50] = 250
            text = "0 0.08 0.08 0.42 0.08 0.42 0.42 0.08 0.42"
        stem = f"D_{i // 3}_jpg.rf.{i:04x}"
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), img)
        (root / "labels" / f"{stem}.txt").write_text(text)
    return root


def test_train_export_card_and_eval_carry_thresholds(tmp_path) -> None:
    synth = write_condition_dataset(tmp_path / "synth", 6, 1, SynthConfig(height=240, width=320, n_strands=(5, 30)))
    real = _real_folder(tmp_path / "real")
    run = tmp_path / "run"
    train = ["train", "classifier", "--synth", str(synth), "--real", str(real), "--out", str(run)]
    opts = ["--model", "severity_dense_tiny", "--no-pretrained", "--split", "2", "--steps", "4", "--batch", "6"]
    assert main([*train, *opts, "--holdout-share", "0.5", "--eval-every", "2"]) == 0
    held = json.loads((run / "heldout.json").read_text())
    names = {f["file"] for f in held["per_frame"]}
    assert names and len({original_name(n) for n in names}) * 3 == len(names)
    assert held["at_thresholds"]["macro_f1"] >= held["at_0.5"]["macro_f1"]
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert {"maps", "real", "levels", "heldout_f1"} <= set(log[-1])
    onnx_path = tmp_path / "sev.onnx"
    assert main(["export", "classifier", "--checkpoint", str(run / "final.pt"), "--out", str(onnx_path)]) == 0
    card_args = ["export", "classifier-card", "--dir", str(tmp_path / "rel"), "--kind", "severity"]
    assert main([*card_args, "--fp32", str(onnx_path), "--command", "test"]) == 0
    card = json.loads((tmp_path / "rel" / "conditions.card.json").read_text())
    assert card["thresholds"] == {f"presence_{c}": t for c, t in held["thresholds"].items()}
    out = tmp_path / "r.json"
    assert main(["eval", "conditions", "--data", str(real), "--model", str(onnx_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["thresholds"].values()) == list(held["thresholds"].values())
    assert report["frames"] == 12


def test_folds_partition_the_originals() -> None:
    names = [f"D_{i}_jpg.rf.{j:04x}.jpg" for i in range(40) for j in range(3)]
    ranges = [fold_range(f"{k}/4") for k in range(4)]
    masks = [holdout_mask(names, share, start=start) for start, share in ranges]
    assert (np.sum(masks, axis=0) == 1).all()  # every frame held out by exactly one fold
    for m in masks:
        assert 0 < m.sum() < len(names)
        assert len({original_name(n) for n, h in zip(names, m, strict=True) if h}) * 3 == m.sum()
    with pytest.raises(ValueError, match="k/K"):
        fold_range("2")
    with pytest.raises(ValueError, match="K >= 2"):
        fold_range("4/4")


def test_pooled_heldout_chooses_thresholds_on_all_folds_and_refuses_overlap() -> None:
    a = {"fold": "0/2", "per_frame": [{"file": "a", "truth": [1, 0, 0], "p_present": [0.9, 0.2, 0.1]}]}
    b = {"fold": "1/2", "per_frame": [{"file": "b", "truth": [0, 1, 0], "p_present": [0.3, 0.6, 0.2]}]}
    pooled = pool_heldout([a, b], CONDITION_NAMES)
    assert pooled["frames"] == 2 and pooled["folds"] == ["0/2", "1/2"] and pooled["auc"]["sebum"] == 1.0
    assert pooled["at_thresholds"]["f1"]["dandruff"] == 1.0 and pooled["at_thresholds"]["f1"]["sebum"] == 1.0
    assert 0.3 < pooled["thresholds"]["dandruff"] <= 0.9
    with pytest.raises(ValueError, match="overlap"):
        pool_heldout([a, a], CONDITION_NAMES)


def test_presence_auc_ranks_and_skips_one_class_columns() -> None:
    truth = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 0, 1]])
    prob = np.array([[0.9, 0.1, 0.2], [0.2, 0.5, 0.1], [0.8, 0.3, 0.9], [0.7, 0.2, 0.3]])
    auc = presence_auc(prob, truth, CONDITION_NAMES)
    assert auc == {"dandruff": 1.0, "sebum": None, "erythema": 0.25}


def test_ensemble_shares_the_prefix_and_averages_members() -> None:
    torch.manual_seed(0)
    members = [create_classifier("severity_dense_tiny", pretrained=False) for _ in range(2)]
    members[1].backbone.load_state_dict(members[0].backbone.state_dict())
    with torch.no_grad():  # a trained suffix differs between members
        for p in members[1].maps.parameters():
            p.add_(0.5)
    ens = ConditionEnsemble([m.eval() for m in members], split=2).eval()
    x = torch.randn(2, 3, CLS_HEIGHT, CLS_WIDTH)
    with torch.no_grad():
        got = ens(x)
        want = [torch.stack(o).mean(0) for o in zip(*(m(x) for m in members), strict=True)]
        assert not torch.allclose(members[0](x)[1], members[1](x)[1])
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-5)
    with torch.no_grad():
        members[1].backbone._conv_stem.weight.add_(1.0)
    with pytest.raises(ValueError, match="shared prefix"):
        ConditionEnsemble(members, split=2)


def test_fold_runs_export_one_graph_with_pooled_thresholds(tmp_path) -> None:
    synth = write_condition_dataset(tmp_path / "synth", 6, 1, SynthConfig(height=240, width=320, n_strands=(5, 30)))
    real = _real_folder(tmp_path / "real", n=24)
    opts = ["--model", "severity_dense_tiny", "--no-pretrained", "--split", "2", "--steps", "3", "--batch", "6"]
    runs = []
    for k in range(2):
        run = tmp_path / f"fold{k}"
        args = ["train", "classifier", "--synth", str(synth), "--real", str(real), "--out", str(run)]
        assert main([*args, *opts, "--fold", f"{k}/2", "--cache", str(tmp_path / "cache")]) == 0
        runs.append(run)
    held = [json.loads((r / "heldout.json").read_text()) for r in runs]
    files = [{f["file"] for f in h["per_frame"]} for h in held]
    assert not files[0] & files[1] and len(files[0] | files[1]) == 24
    onnx_path = tmp_path / "ens.onnx"
    ckpts = [str(r / "final.pt") for r in runs]
    assert main(["export", "classifier", "--checkpoint", *ckpts, "--out", str(onnx_path)]) == 0
    pooled = json.loads((tmp_path / "ens.heldout.json").read_text())
    assert pooled["frames"] == 24
    out = tmp_path / "r.json"
    assert main(["eval", "conditions", "--data", str(real), "--model", str(onnx_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["thresholds"].values()) == list(pooled["thresholds"].values())  # eval names sebum "oiliness"
    assert report["auc"]["dandruff"] is not None and 0.0 <= report["auc"]["dandruff"] <= 1.0
    assert report["auc"]["oiliness"] is None  # no oiliness label in the folder: no AUC
