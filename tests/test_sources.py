"""Camera sources over real files, folders and OpenCV captures; URI parsing for every scheme."""

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.quality import FOCUS_MIN, MOTION_MAX_PX, assess
from device.sources import FrameSource, csi_pipeline, open_source, parse_uri


def _frames(folder: Path, n: int = 3) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(n)]
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), img)
    return images


def _video(path: Path, n: int = 8) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((120, 160, 3), 20 * i, np.uint8))
    writer.release()
    return path


def test_uri_parsing_for_every_scheme(tmp_path: Path) -> None:
    _frames(tmp_path / "dir", 1)
    video = _video(tmp_path / "clip.avi")
    assert parse_uri("0").kind == "v4l2" and parse_uri("0").target == "0"
    v4l2 = parse_uri("v4l2:///dev/video2?width=1280&height=720&fps=30")
    assert (v4l2.kind, v4l2.target, v4l2.width, v4l2.height, v4l2.fps) == ("v4l2", "/dev/video2", 1280, 720, 30.0)
    assert parse_uri("/dev/video2", 640, 480).width == 640
    assert parse_uri("csi://1").kind == "csi" and parse_uri("csi://1").target == "1"
    assert parse_uri("rtsp://cam.local:8554/scope?fps=15").target == "rtsp://cam.local:8554/scope"
    assert parse_uri(str(video)).kind == "video" and parse_uri(f"file://{video}?loop=1").loop
    assert parse_uri(str(tmp_path / "dir")).kind == "folder"
    assert parse_uri("synthetic://").kind == "synthetic" and parse_uri("synthetic://").loop
    for bad, message in (
        ("ftp://x/y", "unknown scheme 'ftp'"),
        (str(tmp_path / "missing.avi"), "does not exist"),
        ("csi://left", "sensor id must be a number"),
        ("v4l2:///dev/video0?fps=fast", "bad option value"),
        ("", "empty source URI"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_uri(bad)


def test_csi_pipeline_is_a_complete_gstreamer_string() -> None:
    p = csi_pipeline(0, 1280, 720, 60, flip=2)
    assert p.startswith("nvarguscamerasrc sensor-id=0 ! ")
    assert "width=1280, height=720, framerate=60/1" in p and "flip-method=2" in p
    assert p.endswith("appsink drop=true max-buffers=1")


def test_folder_source_reads_in_order_skips_bad_files_and_loops(tmp_path: Path) -> None:
    images = _frames(tmp_path / "dir", 3)
    (tmp_path / "dir" / "f01b.png").write_bytes(b"broken")
    src = open_source(str(tmp_path / "dir"))
    got = [src.read(1.0) for _ in range(4)]
    assert [f.seq for f in got[:3]] == [1, 2, 3] and got[3] is None and src.ended
    assert np.array_equal(got[0].image, images[0]) and np.array_equal(got[2].image, images[2])
    assert src.stats.skipped_files == 1 and "f01b.png" in src.stats.last_error
    looping = open_source(f"file://{tmp_path / 'dir'}?loop=1&width=80&height=60")
    frames = [looping.read(1.0) for _ in range(7)]
    assert all(f is not None and f.image.shape == (60, 80, 3) for f in frames)
    assert abs(frames[0].t_capture - time.time()) < 5


def test_video_file_plays_once_or_loops(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.avi", n=5)
    with open_source(str(video)) as src:
        frames = [src.read(1.0) for _ in range(6)]
        assert [f is not None for f in frames] == [True] * 5 + [False] and src.ended
        assert src.actual["width"] == 160
    with open_source(str(video) + "?loop=1") as src:
        assert all(src.read(1.0) is not None for _ in range(12))


def test_synthetic_source_pans_at_the_requested_rate() -> None:
    src = open_source("synthetic://?fps=20", 640, 480)
    start = time.monotonic()
    frames = [src.read(1.0) for _ in range(11)]
    elapsed = time.monotonic() - start
    assert all(f is not None and f.image.shape == (480, 640, 3) for f in frames)
    assert 0.4 < elapsed < 1.5  # 10 intervals at 20 fps
    prev = None
    for f in frames:
        report, prev = assess(f.image, prev)
        assert report.accepted, report.reason
    assert report.motion is not None and 1.0 < report.motion < MOTION_MAX_PX


def test_a_camera_that_disappears_is_reopened(tmp_path: Path) -> None:
    """A live source whose capture stops delivering (unplug) is released and reopened with
    backoff; read() returns None meanwhile instead of raising. The 'camera' is a real OpenCV
    capture of a video file that is removed (unplugged) and put back (replugged)."""
    video = _video(tmp_path / "camera.avi", n=3)
    spare = tmp_path / "spare.avi"
    shutil.copy(video, spare)
    spec = parse_uri("v4l2:///dev/video9")
    src = FrameSource(spec, opener=lambda s: cv2.VideoCapture(str(video), cv2.CAP_FFMPEG))
    assert [src.read(1.0) is not None for _ in range(3)] == [True] * 3
    video.unlink()  # unplugged: the open capture runs dry, reopening fails until it is back
    assert src.read(0.3) is None
    assert src.stats.read_failures >= 1 and not src.ended
    shutil.copy(spare, video)  # replugged
    deadline = time.monotonic() + 5
    frame = None
    while frame is None and time.monotonic() < deadline:
        frame = src.read(0.5)
    assert frame is not None and src.stats.reconnects >= 1 and frame.seq == 4
    src.close()


def test_quality_gate_rejects_dark_blurred_and_moving_frames() -> None:
    src = open_source("synthetic://", 640, 480)
    sharp = src.read(1.0).image
    report, grey = assess(sharp)
    assert report.accepted and report.focus > FOCUS_MIN and report.motion is None
    dark, _ = assess((sharp * 0.02).astype(np.uint8))
    assert not dark.accepted and "underexposed" in dark.reason
    flat = cv2.GaussianBlur(np.full((480, 640, 3), 128, np.uint8), (0, 0), 8)
    flat[::2] += 3
    blurred, _ = assess(cv2.GaussianBlur(flat, (0, 0), 10))
    assert not blurred.accepted and ("out of focus" in blurred.reason or "featureless" in blurred.reason)
    shifted = np.roll(sharp, 60, axis=1)
    moved, _ = assess(shifted, grey)
    assert not moved.accepted and "moving too fast" in moved.reason and moved.motion == pytest.approx(60, abs=4)
