"""What an operator sees and every input handled, with real parts: the real ``scalpedge device run``
as a process on a folder of stills (it ends by itself), the shipped bundle on ONNX Runtime in the
frame loop, real V4L2 and serial opens of devices that are not there, the firmware monitor as a
process, and the preview's status bar drawn on a real frame."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_pipeline import counting_pipeline

from device.app.pipeline import ScanPipeline
from device.app.preview import live_view
from device.app.run_report import diagnosis_line, status_line
from device.app.runtime import UNCALIBRATED_STATUS, ResultRow, ScannerRuntime
from device.assets import ASSETS
from device.capture.source_uri import parse_uri
from device.capture.sources import FrameSource, open_source
from device.cli import main
from device.cli.run import _optics
from device.measure.optics import OpticsProfile, save_profile
from firmware_bridge.link import PortUnavailable, SerialLink

REPO = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ASSETS / "samples").glob("*.jpg"))  # three different stills of different scalps
_SCRIPT = Path(sys.executable).with_name("scalpedge")
SCALPEDGE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "device.cli"]


def _stills(tmp_path: Path) -> Path:
    folder = tmp_path / "stills"
    folder.mkdir()
    for p in SAMPLES:
        shutil.copy(p, folder / p.name)
    return folder


def _env(tmp_path: Path) -> dict[str, str]:
    """No optics profile (SCALPEDGE_HOME is empty): the scale is uncalibrated."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**os.environ, "SCALPEDGE_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}


def _records(db: Path) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return [json.loads(r[0]) for r in con.execute("select payload from outbox order by seq")]


