"""Counting from real-style labels: the trichoscopy reader and subject split, density targets,
the training crops, a tiny counting run end to end (train, export, the device counting with
it), per-hair thickness, counting from the physical scale, and the counts evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from device.app.analysis import analyse_frame, model_pixel_scale, scale_problem, segment_at_scale
from device.contracts.constants import (
    DENSITY_SCALE,
    DENSITY_SIGMA_PX,
    MODEL_UM_PER_PX,
    SEG_OUT_DENSITY,
    SEG_OUT_MASK,
    SEG_OUT_THIN,
)
from device.contracts.preprocess import crop_box, prepare_frame, source_px_per_frame_px
from device.measure.hair_metrics import HeadCount, measure
from device.measure.located_hairs import hair_class, hair_diameters
from device.models.onnx_segmenter import ModelSegmenter
from device.models.segmentation import CountStrategy, SegOutput
from export.onnx_export import export_segmenter
from server_train.evaluation.counts_eval import count_scores, evaluate_counts, match_hairs, plot_counts, thin_cut
from server_train.models.from_onnx import student_from_onnx
from server_train.models.student import StudentNet
from server_train.training.count_train import CountFrames, CountTrainConfig, train_counts
from server_train.training.train import load_checkpoint
from server_train.training.trichoscopy import (
    density_target,
    frame_and_points,
    load_labelled,
    read_voc,
    subject_of,
    subject_split,
)
from tests.counting_data import write_set, write_voc

# --------------------------------------------------------------------------- labels and split


def test_voc_boxes_have_sorted_corners_and_bad_files_are_refused(tmp_path: Path) -> None:
    write_voc(tmp_path / "a.xml", [(10, 20, 30, 60), (5, 5, 9, 9)], ["premium", "undersize"], reverse=1)
    boxes, classes = read_voc(tmp_path / "a.xml")
    assert boxes.tolist() == [[10, 20, 30, 60], [5, 5, 9, 9]] and classes == ("premium", "undersize")
    (tmp_path / "b.xml").write_text("<annotation><object><name>single</name></object></annotation>")
    with pytest.raises(ValueError, match="without a bndbox"):
        read_voc(tmp_path / "b.xml")


def test_split_is_by_subject_stable_and_disjoint(tmp_path: Path) -> None:
    assert subject_of("220105_A095_2") == "220105_A095" and subject_of("plain") == "plain"
    items = load_labelled([write_set(tmp_path / "s", subjects=12, sites=3)])
    train, val = subject_split(items, 30)
    assert {f.subject for f in train}.isdisjoint({f.subject for f in val})
    assert len(train) + len(val) == len(items) and val and train
    assert all(len([f for f in val if f.subject == s]) == 3 for s in {f.subject for f in val})  # whole subjects
    again_train, again_val = subject_split(items[::-1], 30)
    assert sorted(f.stem for f in again_val) == sorted(f.stem for f in val)  # order does not matter
    assert subject_split(items, 0)[1] == [] and subject_split(items, 100)[0] == []
    with pytest.raises(ValueError, match="two roots"):
        load_labelled([tmp_path / "s", tmp_path / "s"])


def test_frames_are_cut_cropped_to_4_3_and_points_follow(tmp_path: Path) -> None:
    root = write_set(tmp_path / "s", subjects=1, sites=1)
    item = load_labelled([root])[0]
    frame, points, thin = frame_and_points(item)
    assert frame.shape == (480, 640, 3) and len(points) == len(item.boxes) == len(thin)
    # 1280 x 984 after the text bar -> centre 1280 x 960 -> 640 x 480: half the pixels, 12 rows cut.
    centre = (item.boxes[0, :2] + item.boxes[0, 2:]) / 2
    assert points[0] == pytest.approx([centre[0] / 2, (centre[1] - 40 - 12) / 2], abs=1e-3)
    assert thin.tolist() == [c == "undersize" for c in item.classes]
    # the frame shows the stub at the point: dark there
    x, y = points[0].round().astype(int)
    assert frame[y, x].mean() < 100


def test_crop_keeps_the_aspect_ratio_and_the_pixel_scale() -> None:
    assert crop_box(960, 1280) == (0, 0, 1280, 960)
    assert crop_box(984, 1280) == (0, 12, 1280, 960)
    assert crop_box(480, 800) == (80, 0, 640, 480)
    assert source_px_per_frame_px((984, 1280, 3)) == pytest.approx(2.0)
    wide = np.zeros((480, 800, 3), np.uint8)
    wide[:, 80:720] = 200  # the kept centre
    assert prepare_frame(wide).min() == 200  # cropped, not squeezed
    with pytest.raises(ValueError, match="empty"):
        crop_box(0, 10)


def test_density_target_puts_one_hair_of_mass_at_each_point() -> None:
    d = density_target(np.array([[50.2, 40.7], [10.0, 60.0]]), 100, 120)
    assert d.sum() == pytest.approx(2 * DENSITY_SCALE, rel=1e-3)
    assert np.unravel_index(d.argmax(), d.shape) in {(40, 50), (60, 10)}
    edge = density_target(np.array([[0.0, 50.0]]), 100, 120)
    assert 0.4 * DENSITY_SCALE < edge.sum() < 0.6 * DENSITY_SCALE  # half of it leaves the frame


def test_training_crops_leave_inner_crop_sides_out_of_the_loss(tmp_path: Path) -> None:
    frames = CountFrames(load_labelled([write_set(tmp_path / "s", subjects=2, sites=1)]))
    rng = np.random.default_rng(3)
    kept_sides = cut_sides = 0
    for _ in range(30):
        x, y = frames.sample(rng, 0, (240, 320), zoom=0.0, band=24)
        assert x.shape == (3, 240, 320) and y.shape == (4, 240, 320)
        weight = y[3]
        # the middle of each side: 1 where the crop's side is the frame's edge, 0 inside the frame
        for side in (weight[60:180, :24], weight[60:180, -24:], weight[:24, 80:240], weight[-24:, 80:240]):
            assert side.min() == side.max()
            kept_sides += int(side.max() == 1.0)
            cut_sides += int(side.max() == 0.0)
        assert weight[100:140, 100:220].min() == 1.0
        assert np.all(y[2] <= y[1] + 1e-6)  # thin hairs are hairs
    assert kept_sides > 10 and cut_sides > 10
    _, whole = frames.sample(rng, 0, (480, 640), zoom=0.0)
    assert whole[3].min() == 1.0  # the whole frame: every side is the frame's edge
    assert whole[1].sum() == pytest.approx(len(frames.points[0]) * DENSITY_SCALE, rel=0.05)


# --------------------------------------------------------------------------- a tiny run end to end


def _tiny_ends_model(tmp_path: Path) -> tuple[Path, dict]:
    torch.manual_seed(0)
    model = StudentNet((4, 8, 8, 16, 16), 4, 2).eval()
    for m in model.modules():  # BatchNorms with statistics, so the folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    path = export_segmenter(model, tmp_path / "ends.onnx", check=False, instance_head="ends")
    return path, model.config


def test_a_student_is_rebuilt_from_its_onnx_graph(tmp_path: Path) -> None:
    path, config = _tiny_ends_model(tmp_path)
    rebuilt = student_from_onnx(path, config)
    x = np.random.default_rng(0).standard_normal((1, 3, 480, 640)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    with torch.no_grad():
        mine = rebuilt(torch.from_numpy(x))[0].numpy()
    assert np.abs(mine[:, 0:1] - got[0]).max() < 1e-4 and np.abs(mine[:, 1:2] - got[1]).max() < 1e-4
    with pytest.raises(ValueError, match="Conv"):
        student_from_onnx(path, {**config, "widths": [4, 8, 8, 16, 32]})


def test_a_counting_run_trains_exports_and_counts_on_the_device(tmp_path: Path) -> None:
    data = write_set(tmp_path / "s", subjects=5, sites=2)
    init, config = _tiny_ends_model(tmp_path)
    cfg = CountTrainConfig(
        data=str(data),
        out=str(tmp_path / "run"),
        init_onnx=str(init),
        init_config=json.dumps({**config, "out_ch": 2}),
        val_percent=20,
        steps=4,
        batch=2,
        crop_height=96,
        crop_width=128,
        warmup=1,
        ckpt_every=2,
        threads=1,
    )
    paused = train_counts(cfg, progress=False, stop_after=2)
    assert paused.name == "last.pt"
    final = train_counts(cfg, progress=False)  # resumes at step 2
    model, ckpt = load_checkpoint(final)
    assert ckpt["step"] == 4 and ckpt["model_config"]["out_ch"] == 3
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"hair", "thin", "mask"} <= set(log[-1])
    onnx_path = export_segmenter(model, tmp_path / "counts.onnx", instance_head="density")
    seg = ModelSegmenter.from_onnx(onnx_path, threads=1)
    assert seg.count_strategy is CountStrategy.DENSITY
    frame = prepare_frame(cv2.imread(str(sorted((data / "images").glob("*.jpg"))[0])))
    out = seg.segment(frame)
    raw = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        [SEG_OUT_DENSITY, SEG_OUT_THIN], {"image": np.zeros((1, 3, 480, 640), np.float32) + 0.0}
    )
    assert raw[0].shape == (1, 1, 480, 640)
    assert out.hairs == pytest.approx(max(0.0, float(np.asarray(out.density).sum())), rel=1e-3, abs=1e-3)
    assert out.thin_hairs is None or 0.0 <= out.thin_hairs <= out.hairs
    result = analyse_frame(seg, frame, um_per_px=MODEL_UM_PER_PX)
    assert result.metrics.count_source == "density" and result.metrics.count == int(round(out.hairs))


def test_the_baseline_trains_from_scratch(tmp_path: Path) -> None:
    cfg = CountTrainConfig(
        data=str(write_set(tmp_path / "s", subjects=3, sites=1)),
        out=str(tmp_path / "run"),
        model="student_tiny",
        val_percent=0,
        steps=2,
        batch=2,
        crop_height=96,
        crop_width=128,
        warmup=1,
        threads=1,
    )
    _, ckpt = load_checkpoint(train_counts(cfg, progress=False))
    log = (tmp_path / "run" / "log.jsonl").read_text()
    assert ckpt["model_config"]["out_ch"] == 3 and '"mask"' not in log  # no mask to hold
    with pytest.raises(ValueError, match="density"):
        train_counts(CountTrainConfig(**{**cfg.__dict__, "instance_target": "ends"}), progress=False)


# --------------------------------------------------------------------------- device measuring


class StubDensitySegmenter:
    """A stand-in for a counting model with a fixed working scale: dark components whose area
    (px at 640x480) lies in what a hair of the model's scale covers are hairs; each becomes a
    Gaussian of mass 1 in the density, thin ones (area below ``thin_area``) also in the thin
    count. Off its scale it misses hairs, as a model does."""

    name = "stub-density"
    count_strategy = CountStrategy.DENSITY

    def __init__(self, area: tuple[int, int] = (60, 700), thin_area: int = 220) -> None:
        self.area, self.thin_area = area, thin_area

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        dark = (frame_bgr.mean(axis=2) < 100).astype(np.uint8)
        dark[:20] = 0
        n, _, stats, cent = cv2.connectedComponentsWithStats(dark, connectivity=8)
        keep = [i for i in range(1, n) if self.area[0] <= stats[i, cv2.CC_STAT_AREA] <= self.area[1]]
        h, w = dark.shape
        density = density_target(cent[keep], h, w, DENSITY_SIGMA_PX) / DENSITY_SCALE
        thin = sum(stats[i, cv2.CC_STAT_AREA] < self.thin_area for i in keep)
        return SegOutput(
            prob=dark.astype(np.float32),
            density=density,
            hairs=float(len(keep)),
            thin_hairs=float(thin),
            count_strategy=CountStrategy.DENSITY,
        )


def test_thickness_is_measured_once_per_hair_not_per_skeleton_branch() -> None:
    mask = np.zeros((120, 200), bool)
    mask[50:62, 20:180] = True  # one shaft 12 px thick
    mask[40:50, 98:101] = True  # a frayed bit that splits the skeleton into branches
    points = np.array([[100.0, 56.0], [30.0, 56.0], [100.0, 10.0]])
    d = hair_diameters(mask, points)
    assert d[0] == pytest.approx(12, abs=1.5) and d[1] == pytest.approx(12, abs=1.5) and np.isnan(d[2])
    m = measure(mask, um_per_px=5.0, count=HeadCount(2, "density", None, 0.25), hair_points=points[:2])
    assert m.thickness_source == "hairs" and len(m.thickness_um) == 2
    assert m.median_thickness_um == pytest.approx(60, abs=8) and m.thin_ratio == 0.25
    assert all(k == "terminal" for _, _, k in m.hairs) and m.class_counts()["terminal"] == 2
    assert [hair_class(x) for x in (20, 35, 50)] == ["vellus-like", "intermediate", "terminal"]
    assert np.isnan(hair_diameters(np.ones((60, 80), bool), np.array([[40.0, 30.0]]))).all()  # no background
    assert m.to_dict()["hairs"][0]["class"] == "terminal"


def _grid_frame(width: int, height: int, spacing: float, stub: float, thick: int) -> np.ndarray:
    frame = np.full((height, width, 3), (150, 170, 200), np.uint8)
    for y in np.arange(spacing / 2, height, spacing):
        for x in np.arange(spacing / 2, width, spacing):
            cv2.line(frame, (int(x - stub), int(y - stub / 3)), (int(x + stub), int(y + stub / 3)), (40, 35, 30), thick)
    return frame


def test_hairs_per_cm2_hold_at_another_magnification() -> None:
    seg = StubDensitySegmenter(area=(100, 500))
    base = analyse_frame(seg, _grid_frame(640, 480, 80, 18, 8), um_per_px=MODEL_UM_PER_PX)
    assert base.metrics.count == 48
    for s in (0.75, 1.25, 1.5):
        # the same scalp at s x the magnification: every length is s x as many pixels of the frame
        frame = _grid_frame(640, 480, 80 * s, 18 * s, int(round(8 * s)))
        scaled = analyse_frame(seg, frame, um_per_px=MODEL_UM_PER_PX / s)
        ratio = scaled.metrics.density_per_cm2 / base.metrics.density_per_cm2
        assert ratio == pytest.approx(1.0, abs=0.1), (s, ratio)
        if s == 1.5:  # measured at its own pixels, the hairs are too large for the model
            assert seg.segment(frame).hairs < 0.5 * scaled.metrics.count
    assert model_pixel_scale(MODEL_UM_PER_PX * 1.02) == 1.0
    assert model_pixel_scale(MODEL_UM_PER_PX * 1.5) == pytest.approx(1.5)


def test_a_frame_far_off_the_models_scale_gets_a_quality_reason() -> None:
    frame = _grid_frame(640, 480, 80, 18, 8)
    result = analyse_frame(StubDensitySegmenter(), frame, um_per_px=MODEL_UM_PER_PX * 3)
    assert result.seg is None and result.metrics.count == 0
    assert "pixel scale" in result.problem and "calibrate optics" in result.problem
    assert scale_problem(MODEL_UM_PER_PX / 2.5) is not None and scale_problem(MODEL_UM_PER_PX) is None


def test_segmenting_at_scale_keeps_the_maps_on_the_frames_pixels() -> None:
    frame = _grid_frame(640, 480, 80, 18, 8)
    for f in (0.7, 1.4):
        out = segment_at_scale(StubDensitySegmenter(area=(10, 5000)), frame, MODEL_UM_PER_PX * f)
        assert out.prob.shape == (480, 640) and out.density is not None and out.density.shape == (480, 640)
    zoomed_out = segment_at_scale(StubDensitySegmenter(area=(10, 5000)), frame, MODEL_UM_PER_PX * 1.4)
    assert zoomed_out.prob[:, :40].max() == 0  # outside the segmented centre
    assert zoomed_out.hairs == pytest.approx(48, rel=0.15)  # the centre's count, scaled to the field


# --------------------------------------------------------------------------- evaluation


def test_count_scores_and_hair_matching() -> None:
    s = count_scores([10, 12, 9], [10, 10, 10])
    assert s["mae"] == pytest.approx(1.0) and s["bias"] == pytest.approx(1 / 3)
    low, high = s["limits_of_agreement"]
    assert low < s["bias"] < high
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    assert sorted(match_hairs(np.array([[6.0, 6.0], [15.0, 15.0], [50.0, 50.0]]), boxes)) == [(0, 0), (1, 1)]
    assert match_hairs(np.array([[6.0, 6.0], [7.0, 7.0]]), boxes[:1]) == [(0, 0)]  # one box, one hair


def test_eval_counts_scores_a_model_against_the_boxes(tmp_path: Path) -> None:
    data = write_set(tmp_path / "s", subjects=6, sites=2)
    report = evaluate_counts(StubDensitySegmenter(), [data], progress=False, split="all")
    assert report["frames"] == 12 and report["count_source"] == "density"
    assert report["count_mae"] <= 0.5 and report["pearson_r"] > 0.9
    assert report["thin_ratio_mae"] < 0.05 and report["thin_ratio_r"] > 0.5
    assert report["hairs"]["precision"] > 0.9 and report["hairs"]["recall"] > 0.9
    assert report["mean_predictor"]["count_mae"] > report["count_mae"]
    val = evaluate_counts(StubDensitySegmenter(), [data], progress=False, split="val", val_percent=50)
    assert 0 < val["frames"] < 12
    cut = thin_cut(report)  # thin stubs are 3 px (17 um) wide, the others 8 px (45 um)
    assert 17 < cut["cut_um"] <= 45 and cut["balanced_accuracy"] > 0.9
    assert cut["median_um"]["undersize"] < cut["median_um"]["other"]
    png = plot_counts(report, tmp_path / "plot.png")
    assert cv2.imread(str(png)).shape[1] > 800
    with pytest.raises(ValueError, match="split"):
        evaluate_counts(StubDensitySegmenter(), [data], split="test")


def test_segmentation_outputs_name_the_graph(tmp_path: Path) -> None:
    model = StudentNet((4, 8, 8, 16, 16), 4, 3).eval()
    path = export_segmenter(model, tmp_path / "d.onnx", check=False, instance_head="density")
    names = [o.name for o in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()]
    assert names == [SEG_OUT_MASK, SEG_OUT_DENSITY, SEG_OUT_THIN]


def test_the_counting_loss_prefers_hairs_a_little_off_to_no_hairs() -> None:
    """Box centres are a labeller's guess of mid-shaft: peaks up to 8 px off, or a blurred
    density, must cost clearly less than predicting nothing. (With the pixel-exact strand-end
    loss, peaks 8-12 px off cost about as much as nothing: trained on real boxes with it, the
    network learnt to count next to zero.)"""
    from server_train.training.losses import count_density_loss

    rng = np.random.default_rng(0)
    points = rng.uniform(20, 220, (12, 2))
    target = torch.from_numpy(density_target(points, 240, 240))[None, None]
    off = torch.from_numpy(density_target(points + rng.uniform(-8, 8, points.shape), 240, 240))[None, None]
    blurred = torch.from_numpy(density_target(points, 240, 240, sigma=8))[None, None]
    zero = torch.zeros_like(target)

    def loss(pred: torch.Tensor) -> float:
        return float(count_density_loss(pred, target, DENSITY_SCALE))

    assert loss(target) < 1e-6
    assert loss(off) < 0.6 * loss(zero) and loss(blurred) < 0.5 * loss(zero)
    assert loss(off) < loss(target * 0.5) < loss(zero)  # half the mass is half wrong


def test_a_counting_graph_restarts_with_its_own_heads(tmp_path: Path) -> None:
    """A graph that already has density heads (a second fine-tuning stage) keeps all three
    output channels; only a two-output graph gets its thin head seeded from the instance head."""
    from server_train.training.count_train import _init_model

    torch.manual_seed(1)
    model = StudentNet((4, 8, 8, 16, 16), 4, 3).eval()
    path = export_segmenter(model, tmp_path / "d.onnx", check=False, instance_head="density")
    config = {**model.config}
    cfg = CountTrainConfig(data="", out=str(tmp_path / "r"), init_onnx=str(path), init_config=json.dumps(config))
    rebuilt, frozen = _init_model(cfg)
    assert frozen is not None
    assert torch.allclose(rebuilt.out.weight, model.out.weight, atol=1e-6)
    two, _ = _init_model(
        CountTrainConfig(
            data="",
            out="",
            init_onnx=str(_tiny_ends_model(tmp_path)[0]),
            init_config=json.dumps({**config, "out_ch": 2}),
        )
    )
    assert torch.allclose(two.out.weight[2], two.out.weight[1] * 0.1)
