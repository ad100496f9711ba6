"""The per-hair class model: patches, training on boxes, the threshold, export and the device's
reading of it, and how measure classes hairs with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.contracts.constants import HAIR_FIELD_PX, HAIR_PATCH_BATCH, HAIR_PATCH_PX, MODEL_UM_PER_PX
from device.contracts.preprocess import hair_patches
from device.measure.hair_metrics import measure
from device.measure.located_hairs import HAIR_CLASSES, located_class
from tests.counting_data import write_set


def test_patch_is_centred_on_the_point_and_follows_the_pixel_scale() -> None:
    import cv2

    frame = np.full((480, 640, 3), 200, np.uint8)
    cv2.circle(frame, (300, 200), 3, (0, 0, 0), -1)
    at_model = hair_patches(frame, np.array([[300, 200], [100, 100]]), MODEL_UM_PER_PX)
    assert at_model.shape == (2, 3, HAIR_PATCH_PX, HAIR_PATCH_PX) and at_model.dtype == np.float32
    c = HAIR_PATCH_PX // 2
    assert at_model[0, :, c, c].mean() < at_model[0, :, 2, 2].mean() - 1.0  # the dark dot sits in the middle
    assert np.allclose(at_model[1], at_model[1, :, :1, :1])  # nothing near (100, 100)
    # The same scene at twice the magnification (pixels half as large) gives about the same patch.
    big = cv2.resize(frame, (1280, 960), interpolation=cv2.INTER_LINEAR)
    zoomed = hair_patches(big, np.array([[600, 400]]), MODEL_UM_PER_PX / 2)
    assert np.abs(zoomed[0] - at_model[0]).mean() < 0.1
    # Near the edge the patch is mirrored, never out of bounds.
    assert np.isfinite(hair_patches(frame, np.array([[0, 0], [639, 479]]), MODEL_UM_PER_PX)).all()
    with pytest.raises(ValueError, match="um_per_px"):
        hair_patches(frame, np.array([[1, 1]]), 0.0)


def test_located_class_by_model_decision_and_diameter() -> None:
    assert located_class(80.0, None) == HAIR_CLASSES[2]
    assert located_class(None, None) is None
    assert located_class(20.0, False) == HAIR_CLASSES[2]  # the model overrules a thin-looking mask
    assert located_class(20.0, True) == HAIR_CLASSES[0]
    assert located_class(60.0, True) == HAIR_CLASSES[1]
    assert located_class(None, True) == HAIR_CLASSES[1]  # the mask missed it: still counted thin


def test_measure_thin_ratio_follows_the_model_decisions() -> None:
    mask = np.zeros((120, 160), bool)
    for x in (30, 80, 130):
        mask[10:110, x - 6 : x + 6] = True  # three thick shafts
    points = np.array([[30, 60], [80, 60], [130, 60]], float)
    by_diameter = measure(mask, hair_points=points)
    assert by_diameter.thin_ratio == 0.0
    by_model = measure(mask, hair_points=points, miniaturised=np.array([True, False, False]))
    assert by_model.thin_ratio == pytest.approx(1 / 3)
    assert [k for _, _, k in by_model.hairs] == [HAIR_CLASSES[1], HAIR_CLASSES[2], HAIR_CLASSES[2]]
    with pytest.raises(ValueError, match="miniaturised flags"):
        measure(mask, hair_points=points, miniaturised=np.array([True]))
    # The model's share scale scales the frame's share, not the hairs' classes.
    scaled = measure(mask, hair_points=points, miniaturised=np.array([True, False, False]), thin_share_scale=0.75)
    assert scaled.thin_ratio == pytest.approx(0.25) and scaled.hairs == by_model.hairs
    assert measure(mask, hair_points=points, thin_share_scale=0.5).thin_ratio == 0.0  # by diameter: unscaled
    with pytest.raises(ValueError, match="thin_share_scale"):
        measure(mask, hair_points=points, miniaturised=np.array([True, False, False]), thin_share_scale=1.5)


def test_threshold_choice_shrinks_the_share_only_when_that_errs_less() -> None:
    from server_train.training.hair_class_train import choose_threshold

    rng = np.random.default_rng(0)
    frame = np.repeat(np.arange(40), 10)
    prob = rng.uniform(0, 1, len(frame))
    # Truth = the share at P >= 0.7: the exact threshold, scale 1.
    truth = np.array([(prob[frame == f] >= 0.7).mean() for f in range(40)])
    exact = choose_threshold(prob, prob >= 0.7, frame, truth)
    assert exact["thin_probability"] == 0.7 and exact["thin_share_scale"] == 1.0 and exact["ratio_mae"] == 0.0
    assert exact["ratio_mae_unscaled"] == 0.0 and exact["thin_probability_unscaled"] == 0.7
    # Truth = 0.8 x that share: no threshold alone matches it as well as scale 0.8.
    shrunk = choose_threshold(prob, prob >= 0.7, frame, 0.8 * truth)
    assert shrunk["thin_share_scale"] < 1.0 and shrunk["ratio_mae"] < shrunk["ratio_mae_unscaled"]
    assert abs(shrunk["ratio_bias"]) <= shrunk["ratio_mae"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    from server_train.training.hair_class_train import HairClassConfig, train_hair_classes

    root = tmp_path_factory.mktemp("hairs")
    data = write_set(root / "set", subjects=10, sites=2, seed=3)
    cfg = HairClassConfig(
        data=str(data), out=str(root / "run"), val_percent=0, tune_percent=30, steps=80, batch=32, warmup=5
    )
    return train_hair_classes(cfg, progress=False), data


def test_training_separates_thin_stubs_and_chooses_a_threshold(trained: tuple[Path, Path]) -> None:
    from server_train.training.hair_class_train import load_hair_classes, predict

    final, _ = trained
    model, ckpt = load_hair_classes(final)
    tune = np.load(final.parent / "patches_tune.npz")
    prob = predict(model, tune["x"])
    thin = tune["y"]
    assert thin.any() and (~thin).any()
    assert prob[thin].min() > prob[~thin].max() - 0.05 or (prob[thin].mean() - prob[~thin].mean()) > 0.5
    choice = ckpt["threshold"]
    assert 0.0 < choice["thin_probability"] < 1.0
    assert choice["ratio_mae"] <= choice["ratio_mae_at_0.5"] and choice["ratio_mae"] < 0.1
    assert json.loads((final.parent / "threshold.json").read_text()) == choice


def test_export_and_device_agree_with_torch(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import torch

    from device.models.hair_classes import HairClassifier
    from export.hair_class_export import export_hair_classes
    from server_train.training.hair_class_train import load_hair_classes
    from server_train.training.trichoscopy import frame_and_points, load_labelled

    final, data = trained
    model, ckpt = load_hair_classes(final)
    card = json.loads(export_hair_classes(model, ckpt, tmp_path, ["test"]).read_text())
    assert (
        card["name"] == "hair_classes"
        and card["thresholds"]["thin_probability"] == ckpt["threshold"]["thin_probability"]
    )
    device = HairClassifier.from_onnx(tmp_path / "hair_classes.onnx")
    assert device.thin_probability == ckpt["threshold"]["thin_probability"]
    frame, points, thin = frame_and_points(load_labelled([data])[0])
    many = np.concatenate([points] * (HAIR_PATCH_BATCH // len(points) + 2))  # more than one batch
    got = device.probabilities(frame, many, MODEL_UM_PER_PX)
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(hair_patches(frame, many, MODEL_UM_PER_PX)))).numpy().reshape(-1)
    assert len(got) == len(many) > HAIR_PATCH_BATCH
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert HairClassifier(device.backend, thin_probability=0.3).thin_probability == 0.3
    with pytest.raises(ValueError, match="thin_probability"):
        HairClassifier(device.backend, thin_probability=1.5)


def test_located_patches_are_cut_where_the_device_finds_hairs(tmp_path: Path) -> None:
    """With a segmenter, patches sit on the hairs it locates (the device's measuring step), each
    labelled by the box it falls in (none: negative), and the threshold is chosen against each
    frame's labelled undersize share."""
    import cv2

    from device.app.analysis import analyse_frame
    from server_train.evaluation.counts_eval import TRICHOSCOPY_UM_PER_PX
    from server_train.evaluation.loading import load_segmenter
    from server_train.training.hair_class_train import choose_threshold, located_patch_set
    from server_train.training.trichoscopy import TEXT_BAR_PX, THIN_CLASS, load_labelled

    items = load_labelled([write_set(tmp_path / "set", subjects=3, sites=1, seed=5)])
    segmenter = load_segmenter(None, threads=1)  # the shipped counting segmenter
    located = []
    for item in items:
        raw = cv2.imread(str(item.image), cv2.IMREAD_COLOR)[TEXT_BAR_PX:]
        located.append(len(analyse_frame(segmenter, raw, um_per_px=TRICHOSCOPY_UM_PER_PX).metrics.hairs))
    assert sum(located) > 0
    s = located_patch_set(items, segmenter, margin=2)
    kept = [(n, item) for n, item in zip(located, items, strict=True) if n]
    assert s.x.shape == (sum(located), 3, HAIR_PATCH_PX + 4, HAIR_PATCH_PX + 4)
    assert s.truth is not None and len(s.truth) == len(kept)
    assert s.boxed is not None and not (s.y & ~s.boxed).any()  # an undersize label comes from a box
    assert set(np.unique(s.labels3())) <= {0, 1, 2} and ((s.labels3() == 2) == s.y).all()
    for f, (n, item) in enumerate(kept):
        assert (s.frame == f).sum() == n
        assert s.truth[f] == pytest.approx(np.mean([c == THIN_CLASS for c in item.classes]))
        assert s.y[s.frame == f].sum() <= sum(c == THIN_CLASS for c in item.classes)  # one box, one hair
    # The threshold's target is the labelled share, not the share among the patches.
    prob = np.where(s.y, 0.9, 0.1)
    exact = choose_threshold(prob, s.y, s.frame, truth=np.array([s.y[s.frame == f].mean() for f in range(len(kept))]))
    assert exact["ratio_mae"] == 0.0
    none_thin = choose_threshold(prob, s.y, s.frame, truth=np.zeros(len(kept)))
    assert none_thin["thin_probability"] > 0.9 and none_thin["ratio_mae"] == 0.0


def test_field_pair_averages_a_near_and_a_wide_view_and_their_mirrors() -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from server_train.models.hair_patch import HairFieldPair, hair_patch_net

    torch.manual_seed(0)
    pair = hair_patch_net({"kind": "pair", "widths": [4, 8]}).eval()
    assert isinstance(pair, HairFieldPair) and pair.input_px == HAIR_FIELD_PX
    x = torch.randn(3, 3, HAIR_FIELD_PX, HAIR_FIELD_PX)
    o = (HAIR_FIELD_PX - HAIR_PATCH_PX) // 2
    near, wide = x[:, :, o : o + HAIR_PATCH_PX, o : o + HAIR_PATCH_PX], F.avg_pool2d(x, 2)
    with torch.no_grad():
        got = torch.sigmoid(pair(x))
        parts = [pair.near(near), pair.near(near.flip(3)), pair.wide(wide), pair.wide(wide.flip(3))]
        want = torch.stack([torch.sigmoid(p) for p in parts]).mean(0)
        # The wide view sees what lies beyond the near patch; the near view does not.
        far = x.clone()
        far[:, :, :4] += 5.0
        assert torch.equal(pair.near(near_of := far[:, :, o : o + HAIR_PATCH_PX, o : o + HAIR_PATCH_PX]), parts[0])
        assert near_of.shape[-1] == HAIR_PATCH_PX and not torch.allclose(pair(far), pair(x))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="kind"):
        hair_patch_net({"kind": "triple"})