def _device_run(tmp_path: Path, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [*SCALPEDGE, "device", "run", "--preview", "headless", *args]
    return subprocess.run(
        cmd, cwd=REPO, env=_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s
    )


def test_a_folder_run_ends_by_itself_and_tells_the_operator_each_diagnosis(tmp_path: Path) -> None:
    # The real command on a folder of three different stills, no trigger: each still is diagnosed
    # once (none rejected as "moving too fast": no motion between independent photographs), one
    # INFO line each on stderr as it happens, then the summary, and the process exits 0 by itself
    # (before: the loop spun at 100 % CPU after the last frame and never ended; the timeout here
    # would fail the test). After the end the CPU use is zero: there is no process left.
    folder, out = _stills(tmp_path), tmp_path / "out"
    started = time.monotonic()
    proc = _device_run(tmp_path, "--source", str(folder), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 120
    assert "stopped: source ended" in proc.stdout and "3 still(s), ends after the last frame" in proc.stdout
    err = proc.stderr
    # the start: the chosen source, the bundle and backend, and the calibration state
    assert re.search(r"INFO device\.cli\.run: source: folder .*stills: 3 still\(s\), ends after the last frame", err)
    assert re.search(r"INFO device\.cli\.run: bundle \S+ \(.+\) on onnxruntime: segmenter ", err)
    assert re.search(
        r"WARNING device\.cli\.run: UNCALIBRATED scale: no optics profile at .*home/calibration\.json", err
    )
    lines = [line for line in err.splitlines() if "INFO device.app.runtime: diagnosis seq" in line]
    assert len(lines) == 3, err
    pattern = (
        r"diagnosis seq (\d) \(still, (\S+\.jpg)\): \d+ hairs, \d+ hairs/cm2, thin \d+ %, median \d+ um "
        r"\(uncalibrated scale\); dandruff \w+, sebum \w+, erythema \w+, alopecia \w+; stored on the scanner"
    )
    found = [re.search(pattern, line) for line in lines]
    assert all(found), lines
    assert [(m.group(1), m.group(2)) for m in found if m] == [(str(i + 1), p.name) for i, p in enumerate(SAMPLES)]
    assert "moving too fast" not in err and "view changed" not in err
    records = _records(out / "outbox.sqlite")
    assert [Path(r["frame"]["source"]).name for r in records] == [p.name for p in SAMPLES]  # each still's file
    assert all(r["quality"]["accepted"] for r in records)


def test_loop_plays_a_folder_again_on_purpose(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, out = _stills(tmp_path), tmp_path / "out"
    argv = ["device", "run", "--source", str(folder), "--loop", "--max-diagnoses", "5", "--preview", "headless"]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stopped: diagnosis limit" in text and "3 still(s), loops" in text
    names = [Path(r["frame"]["source"]).name for r in _records(out / "outbox.sqlite")]
    assert names == [p.name for p in SAMPLES + SAMPLES][:5]


@pytest.mark.parametrize("config", [None, "[run]\nout = 'scans'\n"])
def test_no_camera_is_an_error_not_a_synthetic_one(tmp_path: Path, config: str | None) -> None:
    # Before: with no config (or one without [camera]) the camera silently became synthetic://
    # and ran until killed (the timeout would fail this), publishing made-up results.
    args = ["--out", str(tmp_path / "out")]
    if config is not None:
        (tmp_path / "scanner.toml").write_text(config)
        args += ["--config", str(tmp_path / "scanner.toml")]
    proc = _device_run(tmp_path, *args, timeout_s=60)
    assert proc.returncode == 2, proc.stderr
    assert "no camera source" in proc.stderr and "--demo" in proc.stderr and "synthetic://" in proc.stderr
    assert not (tmp_path / "out" / "outbox.sqlite").exists() and not (tmp_path / "scans").exists()


def test_a_wrong_scanner_port_is_a_clear_error(tmp_path: Path) -> None:
    # Before: a missing port was retried forever, logged at debug, and the run went on (exit 0).
    missing = str(tmp_path / "by-id" / "usb-ScalpEdge_Scanner-if00")
    folder = _stills(tmp_path)
    proc = _device_run(tmp_path, "--source", str(folder), "--scanner", missing, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert f"scanner port {missing} not found" in proc.stderr and "Traceback" not in proc.stderr
    assert "device.cli.run: bundle" not in proc.stderr  # refused before any model was loaded
    monitor = [sys.executable, "-m", "firmware_bridge.monitor", missing, "--seconds", "30"]
    mon = subprocess.run(monitor, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert mon.returncode == 2 and f"error: scanner port {missing} not found" in mon.stderr
    assert "watching" not in mon.stdout


def test_the_link_names_a_port_it_cannot_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    not_a_tty = tmp_path / "notes.txt"
    not_a_tty.write_text("x")
    for url, missing in ((str(tmp_path / "ttyACM9"), True), ("hwgrep://1209:C0DE", True), (str(not_a_tty), False)):
        link = SerialLink(url)
        with pytest.raises(PortUnavailable, match=re.escape(f"scanner port {url} ")) as info:
            link.start(require_port=True)
        assert info.value.missing is missing and link.stats.open_failures == 1
        assert ("not found" if missing else "cannot be opened") in str(info.value)
        link.stop()
    # Not required at start (a scanner plugged in later): retried with backoff, and the first
    # failed open of the outage is a WARNING naming the port; the retries after it are debug.
    with caplog.at_level(logging.DEBUG, logger="firmware_bridge.link"):
        link = SerialLink(str(tmp_path / "ttyACM9")).start()
        time.sleep(0.6)
        link.stop()
    opens = [r for r in caplog.records if r.getMessage().startswith("cannot open")]
    assert [r.levelname for r in opens][:1] == ["WARNING"] and str(tmp_path / "ttyACM9") in opens[0].getMessage()
    assert len(opens) >= 3 and {r.levelname for r in opens[1:]} == {"DEBUG"}


@pytest.fixture(scope="module")
def pipeline() -> ScanPipeline:
    return counting_pipeline()


def _folder(tmp_path: Path, images: list[np.ndarray]) -> str:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return str(folder)


def test_the_motion_gate_does_not_apply_between_stills(
    tmp_path: Path, pipeline: ScanPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    # Six images alternating between three different scalps, not diagnosed, no trigger. As stills
    # (a folder's default) none is rejected; as a clip's frames (stills=0) the gate sees the view
    # jump and rejects them, and says why at INFO (before: debug only, shown with -v).
    images = [cv2.imread(str(p)) for p in SAMPLES] * 2
    folder = _folder(tmp_path, images)
    stills = ScannerRuntime(pipeline, open_source(folder), tmp_path / "a", diagnose_stills=False)
    summary = stills.run(max_seconds=60)
    assert (summary.stop_reason, summary.frames, summary.rejected_frames) == ("source ended", 6, 0)
    with caplog.at_level(logging.INFO, logger="device.app.runtime"):
        clip = ScannerRuntime(pipeline, open_source(folder, stills=False), tmp_path / "b")
        summary = clip.run(max_seconds=60)
    assert summary.stop_reason == "source ended" and summary.rejected_frames >= 3
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "rejected:" in r.getMessage()]
    assert said and all(("moving too fast" in m or "view changed" in m) for m in said)


def test_a_persisting_rejection_is_said_once_at_info(
    tmp_path: Path, pipeline: ScanPipeline, caplog: pytest.LogCaptureFixture
) -> None:
    # A covered lens for 8 frames: the reason once at INFO (with the frame), the rest at debug.
    black = np.zeros((480, 640, 3), np.uint8)
    source = open_source(_folder(tmp_path, [black] * 8), stills=False)
    with caplog.at_level(logging.DEBUG, logger="device.app.runtime"):
        summary = ScannerRuntime(pipeline, source, tmp_path / "out").run(max_seconds=60)
    assert (summary.frames, summary.rejected_frames, summary.stop_reason) == (8, 8, "source ended")
    rejected = [r for r in caplog.records if "rejected: underexposed frame" in r.getMessage()]
    assert [r.levelname for r in rejected] == ["INFO"] + ["DEBUG"] * 7
    assert any(r.getMessage() == "source ended after 8 frame(s)" for r in caplog.records)


def test_a_camera_that_is_not_there_is_retried_with_backoff_not_ended(tmp_path: Path, pipeline: ScanPipeline) -> None:
    # A real V4L2 open of a device that does not exist: the loop waits (no spin, no end), the
    # source retries at 0, 0.5 and 1.5 s (backoff doubling), until the time limit.
    source = FrameSource(parse_uri("v4l2:///dev/video63"))
    start = time.monotonic()
    summary = ScannerRuntime(pipeline, source, tmp_path / "out").run(max_seconds=1.8)
    assert summary.stop_reason == "time limit" and summary.frames == 0 and not source.ended
    assert 2 <= source.stats.open_failures <= 3 and time.monotonic() - start < 3.0


def test_the_preview_shows_the_last_diagnosis_and_the_uncalibrated_scale(
    tmp_path: Path, pipeline: ScanPipeline
) -> None:
    source = open_source(str(SAMPLES[0]))
    runtime = ScannerRuntime(pipeline, source, tmp_path / "out")
    assert runtime.status == [UNCALIBRATED_STATUS]  # the shipped pipeline has no optics profile
    summary = runtime.run(max_seconds=60)
    (row,) = summary.results
    hairs = row.fields["metrics"]["hair_count"]["value"]
    assert runtime.status == [status_line(row), UNCALIBRATED_STATUS]
    assert runtime.status[0].startswith(f"#- {hairs} hairs, ") and runtime.status[0].endswith("not stored (no outbox)")
    live = pipeline.live(cv2.imread(str(SAMPLES[0])))
    plain, shown = live_view(live, 10.0), live_view(live, 10.0, runtime.status)
    h = live.frame.shape[0]
    assert np.array_equal(shown[:h], plain[:h]) and np.array_equal(
        shown[:h][~live.seg.mask()], live.frame[~live.seg.mask()]
    )
    assert shown.shape[0] > plain.shape[0] > h  # the status lines go on the label bar below the frame, not over it
    bar = shown[h:]  # a solid dark bar with light text
    dark = (bar.max(axis=2) < 60).mean()
    assert dark > 0.7 and (bar.min(axis=2) > 200).sum() > 200


def test_diagnosis_lines() -> None:
    metrics = {
        "hair_count": {"value": 52},
        "density": {"value": 131.4},
        "thin_ratio": {"value": 0.123},
        "median_thickness": {"value": 61.2},
    }
    fields = {
        "metrics": metrics,
        "conditions": {"dandruff": {"level": "mild"}, "sebum": {"level": "good"}},
        "quality": {"accepted": True, "reason": None},
        "frame": {"source": "synthetic://"},
    }
    row = ResultRow(3, "button press", "t", True, fields, None)
    assert diagnosis_line(row, publishing=True, calibrated=False) == (
        "diagnosis seq 3 (button press, SYNTHETIC frame): 52 hairs, 131 hairs/cm2, thin 12 %, "
        "median 61 um (uncalibrated scale); dandruff mild, sebum good; stored, sending"
    )
    rejected = {**fields, "quality": {"accepted": False, "reason": "out of focus (sharpness 3 < 40)"}, "frame": {}}
    row = ResultRow(4, "still", "t", False, rejected, None, frame_name="/scans/a.jpg")
    assert diagnosis_line(row) == (
        "diagnosis seq 4 (still, a.jpg): rejected: out of focus (sharpness 3 < 40); stored on the scanner (publish off)"
    )
    assert status_line(row) == "#4 rejected: out of focus"
    full = ResultRow(None, "mqtt", "t", True, {**fields, "frame": {}}, None, "not stored: outbox full (1 pending)")
    assert diagnosis_line(full, calibrated=True).endswith(
        "median 61 um; dandruff mild, sebum good; not stored: outbox full (1 pending)"
    )


def test_the_calibration_state_is_said_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SCALPEDGE_HOME", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="device.cli.run"):
        assert _optics("") is None
        profile = OpticsProfile(4.2, 640, 480, 100.0, 23.8, 0.0, "2026-11-30T10:00:00Z", "ruler.png")
        save_profile(profile)
        assert _optics("") == profile
    warning, info = caplog.records
    assert warning.levelname == "WARNING" and "UNCALIBRATED scale" in warning.getMessage()
    assert "5.6 um per pixel" in warning.getMessage()
    assert info.levelname == "INFO" and info.getMessage().startswith(f"calibration: {tmp_path / 'calibration.json'}")
    assert "4.200 um per pixel at 640 px wide" in info.getMessage()
    with pytest.raises(ValueError, match="optics profile .*missing.json not found"):
        _optics(str(tmp_path / "missing.json"))
