"""Benchmark reports keep the documented JSON shape (timings themselves live in reports)."""

from server_train.evaluation.speed import bench_speed
from server_train.evaluation.synth_speed import bench_synth


def test_speed_report_shape() -> None:
    report = bench_speed(models=("student_tiny", "teacher_tiny"), threads=(1,), runs=2, progress=False)
    assert set(report) >= {"cpu", "results", "ratios"}
    names = [r["name"] for r in report["results"]]
    assert names == ["student_tiny", "teacher_tiny"]
    for row in report["results"]:
        assert set(row) == {"name", "input", "precision", "threads", "gflop", "median_ms", "runs"}
        assert row["input"] == "1x3x480x640" and row["runs"] == 2 and row["median_ms"] > 0
    assert report["results"][1]["gflop"] > report["results"][0]["gflop"]


def test_synth_speed_report_shape() -> None:
    report = bench_synth(n=2, repeats=1, modes=("trimmed",))
    assert [(r["mode"], r["hard"]) for r in report["results"]] == [("trimmed", False), ("trimmed", True)]
    assert all(r["median_fps"] > 0 for r in report["results"])


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
