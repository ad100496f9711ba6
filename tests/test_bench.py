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
