"""``scalpedge bench diagnosis``: per-stage cost of one diagnosis on the shipped bundle (real ONNX
Runtime sessions, the shipped sample frames); the reference pipelines are left out here (their
graphs take minutes to export: ``benchmarks/`` runs them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from device.assets import sample_frames  # noqa: E402
from device.cli import main  # noqa: E402
from server_train.evaluation.diagnosis_speed import BESIDE_STAGES, STAGES, bench_diagnosis  # noqa: E402

BASE = ["bench", "diagnosis", "--n-frames", "2", "--runs", "1", "--threads", "1", "--no-paper", "--no-naive"]


def test_the_fused_diagnosis_is_timed_stage_by_stage_within_its_total(tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.json"
    assert main([*BASE, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["fused"] is True and report["threads"] == 1 and report["runs"] == 1
    assert report["frames"] == [str(p) for p in sample_frames()[:2]] and report["accepted_share"] == 1.0
    stages = report["stages_ms"]
    assert list(stages) == [s for s in STAGES if s in stages]  # in the order they run
    want = {"quality", "segment", "count", "prompts", "refiner_encoder", "refiner_decoder", "pixel_refiner", "metrics"}
    assert want | {"hairs", "classify", "alopecia", "record"} <= set(stages)
    assert all(v >= 0 for v in stages.values())
    # as the device runs it: the encoder, the located hairs and the classifier beside the rest,
    # which run one after another within the total (with the glue between them)
    assert report["parallel"] is True and report["stages_overlap"] is True
    assert sum(v for k, v in stages.items() if k not in BESIDE_STAGES) <= report["total_ms"]
    assert all(stages[k] <= report["total_ms"] for k in BESIDE_STAGES)
    assert report["mask_stage"] == ["fused"]  # every timed record says the fused mask measured it
    assert report["precision"] == "fastest" and report["variants"]["segmenter"].endswith("fastest here)")
    assert 0 < report["live_ms"] and report["live_fps"] == pytest.approx(1000 / report["live_ms"], rel=0.01)
    assert "paper_style_ms" not in report and "naive_edge_ms" not in report
    assert "diagnosis " in capsys.readouterr().out


def test_without_the_refiner_the_diagnosis_has_no_fused_stages_and_serial_stages_add_up(tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    assert main([*BASE, "--no-fused", "--serial", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["fused"] is False and report["mask_stage"] == ["coarse"] and report["parallel"] is False
    assert not {"prompts", "refiner_encoder", "refiner_decoder", "fusion", "pixel_refiner"} & set(report["stages_ms"])
    assert {"segment", "hairs", "metrics", "classify", "record"} <= set(report["stages_ms"])
    # in one thread every stage is part of the total
    assert report["stages_overlap"] is False and sum(report["stages_ms"].values()) <= report["total_ms"]


def test_a_bundle_without_the_refiner_is_refused_for_the_fused_diagnosis(tmp_path: Path, capsys) -> None:
    from tests.release_support import make_keys, slim_release

    private, trusted = make_keys(tmp_path)
    slim = slim_release(tmp_path, private)  # the shipped segmenter alone
    args = [*BASE, "--bundle", str(slim), "--trust", str(trusted), "--out", str(tmp_path / "d.json")]
    assert main(args) == 2
    assert "has no refiner (use --no-fused)" in capsys.readouterr().err
    assert not (tmp_path / "d.json").exists()
    assert main([*args[:-2], "--no-fused", "--out", str(tmp_path / "d.json")]) == 0


def test_nothing_to_time_is_an_error() -> None:
    with pytest.raises(ValueError, match="no frames"):
        bench_diagnosis("unused", [], runs=1)
    with pytest.raises(ValueError, match="at least 1"):
        bench_diagnosis("unused", [Path("f.png")], runs=0)