def test_pair_without_mirror_averages_the_two_views_only() -> None:
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from server_train.models.hair_patch import hair_patch_net

    torch.manual_seed(2)
    pair = hair_patch_net({"kind": "pair", "widths": [4, 8], "mirror": False}).eval()
    assert not pair.mirror and hair_patch_net({"kind": "pair", "widths": [4]}).mirror  # old configs: mirrored
    x = torch.randn(2, 3, HAIR_FIELD_PX, HAIR_FIELD_PX)
    o = (HAIR_FIELD_PX - HAIR_PATCH_PX) // 2
    with torch.no_grad():
        near, wide = pair.near(x[:, :, o : o + HAIR_PATCH_PX, o : o + HAIR_PATCH_PX]), pair.wide(F.avg_pool2d(x, 2))
        want = (torch.sigmoid(near) + torch.sigmoid(wide)) / 2
        torch.testing.assert_close(torch.sigmoid(pair(x)), want, atol=1e-6, rtol=1e-5)
        pair.mirror = True
        assert not torch.allclose(torch.sigmoid(pair(x)), want)  # the mirrored passes change it


def test_an_exported_graph_gives_back_its_network_and_reexports_without_mirror(tmp_path: Path) -> None:
    """A released hair_classes graph whose checkpoint is gone: its weights (batch norm folded into
    the convs by the export), configs and threshold come back from the graph; the network
    reproduces the graph on ONNX Runtime, and `export hair-classes --no-mirror` writes a graph
    that is the mean of the two unmirrored views, with the same threshold."""
    torch = pytest.importorskip("torch")
    import onnx
    import onnxruntime as ort

    from device.cli import main
    from export.hair_class_export import export_hair_classes
    from server_train.models.hair_patch import hair_patch_net
    from server_train.training.hair_class_train import graph_checkpoint

    torch.manual_seed(3)
    model = hair_patch_net({"kind": "pair", "widths": [4, 8], "classes": 3})
    with torch.no_grad():  # batch norm statistics that are not the identity, so folding matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    model.eval()
    ckpt = {
        "model_config": {"kind": "pair", "widths": [4, 8], "classes": 3},
        "train_config": {"seed": 7},
        "step": 30,
        "threshold": {"thin_probability": 0.6, "thin_share_scale": 0.8},
    }
    export_hair_classes(model, ckpt, tmp_path / "v1", ["test"])
    graph = tmp_path / "v1" / "hair_classes.onnx"
    back, back_ckpt = graph_checkpoint(graph)
    assert back.mirror and back_ckpt["threshold"]["thin_probability"] == 0.6 and back_ckpt["step"] == 30
    x = np.random.default_rng(0).normal(size=(HAIR_PATCH_BATCH, 3, HAIR_FIELD_PX, HAIR_FIELD_PX)).astype(np.float32)
    ran = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(None, {"hair_patches": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(back(torch.from_numpy(x)).numpy(), ran, atol=1e-4)
        model.mirror = False
        unmirrored = model(torch.from_numpy(x)).numpy()
    argv = ["export", "hair-classes", "--checkpoint", str(graph), "--no-mirror", "--out", str(tmp_path / "v2")]
    assert main(argv) == 0
    card = json.loads((tmp_path / "v2" / "hair_classes.card.json").read_text())
    assert card["thresholds"] == {"thin_probability": 0.6, "thin_share_scale": 0.8}
    assert card["provenance"]["training"]["model_config"]["mirror"] is False
    assert card["evaluation"]["threshold_choice"]["recovered_from"] == str(graph)
    v2 = ort.InferenceSession(str(tmp_path / "v2" / "hair_classes.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(v2.run(None, {"hair_patches": x})[0], unmirrored, atol=1e-4)
    assert sum(n.op_type == "Conv" for n in onnx.load(str(tmp_path / "v2" / "hair_classes.onnx")).graph.node) == 4
    bare = onnx.load(str(graph))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ValueError, match="not an exported hair_classes graph"):
        graph_checkpoint(tmp_path / "bare.onnx")


def test_pair_training_refits_and_the_device_reads_its_field(tmp_path: Path) -> None:
    """The two-field pair (three classes) trains on its own patch side, refits on training +
    tuning subjects with the threshold chosen before, and the device cuts the side its graph
    declares; the graph gives one thin logit."""
    torch = pytest.importorskip("torch")

    from device.models.hair_classes import HairClassifier
    from export.hair_class_export import export_hair_classes
    from server_train.training.hair_class_train import HairClassConfig, load_hair_classes, train_hair_classes
    from server_train.training.trichoscopy import frame_and_points, load_labelled

    data = write_set(tmp_path / "set", subjects=8, sites=2, seed=4)
    cfg = HairClassConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        val_percent=0,
        tune_percent=30,
        steps=30,
        batch=16,
        warmup=5,
        widths=(8, 16),
        kind="pair",
        classes=3,
        refit=True,
    )
    final = train_hair_classes(cfg, progress=False)
    assert final == tmp_path / "run" / "refit" / "final.pt"
    first = torch.load(str(tmp_path / "run" / "final.pt"), map_location="cpu", weights_only=False)
    model, ckpt = load_hair_classes(final)
    assert model.classes == 3 and model.near.head.out_features == 3
    assert ckpt["threshold"]["thin_probability"] == first["threshold"]["thin_probability"]
    assert ckpt["threshold"]["chosen_with"].endswith("final.pt") and 0 < ckpt["threshold"]["thin_share_scale"] <= 1
    fit = np.load(tmp_path / "run" / "patches_fit.npz")
    assert fit["x"].shape[-1] == HAIR_FIELD_PX + 4 * cfg.margin
    card = json.loads(export_hair_classes(model, ckpt, tmp_path / "out", ["test"]).read_text())
    assert card["thresholds"]["thin_share_scale"] == ckpt["threshold"]["thin_share_scale"]
    device = HairClassifier.from_onnx(tmp_path / "out" / "hair_classes.onnx")
    assert device.patch_px == HAIR_FIELD_PX and device.thin_share_scale == ckpt["threshold"]["thin_share_scale"]
    frame, points, _ = frame_and_points(load_labelled([data])[0])
    got = device.probabilities(frame, points, MODEL_UM_PER_PX)
    with torch.no_grad():
        patches = torch.from_numpy(hair_patches(frame, points, MODEL_UM_PER_PX, size=HAIR_FIELD_PX))
        ref = torch.sigmoid(model(patches)).numpy().reshape(-1)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    with pytest.raises(ValueError, match="thin_share_scale"):
        HairClassifier(device.backend, thin_share_scale=0.0)


def test_three_class_logit_is_the_undersize_share_of_the_softmax() -> None:
    torch = pytest.importorskip("torch")

    from server_train.models.hair_patch import HairPatchNet

    torch.manual_seed(1)
    net = HairPatchNet((4, 8), classes=3).eval()
    x = torch.randn(5, 3, HAIR_PATCH_PX, HAIR_PATCH_PX)
    with torch.no_grad():
        p2 = torch.softmax(net.logits(x), dim=1)[:, 2:3]
        torch.testing.assert_close(torch.sigmoid(net(x)), p2, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="classes"):
        HairPatchNet((4,), classes=2)


def test_the_device_runs_each_graph_at_its_own_static_batch(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """Graphs exported before 2026-12-05 take 32 patches a call, later ones HAIR_PATCH_BATCH: the
    device reads the batch from the graph and gives the same probabilities with either."""
    pytest.importorskip("torch")
    from device.contracts.constants import HAIR_CLS_INPUT, HAIR_CLS_OUT
    from device.models.hair_classes import HairClassifier
    from export.classifier_export import _export
    from server_train.training.hair_class_train import load_hair_classes
    from server_train.training.trichoscopy import frame_and_points, load_labelled

    final, data = trained
    model, _ = load_hair_classes(final)
    meta = {"thin_probability": "0.5"}
    _export(
        model, (32, 3, HAIR_PATCH_PX, HAIR_PATCH_PX), tmp_path / "b32.onnx", HAIR_CLS_INPUT, [HAIR_CLS_OUT], meta, 1e-4
    )
    _export(
        model, (5, 3, HAIR_PATCH_PX, HAIR_PATCH_PX), tmp_path / "b5.onnx", HAIR_CLS_INPUT, [HAIR_CLS_OUT], meta, 1e-4
    )
    old, small = HairClassifier.from_onnx(tmp_path / "b32.onnx"), HairClassifier.from_onnx(tmp_path / "b5.onnx")
    assert (old.batch, small.batch) == (32, 5)
    frame, points, _ = frame_and_points(load_labelled([data])[0])
    many = np.concatenate([points] * 3)
    np.testing.assert_allclose(
        old.probabilities(frame, many, MODEL_UM_PER_PX), small.probabilities(frame, many, MODEL_UM_PER_PX), atol=1e-5
    )
