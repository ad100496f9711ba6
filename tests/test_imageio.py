"""Bad input gives a clear error or a defined result, never a crash."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from device.capture.imageio import FrameError, as_bgr, list_images, read_frame
from device.measure.quality import frame_problem


def test_reads_grayscale_rgba_and_16bit(tmp_path: Path) -> None:
    grey = np.full((60, 80), 128, np.uint8)
    rgba = np.dstack([np.full((60, 80, 3), 200, np.uint8), np.full((60, 80), 255, np.uint8)])
    deep = np.full((60, 80, 3), 65535, np.uint16)
    for name, img in (("g.png", grey), ("a.png", rgba), ("d.png", deep)):
        cv2.imwrite(str(tmp_path / name), img)
        frame = read_frame(tmp_path / name)
        assert frame.shape == (60, 80, 3) and frame.dtype == np.uint8
    assert read_frame(tmp_path / "d.png").max() == 255


def test_unreadable_and_missing_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(FrameError, match="broken.jpg: not a readable image"):
        read_frame(bad)
    with pytest.raises(FrameError, match="no such file"):
        read_frame(tmp_path / "missing.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(FrameError, match="not a readable image"):
        read_frame(empty)


def test_size_limits() -> None:
    with pytest.raises(FrameError, match="too small"):
        as_bgr(np.zeros((10, 640, 3), np.uint8))
    with pytest.raises(FrameError, match="unsupported image shape"):
        as_bgr(np.zeros((100, 100, 2), np.uint8))
    with pytest.raises(FrameError, match="pixel type"):
        as_bgr(np.zeros((100, 100, 3), np.float32))


def test_list_images(tmp_path: Path) -> None:
    with pytest.raises(FrameError, match="holds no images"):
        list_images([tmp_path])
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((40, 40, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images([tmp_path])] == ["a.jpg", "b.png"]


def test_quality_gate_reasons() -> None:
    assert "underexposed" in frame_problem(np.zeros((48, 64, 3), np.uint8))
    assert "overexposed" in frame_problem(np.full((48, 64, 3), 255, np.uint8))
    assert "featureless" in frame_problem(np.full((48, 64, 3), 120, np.uint8))
    rng = np.random.default_rng(0)
    assert frame_problem(rng.integers(60, 200, (48, 64, 3), dtype=np.uint8)) is None
