"""The ``scalpedge`` command line end to end, with real files and a real exported model."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from device.app.analysis import analyse_frame
from device.capture.imageio import read_frame
from device.cli import main
from device.models.onnx_segmenter import ModelSegmenter
from export.onnx_export import export_segmenter
from server_train.models import create
from server_train.synth import SynthConfig, render, write_dataset


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export_segmenter(create("student_tiny").eval(), tmp_path_factory.mktemp("m") / "tiny.onnx", check=False)


def test_help_lists_device_and_server_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("segment", "synth", "train", "eval", "bench", "export"):
        assert command in out


def test_segment_reports_good_bad_and_dark_frames(tmp_path: Path, tiny_model: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "a_synthetic.png"), render(5).image)
    (frames / "b_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    cv2.imwrite(str(frames / "c_black.png"), np.zeros((480, 640, 3), np.uint8))
    cv2.imwrite(str(frames / "d_grey_small.png"), cv2.cvtColor(render(6).image, cv2.COLOR_BGR2GRAY)[:240, :320])
    out = tmp_path / "out"
    code = main(["segment", str(frames), "--out", str(out), "--model", str(tiny_model), "--um-per-px", "8"])
    assert code == 1  # one unreadable frame
    report = json.loads((out / "metrics.json").read_text())
    by_name = {Path(f["file"]).name: f for f in report["frames"]}
    assert "not a readable image" in by_name["b_broken.jpg"]["error"]
    dark = by_name["c_black.png"]
    assert dark["count"] == 0 and "underexposed" in dark["reason"]
    # Each frame's entry is the measurement of that frame, counted by the model's strategy.
    seg = ModelSegmenter.from_onnx(tiny_model, threads=1)
    for name in ("a_synthetic.png", "d_grey_small.png"):
        want = analyse_frame(seg, read_frame(frames / name), um_per_px=8.0).metrics
        got = by_name[name]
        assert (got["count"], got["count_source"]) == (want.count, seg.count_strategy.value)
        assert got["median_thickness_um"] == want.to_dict()["median_thickness_um"]
        assert (out / got["overlay"]).exists()
    assert report["um_per_px_source"] == "--um-per-px"
    # Metrics are taken at 640x480: 8 um per input pixel is 4 um per pixel of the upscaled 320-wide frame.
    assert by_name["a_synthetic.png"]["um_per_px"] == 8.0 and by_name["d_grey_small.png"]["um_per_px"] == 4.0


def test_segment_rejects_missing_paths_and_bad_options(tmp_path: Path, tiny_model: Path) -> None:
    assert main(["segment", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == 2
    assert main(["segment", "--out", str(tmp_path / "o"), "--um-per-px", "0", "--model", str(tiny_model)]) == 2
    assert main(["segment", "--out", str(tmp_path / "o"), "--model", str(tmp_path / "missing.onnx")]) == 2


def test_eval_seg_writes_the_documented_keys(tmp_path: Path) -> None:
    data = tmp_path / "held_out"
    write_dataset(data, n=3, seed=11, config=SynthConfig(), progress=False)
    out = tmp_path / "seg.json"
    assert main(["eval", "seg", "--data", str(data), "--out", str(out), "--model", "blackhat_otsu"]) == 0
    report = json.loads(out.read_text())
    for key in ("frames", "dice", "jaccard", "pixel_f1", "miou", "accuracy", "precision", "f1", "count_mae"):
        assert key in report
    assert report["frames"] == 3 and 0.0 <= report["dice"] <= 1.0
    # The set has strand ends, so counting-frame truth too. Both errors are of the same counts,
    # so their biases differ by the mean gap between the two truths, whatever was counted.
    from server_train.evaluation.seg_eval import counting_frame_truth

    truth = [json.loads(line) for line in (data / "truth.jsonl").read_text().splitlines() if line.strip()]
    gap = np.mean([row["count"] - counting_frame_truth(row["ends"], 480, 640) for row in truth])
    assert report["frame_count_bias"] - report["count_bias"] == pytest.approx(gap)
    assert report["count_mae"] == report["skeleton_count_mae"]  # no instance output: skeleton strands count


def test_counting_frame_truth_halves_strands_cut_by_the_edge() -> None:
    from server_train.evaluation.seg_eval import counting_frame_truth

    area = 480 * 640 / (468 * 628)
    assert counting_frame_truth([[100, 100], [200, 150]], 480, 640) == pytest.approx(1.0 * area)
    assert counting_frame_truth([[100, 100], [0, 150]], 480, 640) == pytest.approx(0.5 * area)
    assert counting_frame_truth([[2, 100], [639, 150]], 480, 640) == 0.0


def _voc(path: Path, classes: list[str]) -> None:
    objects = "".join(
        f"<object><class>{c}</class><bndbox><xmin>600</xmin><ymin>500</ymin><xmax>640</xmax><ymax>540</ymax></bndbox></object>"
        for c in classes
    )
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{objects}</annotation>")


def test_eval_counts_on_a_voc_folder(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "counts"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(3):
        sample = render(i, SynthConfig(mode="trimmed"))
        big = cv2.resize(sample.image, (1280, 1024))
        cv2.imwrite(str(root / "images" / f"f{i}.jpg"), big)
        _voc(root / "annotations" / f"f{i}.xml", ["premium"] * sample.count + ["undersize"])
    out = tmp_path / "counts.json"
    plot = tmp_path / "counts.png"
    args = ["eval", "counts", "--data", str(root), "--out", str(out), "--model", str(tiny_model), "--plot", str(plot)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 3 and report["split"] == "all" and cv2.imread(str(plot)) is not None
    for key in ("count_mae", "count_bias", "pearson_r", "thin_ratio_mae", "thin_ratio_r", "limits_of_agreement"):
        assert key in report
    low, high = report["limits_of_agreement"]
    assert low <= report["count_bias"] <= high
    first = report["per_frame"][0]
    assert first["true_count"] == render(0, SynthConfig(mode="trimmed")).count + 1
