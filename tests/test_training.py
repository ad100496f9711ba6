"""Training, resuming and distillation on a tiny synthetic data set with tiny models."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from server_train.synth import SynthConfig, write_dataset
from server_train.training.data import CropConfig, SegFolder, border_ends, centre_heatmap, end_density
from server_train.training.train import TrainConfig, load_checkpoint, train


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, n=6, seed=3, config=SynthConfig(mode="scalp"), progress=False)
    return out


def test_centre_heatmap_peaks_at_centres() -> None:
    heat = centre_heatmap(np.array([[10.4, 5.3], [29.6, 20.0], [-50.0, 3.0]]), 32, 48, sigma=2.0)
    assert heat.shape == (32, 48)
    # Sub-pixel centres still get exactly one pixel at 1.0 (the focal loss's positive).
    assert heat[5, 10] == 1.0 and heat[20, 30] == 1.0 and (heat == 1.0).sum() == 2
    assert heat[0, 0] < 1e-3 and heat.max() <= 1.0


def test_crops_keep_targets_aligned(tiny_data: Path) -> None:
    data = SegFolder(tiny_data, CropConfig(size=96), seed=1, epoch_size=4)
    x, y = data[0]
    assert x.shape == (3, 96, 96) and y.shape == (2, 96, 96)
    assert set(torch.unique(y[0]).tolist()) <= {0.0, 1.0}
    x2, y2 = data[0]
    assert torch.equal(x, x2) and torch.equal(y, y2)  # deterministic by (seed, index)
    full = SegFolder(tiny_data, CropConfig(size=0))
    _, y_full = full[0]
    # Every centre of the frame is a heatmap maximum at full size.
    assert float(y_full[1].max()) > 0.99 and y_full.shape[1:] == (480, 640)


def _cfg(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(
        data=str(data),
        out=str(out),
        model="student_tiny",
        steps=4,
        batch=2,
        crop=64,
        workers=0,
        threads=1,
        ckpt_every=2,
        warmup=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_checkpoint_and_resume(tiny_data: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_data, tmp_path / "run")
    final = train(cfg, progress=False)
    model, ckpt = load_checkpoint(final)
    assert ckpt["step"] == 4 and ckpt["train_config"] == dataclasses.asdict(cfg)
    assert ckpt["model_config"]["family"] == "student"
    # Resuming a finished run trains nothing more: weights are unchanged.
    again, ckpt2 = load_checkpoint(train(cfg, progress=False))
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="different config"):
        train(dataclasses.replace(cfg, lr=0.1), progress=False)


def test_distil_student_from_teacher(tiny_data: Path, tmp_path: Path) -> None:
    teacher = train(_cfg(tiny_data, tmp_path / "teacher", model="teacher_tiny", steps=2), progress=False)
    student = train(_cfg(tiny_data, tmp_path / "student", teacher_checkpoint=str(teacher), steps=3), progress=False)
    _, ckpt = load_checkpoint(student)
    assert ckpt["train_config"]["teacher_checkpoint"] == str(teacher)
    assert ckpt["history"] and all(np.isfinite(h["loss"]) for h in ckpt["history"])


def test_focal_centre_loss_prefers_sharp_peaks() -> None:
    from server_train.training.losses import seg_loss

    target = torch.zeros(1, 2, 32, 32)
    target[0, 1] = torch.from_numpy(centre_heatmap(np.array([[16.0, 16.0]]), 32, 32, sigma=2.0))
    peak_logits = torch.full((1, 2, 32, 32), -6.0)
    peak_logits[0, 1, 16, 16] = 6.0
    flat_logits = torch.full((1, 2, 32, 32), -6.0)
    flat_logits[0, 1] = -1.0  # a plateau of p ~ 0.27 everywhere
    # The focal loss rewards one sharp peak over a plateau; weighted BCE on soft targets does
    # not (its optimum spreads mass around), which is why the centre head uses focal.
    assert seg_loss(peak_logits, target, centre_loss="focal") < seg_loss(flat_logits, target, centre_loss="focal")


def test_stop_after_pauses_a_run_that_resumes_identically(tiny_data: Path, tmp_path: Path) -> None:
    straight = train(_cfg(tiny_data, tmp_path / "a"), progress=False)
    paused = train(_cfg(tiny_data, tmp_path / "b"), progress=False, stop_after=2)
    assert paused.name == "last.pt" and load_checkpoint(paused)[1]["step"] == 2
    resumed = train(_cfg(tiny_data, tmp_path / "b"), progress=False)
    a, _ = load_checkpoint(straight)
    b, _ = load_checkpoint(resumed)
    for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.allclose(x, y, atol=1e-5)


def test_line_target_trains_and_exports_a_centreline_head(tiny_data: Path, tmp_path: Path) -> None:
    from device.contracts.constants import SEG_OUT_LINES
    from server_train.evaluation.loading import load_segmenter

    data = SegFolder(tiny_data, CropConfig(size=64), seed=0, epoch_size=2, target="lines")
    _, y = data[0]
    assert set(torch.unique(y[1]).tolist()) <= {0.0, 1.0}
    assert float((y[1] * (1 - y[0])).sum()) == 0.0  # centre lines lie inside the hair mask
    cfg = _cfg(tiny_data, tmp_path / "lines", instance_target="lines", centre_loss="lines", steps=2)
    seg = load_segmenter(str(train(cfg, progress=False)))
    assert seg.extra == [SEG_OUT_LINES]  # the lines head only: no centre or end output
    out = seg.segment(np.zeros((480, 640, 3), np.uint8) + 128)
    assert out.lines is not None and out.centre is None
    with pytest.raises(ValueError, match="goes with"):
        train(_cfg(tiny_data, tmp_path / "bad", instance_target="lines"), progress=False)


def test_end_density_keeps_every_end_whole_even_on_the_border() -> None:
    from device.contracts.constants import END_DENSITY_SCALE

    ends = np.array([[20.3, 10.7], [0.0, 15.0], [47.0, 31.0], [20.3, 10.7]], np.float32)
    dens = end_density(ends, 32, 48)
    assert dens.shape == (32, 48)
    assert dens.sum() / END_DENSITY_SCALE == pytest.approx(4.0, rel=1e-5)  # corner and edge ends count 1 each
    single = end_density(ends[:1], 32, 48)
    assert np.unravel_index(single.argmax(), single.shape) == (11, 20)
    np.testing.assert_allclose(dens[5:17, 14:26], 2 * single[5:17, 14:26], rtol=1e-5)  # two ends stacked there
    assert end_density(np.zeros((0, 2)), 8, 8).sum() == 0.0


def test_border_ends_one_per_line_crossing_the_edge() -> None:
    lines = np.zeros((40, 60), np.uint8)
    lines[10:13, :20] = 1  # leaves through the left edge
    lines[:, 30:33] = 1  # crosses the frame top to bottom: two cuts
    lines[0:3, 57:60] = 1  # through the top-right corner: one run around the corner
    ends = border_ends(lines)
    assert len(ends) == 4
    assert any((e == [0, 11]).all() for e in ends)
    assert len(border_ends(np.zeros((40, 60), np.uint8))) == 0


def test_end_target_counts_the_hairs_of_a_frame(tiny_data: Path) -> None:
    from device.contracts.constants import END_DENSITY_SCALE

    full = SegFolder(tiny_data, CropConfig(size=0), target="ends")
    for i in range(3):
        _, y = full[i]
        count = full.items[full._order(0)[i]][1]["count"]
        # Both ends of every strand; ends that merge on the frame's edge may lose a few.
        assert float(y[1].sum()) / END_DENSITY_SCALE / 2 == pytest.approx(count, rel=0.1, abs=1.0)
    crop = SegFolder(tiny_data, CropConfig(size=96), seed=2, epoch_size=3, target="ends")
    for i in range(3):
        _, yc = crop[i]
        # Every end in a crop weighs one: the truth's ends inside it and those where it cuts a strand.
        ends = float(yc[1].sum()) / END_DENSITY_SCALE
        assert yc.shape == (2, 96, 96) and ends >= 1 and ends == pytest.approx(round(ends), abs=1e-3)


def test_end_density_loss_is_zero_only_for_the_target() -> None:
    from server_train.training.losses import seg_loss

    target = torch.zeros(2, 2, 32, 32)
    target[:, 1] = torch.from_numpy(end_density(np.array([[10.0, 10.0], [20.0, 5.0]]), 32, 32))
    perfect = target.clone()
    perfect[:, 0] = 20.0 * (2 * target[:, 0] - 1)  # confident mask logits, all background
    base = float(seg_loss(perfect, target, centre_loss="ends"))
    wrong = perfect.clone()
    wrong[:, 1] *= 0.5  # half the density: half the count
    assert float(seg_loss(wrong, target, centre_loss="ends")) > base + 0.2
    assert base < 1e-3


def test_end_target_trains_and_exports_a_counting_head(tiny_data: Path, tmp_path: Path) -> None:
    from device.app.analysis import analyse_frame
    from device.contracts.constants import SEG_INPUT, SEG_OUT_ENDS
    from device.contracts.preprocess import to_network_input
    from device.models.onnx_segmenter import hairs_from_ends
    from server_train.evaluation.loading import load_segmenter

    cfg = _cfg(tiny_data, tmp_path / "ends", instance_target="ends", centre_loss="ends", steps=2)
    seg = load_segmenter(str(train(cfg, progress=False)))
    assert seg.extra == [SEG_OUT_ENDS]  # the end-density head only
    frame = np.zeros((300, 400, 3), np.uint8) + 128
    out = seg.segment(frame)
    assert out.lines is None and out.prob.shape == (300, 400)
    # The counts are the counting frame (and the whole-frame sum) of the graph's own end density.
    x = to_network_input(frame, seg.height, seg.width)
    density = seg.backend.run({SEG_INPUT: x}, [SEG_OUT_ENDS])[SEG_OUT_ENDS][0, 0]
    assert out.hairs == pytest.approx(hairs_from_ends(density), rel=1e-6, abs=1e-9)
    assert out.hairs_visible == pytest.approx(hairs_from_ends(density, edge_px=0), rel=1e-6, abs=1e-9)
    result = analyse_frame(seg, np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    assert result.metrics.count_source == "ends" or result.metrics.hair_fraction == 0
    with pytest.raises(ValueError, match="goes with"):
        train(_cfg(tiny_data, tmp_path / "bad", instance_target="ends", centre_loss="lines"), progress=False)


def test_hairs_from_ends_is_a_counting_frame() -> None:
    from device.models.onnx_segmenter import hairs_from_ends

    h, w = 120, 160
    area = (h * w) / ((h - 12) * (w - 12))  # the inner ends stand for the whole frame
    inside = end_density(np.array([[40.0, 30.0], [90.0, 60.0]]), h, w)  # one stub, both ends inside
    assert hairs_from_ends(inside) == pytest.approx(1.0 * area, rel=1e-3)
    cut = end_density(np.array([[40.0, 30.0], [0.0, 50.0]]), h, w)  # a strand the left edge cuts
    assert hairs_from_ends(cut) == pytest.approx(0.5 * area, rel=0.01)
    assert hairs_from_ends(end_density(np.array([[0.0, 10.0], [159.0, 100.0]]), h, w)) < 0.01  # crosses the frame
    assert hairs_from_ends(cut, edge_px=0) == pytest.approx(1.0, rel=1e-5)  # every visible strand
    assert hairs_from_ends(-inside) == 0.0
    with pytest.raises(ValueError, match="leaves nothing"):
        hairs_from_ends(inside, edge_px=60)
