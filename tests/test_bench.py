"""Benchmark reports keep the documented JSON shape and derive their figures from their rows
(timings themselves live in reports)."""

import torch

from server_train.evaluation.speed import bench_speed
from server_train.evaluation.synth_speed import bench_synth
from server_train.models import count_gflop, create


def test_speed_report_rows_and_ratios() -> None:
    report = bench_speed(models=("student", "student_tiny"), threads=(1,), runs=2, progress=False)
    assert set(report) == {"cpu", "onnxruntime", "results", "ratios"}
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["student", "student_tiny"]
    for name, row in rows.items():
        assert set(row) == {"name", "input", "precision", "threads", "gflop", "median_ms", "runs"}
        assert (row["input"], row["precision"], row["threads"], row["runs"]) == ("1x3x480x640", "fp32", 1, 2)
        with torch.device("meta"):  # the count at the device frame size, from shapes alone
            assert row["gflop"] == round(count_gflop(create(name)), 3)
    # Every other model's median over the student's, per thread count.
    ratio = rows["student_tiny"]["median_ms"] / rows["student"]["median_ms"]
    assert report["ratios"] == {"threads1": {"student_tiny_over_student": round(ratio, 2)}}


def test_synth_speed_report_shape() -> None:
    report = bench_synth(n=2, repeats=1, modes=("trimmed",))
    assert report["size"] == "640x480"
    rows = report["results"]
    assert [(r["mode"], r["hard"], r["frames"], r["repeats"]) for r in rows] == [
        ("trimmed", False, 2, 1),
        ("trimmed", True, 2, 1),
    ]
    assert all(set(r) == {"mode", "hard", "frames", "repeats", "median_fps", "min_fps"} for r in rows)


def test_geometry_of_drawn_strands() -> None:
    import numpy as np

    from server_train.evaluation.geometry import mask_geometry

    mask = np.zeros((480, 640), bool)
    mask[98:103, 100:500] = True  # two 5 px wide bars, 400 px long
    mask[298:303, 100:500] = True
    geo = mask_geometry(mask)
    assert geo["endpoints"] == 4
    assert 780 <= geo["skeleton_length_px"] <= 800
    # 2 x distance transform reads width + 1 (distance to the nearest background pixel centre),
    # the convention of the ScalpVision mask statistics we compare with.
    assert float(np.median(geo["widths"])) == 6.0
