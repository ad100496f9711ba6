"""Camera sources over real files, folders and OpenCV captures; URI parsing for every scheme;
the quality gate on blurred, dark, glaring and moving frames."""

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.assets import ASSETS
from device.capture.source_uri import open_capture
from device.capture.sources import FrameSource, csi_pipeline, open_source, parse_uri
from device.measure.quality import FOCUS_MIN, MOTION_MAX_PX, QualityGate, QualityThresholds, assess

CLIP = ASSETS / "samples" / "clip"


def _frames(folder: Path, n: int = 3) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(n)]
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), img)
    return images


def _video(path: Path, n: int = 8, fourcc: str = "MJPG", start: int = 0) -> Path:
    """A real clip: frame i is a flat grey of level 20 * (i + start)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (160, 120))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((120, 160, 3), 20 * (i + start), np.uint8))
    writer.release()
    return path


def _read_until(src: FrameSource, seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = src.read(0.3)
        if frame is not None:
            return frame
    return None


def test_uri_parsing_for_every_scheme(tmp_path: Path) -> None:
    _frames(tmp_path / "dir", 1)
    video = _video(tmp_path / "clip.avi")
    assert parse_uri("0").kind == "v4l2" and parse_uri("0").target == "0"
    assert parse_uri("1?fps=30").target == "1" and parse_uri("1?fps=30").fps == 30.0
    v4l2 = parse_uri("v4l2:///dev/video2?width=1280&height=720&fps=30")
    assert (v4l2.kind, v4l2.target, v4l2.width, v4l2.height, v4l2.fps) == ("v4l2", "/dev/video2", 1280, 720, 30.0)
    assert parse_uri("v4l2://3").target == "3"
    assert parse_uri("/dev/video2", 640, 480).width == 640 and parse_uri("/dev/video2").kind == "v4l2"
    assert parse_uri("csi://1").kind == "csi" and parse_uri("csi://1").target == "1"
    assert parse_uri("csi://").target == "0"
    # our options leave the URL; the camera's own query stays in it
    rtsp = parse_uri("rtsp://cam.local:8554/scope?channel=2&fps=15")
    assert (rtsp.kind, rtsp.target, rtsp.fps) == ("rtsp", "rtsp://cam.local:8554/scope?channel=2", 15.0)
    assert parse_uri(str(video)).kind == "video" and not parse_uri(str(video)).loop
    assert parse_uri(f"file://{video}?loop=1").loop and parse_uri(str(video), loop=True).loop
    assert parse_uri(str(tmp_path / "dir")).kind == "folder"
    assert parse_uri(f"file://{tmp_path / 'dir'}").target == str(tmp_path / "dir")
    assert parse_uri(str(tmp_path / "dir" / "f00.png")).kind == "folder"  # one image, as a folder of one
    synth = parse_uri("synthetic://?fps=12")
    assert (synth.kind, synth.target, synth.loop, synth.fps) == ("synthetic", "clip", True, 12.0)
    assert parse_uri("synthetic://scene").target == "scene" and not parse_uri("synthetic://?loop=0").loop
    (tmp_path / "notes.txt").write_text("x")
    for bad, message in (
        ("ftp://x/y", "unknown scheme 'ftp'"),
        (str(tmp_path / "missing.avi"), "does not exist"),
        (f"file://{tmp_path / 'missing'}", "does not exist"),
        (str(tmp_path / "notes.txt"), "neither a video nor an image"),
        ("csi://left", "sensor id must be a number"),
        ("v4l2://", "expected v4l2:///dev/videoN"),
        ("v4l2:///tmp/cam", "expected v4l2:///dev/videoN"),
        ("rtsp:///stream", "needs a host"),
        ("synthetic://moon", "unknown synthetic clip 'moon'"),
        ("v4l2:///dev/video0?fps=fast", "bad option value"),
        ("v4l2:///dev/video0?width=640", "width and height go together"),
        ("", "empty source URI"),
    ):
        with pytest.raises(ValueError, match=message) as info:
            parse_uri(bad)
        assert not bad or repr(bad) in str(info.value)  # the message names the URI


def test_csi_pipeline_is_a_complete_gstreamer_string() -> None:
    p = csi_pipeline(0, 1280, 720, 60, flip=2)
    assert p == (
        "nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), width=1280, height=720, framerate=60/1 ! "
        "nvvidconv flip-method=2 ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1"
    )
    assert "framerate=30/1" in csi_pipeline(1, 640, 480, 0) and "sensor-id=1" in csi_pipeline(1)
    with pytest.raises(ValueError, match="bad CSI pipeline"):
        csi_pipeline(0, 640, 480, 30, flip=9)


def test_folder_source_reads_in_order_skips_bad_files_and_loops(tmp_path: Path) -> None:
    images = _frames(tmp_path / "dir", 3)
    (tmp_path / "dir" / "f01b.png").write_bytes(b"broken")
    src = open_source(str(tmp_path / "dir"))
    got = [src.read(1.0) for _ in range(4)]
    assert [f.seq for f in got[:3]] == [1, 2, 3] and got[3] is None and src.ended
    assert np.array_equal(got[0].image, images[0]) and np.array_equal(got[2].image, images[2])
    assert src.stats.skipped_files == 1 and "f01b.png" in src.stats.last_error
    assert src.actual == {"width": 160.0, "height": 120.0, "fps": 0.0}
    looping = open_source(f"file://{tmp_path / 'dir'}?loop=1&width=80&height=60")
    frames = [looping.read(1.0) for _ in range(7)]
    assert all(f is not None and f.image.shape == (60, 80, 3) for f in frames)
    assert [f.seq for f in frames] == list(range(1, 8)) and frames[3].image.tobytes() == frames[0].image.tobytes()
    assert abs(frames[0].t_capture - time.time()) < 5 and frames[0].t_mono < frames[-1].t_mono
    assert frames[0].source == f"file://{tmp_path / 'dir'}?loop=1&width=80&height=60"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        open_source(str(tmp_path / "empty"))


@pytest.mark.parametrize(("name", "fourcc"), [("clip.avi", "MJPG"), ("clip.mp4", "mp4v")])
def test_video_file_plays_once_or_loops(tmp_path: Path, name: str, fourcc: str) -> None:
    video = _video(tmp_path / name, n=5, fourcc=fourcc)
    with open_source(str(video)) as src:
        frames = [src.read(1.0) for _ in range(6)]
        assert [f is not None for f in frames] == [True] * 5 + [False] and src.ended
        assert src.actual == {"width": 160.0, "height": 120.0, "fps": 10.0}
        assert [int(f.image.mean() + 0.5) for f in frames[:5]] == pytest.approx([0, 20, 40, 60, 80], abs=3)
    with open_source(str(video) + "?loop=1") as src:
        levels = [int(src.read(1.0).image.mean() + 0.5) for _ in range(12)]
        assert levels[5:7] == pytest.approx([0, 20], abs=3) and src.stats.read_failures == 0


def test_synthetic_clip_is_shipped_loops_and_is_paced() -> None:
    files = sorted(CLIP.glob("*.jpg"))
    assert len(files) == 24 and sum(p.stat().st_size for p in files) < 1_500_000
    src = open_source("synthetic://?fps=20")
    gate = QualityGate()
    start = time.monotonic()
    frames = [src.read(1.0) for _ in range(11)]
    elapsed = time.monotonic() - start
    assert all(f is not None and f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    assert 0.45 < elapsed < 1.2  # 10 intervals at 20 fps
    gaps = np.diff([f.t_mono for f in frames])
    assert gaps.min() > 0.035 and np.median(gaps) == pytest.approx(0.05, abs=0.01)
    fast = open_source("synthetic://")  # no fps: as fast as read, round the loop and on
    played = [fast.read(1.0) for _ in range(26)]
    assert np.array_equal(played[24].image, played[0].image) and played[25].seq == 26
    for stream in (frames, played):  # a steady hand: the gate passes every frame, the loop seam included
        gate.reset()
        for f in stream:
            report = gate.check(f.image)
            assert report.accepted, report.reason
    assert report.motion is not None and 1.0 < report.motion < MOTION_MAX_PX


def test_synthetic_scene_pans() -> None:
    src = open_source("synthetic://scene", 320, 240)
    a, b = src.read(1.0), src.read(1.0)
    assert a.image.shape == (240, 320, 3) and not np.array_equal(a.image, b.image)


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
    assert src.read(0.3) is None and src.read(0.3) is None
    assert src.stats.read_failures == 1 and src.stats.open_failures >= 1 and not src.ended
    assert "cannot open" in src.stats.last_error
    shutil.copy(spare, video)  # replugged
    frame = _read_until(src, 5)
    assert frame is not None and src.stats.reconnects == 1 and frame.seq == 4
    src.close()
    assert src.read(0.1) is None and src.ended and src.stats.reconnects == 1  # closed stays closed


def test_a_camera_absent_at_start_is_waited_for(tmp_path: Path) -> None:
    """A live camera missing at start does not fail open_source: read() keeps retrying with
    growing backoff (counted) until it appears. A real V4L2 open of a missing device first."""
    missing = FrameSource(parse_uri("v4l2:///dev/video63"))
    assert missing.read(0.2) is None and missing.stats.open_failures == 1 and not missing.ended
    video = tmp_path / "cam.avi"
    src = FrameSource(parse_uri("0"), opener=lambda s: cv2.VideoCapture(str(video), cv2.CAP_FFMPEG))
    assert src.read(0.7) is None and src.stats.open_failures == 2  # tries at 0 and 0.5 s, next at 1.5 s
    _video(video, n=2)
    frame = _read_until(src, 4)
    assert frame is not None and frame.seq == 1 and src.stats.reconnects == 1
    with pytest.raises(ValueError, match="is not an OpenCV capture"):
        open_capture(parse_uri("synthetic://"))


def test_a_looping_folder_emptied_and_refilled_recovers(tmp_path: Path) -> None:
    images = _frames(tmp_path / "dir", 2)
    src = open_source(f"{tmp_path / 'dir'}?loop=1")
    first = src.read(1.0)
    assert first is not None and np.array_equal(first.image, images[0])
    for p in (tmp_path / "dir").iterdir():
        p.unlink()
    assert src.read(0.3) is None and src.read(0.3) is None and not src.ended  # no exception
    assert src.stats.read_failures == 1 and src.stats.skipped_files == 1
    _frames(tmp_path / "dir", 2)
    frame = _read_until(src, 5)
    assert frame is not None and np.array_equal(frame.image, images[0]) and src.stats.reconnects == 1
    for p in (tmp_path / "dir").iterdir():  # corrupt in place: a whole pass unreadable is a drop too
        p.write_bytes(b"not an image")
    assert _read_until(src, 0.8) is None and src.stats.read_failures >= 2 and not src.ended


def test_a_looping_video_replaced_on_disk_plays_the_new_one(tmp_path: Path) -> None:
    video = _video(tmp_path / "loop.avi", n=3)
    with open_source(f"{video}?loop=1") as src:
        assert [src.read(1.0) is not None for _ in range(3)] == [True] * 3
        _video(tmp_path / "new.avi", n=3, start=10).replace(video)
        frame = src.read(1.0)  # end of the old file: reopened, the new content plays
        assert frame is not None and frame.image.mean() == pytest.approx(200, abs=3)
        video.write_bytes(b"garbage")
        src.read(1.0), src.read(1.0)
        assert src.read(0.3) is None and src.stats.read_failures == 1 and not src.ended


def test_quality_gate_rejects_dark_blurred_glaring_and_moving_frames() -> None:
    sharp = cv2.imread(str(CLIP / "clip_000.jpg"))
    report, grey = assess(sharp)
    assert report.accepted and report.focus > FOCUS_MIN and report.motion is None and report.change is None
    assert report.to_dict().keys() == {"accepted", "reason", "focus", "exposure"}
    dark, _ = assess((sharp * 0.02).astype(np.uint8))
    assert not dark.accepted and "underexposed frame (mean grey" in dark.reason
    half_black = sharp.copy()
    half_black[:, :420] = 0  # lens half covered: mean is fine, 66 % of pixels clipped black
    clipped, _ = assess(half_black)
    assert not clipped.accepted and "66% of pixels black" in clipped.reason and clipped.underexposed > 0.6
    glare = sharp.copy()
    glare[:200] = 255  # specular glare over the top 42 %
    glaring, _ = assess(glare)
    assert not glaring.accepted and "% of pixels saturated" in glaring.reason and glaring.overexposed > 0.4
    blurred, _ = assess(cv2.GaussianBlur(sharp, (0, 0), 4))
    assert not blurred.accepted and "out of focus" in blurred.reason and blurred.focus < FOCUS_MIN
    moved, _ = assess(np.roll(sharp, 60, axis=1), grey)
    assert not moved.accepted and "moving too fast" in moved.reason and moved.motion == pytest.approx(60, abs=4)
    other = cv2.imread(str(ASSETS / "samples" / "synthetic_000001.jpg"))
    swapped, _ = assess(other, grey)
    assert not swapped.accepted and ("view changed" in swapped.reason or "moving too fast" in swapped.reason)
    assert swapped.change is not None and swapped.change > 15
    # thresholds in one dataclass: a stricter focus floor rejects the sharp frame too
    strict, _ = assess(sharp, thresholds=QualityThresholds(focus_min=1e4))
    assert not strict.accepted and "< 10000" in strict.reason


def test_quality_gate_over_a_stream_counts_reasons() -> None:
    frames = [cv2.imread(str(p)) for p in sorted(CLIP.glob("*.jpg"))[:4]]
    gate = QualityGate()
    stream = [frames[0], frames[1], np.zeros_like(frames[0]), frames[2], np.roll(frames[3], 80, axis=0)]
    accepted = [gate.check(f).accepted for f in stream]
    assert accepted == [True, True, False, False, False] and gate.checked == 5
    # frames[2] after a black frame: the black frame is its previous one, a view change
    assert gate.rejected["underexposed frame"] == 1 and sum(gate.rejected.values()) == 3
    gate.reset()
    assert gate.check(frames[1]).motion is None


def test_folder_images_are_stills_and_files_and_folders_end(tmp_path: Path) -> None:
    # A folder holds independent photographs (still=True, with their file), a clip's frames do not;
    # ``?stills=0`` says a folder holds a clip's frames. Files and folders end; cameras retry.
    _frames(tmp_path / "dir", 2)
    video = _video(tmp_path / "clip.avi", n=2)
    assert parse_uri(str(tmp_path / "dir")).stills and parse_uri(str(tmp_path / "dir" / "f00.png")).stills
    assert (
        not parse_uri(f"{tmp_path / 'dir'}?stills=0").stills
        and not parse_uri(str(tmp_path / "dir"), stills=False).stills
    )
    assert not any(parse_uri(u).stills for u in (str(video), "synthetic://", "v4l2:///dev/video0", "csi://0"))
    assert parse_uri("rtsp://cam/s?stills=1&fps=5").target == "rtsp://cam/s"  # our option leaves the URL
    folder = open_source(str(tmp_path / "dir"))
    got = [folder.read(1.0), folder.read(1.0)]
    assert [(f.still, Path(f.name).name) for f in got] == [(True, "f00.png"), (True, "f01.png")]
    assert folder.read(1.0) is None and folder.ended
    assert folder.describe() == f"folder {tmp_path / 'dir'}: 2 still(s), ends after the last frame"
    sequence = open_source(f"{tmp_path / 'dir'}?stills=0&loop=1")
    assert not sequence.read(1.0).still and sequence.describe().endswith("2 frame(s) of a clip, loops")
    with open_source(str(video)) as clip:
        first = clip.read(1.0)
        assert (
            not first.still and first.name == "" and clip.describe() == f"video file {video}: ends after the last frame"
        )
        assert clip.read(1.0) is not None and clip.read(1.0) is None and clip.ended
    assert open_source("synthetic://").synthetic and "synthetic camera" in open_source("synthetic://").describe()
    camera = FrameSource(parse_uri("v4l2:///dev/video63"))
    assert "reopened with backoff" in camera.describe() and not camera.synthetic and not camera.ended
