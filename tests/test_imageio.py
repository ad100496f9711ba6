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


def _huge_png(path: Path, w: int, h: int) -> None:
    """A real w x h RGB PNG of one colour, compressed row by row (a few hundred kB, written
    without ever holding the image in memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * (3 * w)  # filter byte + grey pixels
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_image_size_is_read_from_the_header(tmp_path: Path) -> None:
    from device.capture.imageio import image_size

    img = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    cases = {
        "a.png": [],
        "a.jpg": [],
        "a.bmp": [],
        "a.tif": [],
        "lossy.webp": [cv2.IMWRITE_WEBP_QUALITY, 80],
        "lossless.webp": [cv2.IMWRITE_WEBP_QUALITY, 101],
    }
    for name, params in cases.items():
        assert cv2.imwrite(str(tmp_path / name), img, params)
        assert image_size((tmp_path / name).read_bytes()) == (70, 50), name
    assert image_size(b"not an image") is None
    assert image_size(b"\x89PNG\r\n\x1a\n\x00\x00") is None  # truncated header: left to the decoder


def test_a_huge_image_is_refused_from_its_header_before_decoding(tmp_path: Path) -> None:
    """A 9000x9000 image (81 MP, 243 MB decoded) is refused as too large, with its size, within
    milliseconds and without the memory a decode takes (measured in a fresh process)."""
    import json
    import subprocess
    import sys

    png = tmp_path / "huge.png"
    _huge_png(png, 9000, 9000)
    jpg = tmp_path / "huge.jpg"
    assert cv2.imwrite(str(jpg), np.zeros((9000, 9000), np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    probe = """
import json, resource, sys, time
from device.capture.imageio import FrameError, read_frame
read_frame(sys.argv[3])  # warm up the decoder on a small image
out = {}
for path in sys.argv[1:3]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    try:
        read_frame(path)
        out[path] = {"error": None}
    except FrameError as exc:
        out[path] = {"error": str(exc)}
    out[path]["s"] = time.perf_counter() - t
    out[path]["grew_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((48, 64, 3), 128, np.uint8))
    res = subprocess.run(
        [sys.executable, "-c", probe, str(png), str(jpg), str(small)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    for path, got in json.loads(res.stdout).items():
        assert got["error"] is not None and "too large" in got["error"] and "9000x9000" in got["error"], path
        assert "not a readable image" not in got["error"]
        assert got["grew_mb"] < 40 and got["s"] < 1.0, (path, got)
