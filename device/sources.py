"""Camera sources behind one URI style (like jetson-inference's videoSource).

=========================================  ==================================================
``v4l2:///dev/video0``, ``/dev/video0``, ``0``  a V4L2 camera (USB microscope), by path or index
``csi://0``                                 a Jetson CSI camera through GStreamer (nvarguscamerasrc)
``rtsp://host/stream``                      a network stream (OpenCV's FFmpeg backend)
``file:///clip.mp4``, ``clip.avi``          a video file (``?loop=1`` to repeat)
``file:///frames/``, ``frames/``            a folder of images in name order (``?loop=1``)
``synthetic://``                            a window panning across a generator-made scene
                                            (shipped in ``device/assets/scene``) for demos
=========================================  ==================================================

Options come from the URI query (``?width=640&height=480&fps=15&loop=1``) or the arguments of
``open_source``; the capture format actually negotiated is reported in ``FrameSource.actual``.
A live camera that stops delivering (unplugged, stream dropped) is reopened with exponential
backoff; ``read`` then returns None until it is back, never raising into the frame loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from device.imageio import IMAGE_SUFFIXES, FrameError, read_frame

__all__ = ["Frame", "SourceSpec", "SourceStats", "FrameSource", "parse_uri", "csi_pipeline", "open_source"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
LIVE_KINDS = ("v4l2", "csi", "rtsp")
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 8.0


@dataclass(frozen=True)
class Frame:
    """image: HxWx3 uint8 BGR; seq: per-source counter from 1; t_capture: UTC epoch seconds;
    t_mono: time.monotonic() at capture; source: the URI."""

    image: np.ndarray
    seq: int
    t_capture: float
    t_mono: float
    source: str


@dataclass(frozen=True)
class SourceSpec:
    """kind: v4l2 | csi | rtsp | video | folder | synthetic; target: device path / index /
    URL / file / folder; width, height, fps: requested (0 = the source's own); loop: repeat
    files and folders."""

    uri: str
    kind: str
    target: str
    width: int = 0
    height: int = 0
    fps: float = 0.0
    loop: bool = False


@dataclass
class SourceStats:
    frames: int = 0
    read_failures: int = 0
    reconnects: int = 0
    skipped_files: int = 0
    last_error: str = ""


def parse_uri(uri: str, width: int = 0, height: int = 0, fps: float = 0.0, loop: bool | None = None) -> SourceSpec:
    """Turn a source URI (see the module docstring) into a spec; query options win over the
    arguments. Raises ValueError naming the URI for unknown schemes and missing files."""
    text = uri.strip()
    if not text:
        raise ValueError("empty source URI")
    parsed = urlparse(text)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    try:
        width = int(query.get("width", width))
        height = int(query.get("height", height))
        fps = float(query.get("fps", fps))
    except ValueError as exc:
        raise ValueError(f"source {uri!r}: bad option value ({exc})") from None
    looping = query.get("loop", "1" if loop else "0") not in ("0", "false", "no")
    scheme = parsed.scheme.lower()

    def spec(kind: str, target: str, default_loop: bool = False) -> SourceSpec:
        return SourceSpec(uri, kind, target, width, height, fps, looping or (loop is None and default_loop))

    if text.isdigit():
        return spec("v4l2", text)
    if scheme == "v4l2":
        return spec("v4l2", parsed.path or parsed.netloc)
    if scheme == "csi":
        sensor = parsed.netloc or parsed.path.strip("/") or "0"
        if not sensor.isdigit():
            raise ValueError(f"source {uri!r}: CSI sensor id must be a number")
        return spec("csi", sensor)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        return spec("rtsp", text.split("?")[0])
    if scheme == "synthetic":
        return spec("synthetic", parsed.netloc or "scene", default_loop=True)
    if scheme not in ("", "file"):
        raise ValueError(f"source {uri!r}: unknown scheme {scheme!r} (v4l2, csi, rtsp, file, synthetic)")
    path = Path(parsed.path if scheme == "file" else text.split("?")[0])
    if str(path).startswith("/dev/video"):
        return spec("v4l2", str(path))
    if not path.exists():
        raise ValueError(f"source {uri!r}: {path} does not exist")
    if path.is_dir():
        return spec("folder", str(path))
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return spec("video", str(path))
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return spec("folder", str(path))
    raise ValueError(f"source {uri!r}: {path.suffix or 'no suffix'} is neither a video nor an image")


def csi_pipeline(sensor_id: int, width: int = 640, height: int = 480, fps: float = 30.0, flip: int = 0) -> str:
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc) ending in BGR for OpenCV."""
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={round(fps or 30)}/1 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1"
    )


class FrameSource:
    """Frames from one source. ``read(timeout_s)`` returns a Frame, or None when nothing came
    (timeout, reconnecting, or a finished file; see ``ended``). ``opener`` builds the OpenCV
    capture for capture kinds (injectable to test reconnects with real captures)."""

    def __init__(self, spec: SourceSpec, opener: Callable[[SourceSpec], Any] | None = None) -> None:
        self.spec = spec
        self.stats = SourceStats()
        self.actual: dict[str, float] = {}
        self.ended = False
        self._opener = opener or _open_capture
        self._cap: Any = None
        self._files: list[Path] = []
        self._index = 0
        self._scene: np.ndarray | None = None
        self._next_due = 0.0
        self._retry_at = 0.0
        self._backoff = RECONNECT_MIN_S
        self._seq = 0
        if spec.kind == "folder":
            self._files = _list_frames(Path(spec.target))
        elif spec.kind == "synthetic":
            self._scene = _load_scene(spec.target)
            self.actual = {"width": float(spec.width or 640), "height": float(spec.height or 480)}
        else:
            self._open()
            if self._cap is None and spec.kind not in LIVE_KINDS:
                raise ValueError(f"source {spec.uri!r}: cannot open {spec.target}: {self.stats.last_error}")

    # -- public ---------------------------------------------------------------------------
    def read(self, timeout_s: float = 1.0) -> Frame | None:
        """The next frame, paced to the requested fps for files, folders and synthetic scenes."""
        if self.ended:
            return None
        deadline = time.monotonic() + timeout_s
        paced = self.spec.kind in ("video", "folder", "synthetic") and self.spec.fps > 0
        if paced:
            wait = self._next_due - time.monotonic()
            if wait > timeout_s:
                time.sleep(max(timeout_s, 0.0))
                return None
            if wait > 0:
                time.sleep(wait)
            self._next_due = max(self._next_due + 1.0 / self.spec.fps, time.monotonic())
        image = self._grab(deadline)
        if image is None:
            return None
        self._seq += 1
        self.stats.frames += 1
        return Frame(image, self._seq, time.time(), time.monotonic(), self.spec.uri)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- kinds ----------------------------------------------------------------------------
    def _grab(self, deadline: float) -> np.ndarray | None:
        if self.spec.kind == "folder":
            return self._next_file()
        if self.spec.kind == "synthetic":
            return self._pan()
        return self._read_capture(deadline)

    def _next_file(self) -> np.ndarray | None:
        while True:
            if self._index >= len(self._files):
                if not self.spec.loop:
                    self.ended = True
                    return None
                self._files, self._index = _list_frames(Path(self.spec.target)), 0
            path = self._files[self._index]
            self._index += 1
            try:
                return _fit(read_frame(path), self.spec)
            except FrameError as exc:  # a bad file is logged and skipped, never fatal
                self.stats.skipped_files += 1
                self.stats.last_error = str(exc)
                log.warning("skipped frame: %s", exc)

    def _pan(self) -> np.ndarray:
        """A 4:3 window drifting across the scene on a slow Lissajous path (a moving hand)."""
        assert self._scene is not None
        h, w = self._scene.shape[:2]
        out_w, out_h = int(self.actual["width"]), int(self.actual["height"])
        win_w, win_h = min(w, out_w), min(h, out_h)
        t = self._seq * 0.02
        x = int((w - win_w) * (0.5 + 0.5 * np.sin(t)))
        y = int((h - win_h) * (0.5 + 0.5 * np.sin(0.7 * t + 1.0)))
        crop = self._scene[y : y + win_h, x : x + win_w]
        return cv2.resize(crop, (out_w, out_h)) if crop.shape[:2] != (out_h, out_w) else crop.copy()

    def _read_capture(self, deadline: float) -> np.ndarray | None:
        while time.monotonic() < deadline:
            if self._cap is None:
                if time.monotonic() < self._retry_at:
                    time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                    continue
                self._open()
                if self._cap is None:
                    continue
            ok, image = self._cap.read()
            if ok and image is not None:
                self._backoff = RECONNECT_MIN_S
                return _fit(image, self.spec)
            if self.spec.kind == "video":
                if self.spec.loop and self.stats.frames > 0:
                    self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self.ended = True
                return None
            self.stats.read_failures += 1
            self.stats.last_error = "camera delivered no frame"
            log.warning("%s: no frame; reopening in %.1f s", self.spec.uri, self._backoff)
            self.close()
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, RECONNECT_MAX_S)
        return None

    def _open(self) -> None:
        try:
            cap = self._opener(self.spec)
        except (cv2.error, OSError, ValueError) as exc:
            cap, self.stats.last_error = None, str(exc)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            self.stats.last_error = self.stats.last_error or f"cannot open {self.spec.target}"
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, RECONNECT_MAX_S)
            return
        if self._cap is None and self.stats.frames:
            self.stats.reconnects += 1
            log.info("%s: reopened", self.spec.uri)
        self._cap = cap
        self.actual = {
            "width": float(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": float(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
        }


def _open_capture(spec: SourceSpec) -> Any:
    if spec.kind == "csi":
        return cv2.VideoCapture(
            csi_pipeline(int(spec.target), spec.width or 640, spec.height or 480, spec.fps), cv2.CAP_GSTREAMER
        )
    if spec.kind == "v4l2":
        target: Any = int(spec.target) if spec.target.isdigit() else spec.target
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, spec.width), (cv2.CAP_PROP_FRAME_HEIGHT, spec.height)):
            if value:
                cap.set(prop, value)
        if spec.fps:
            cap.set(cv2.CAP_PROP_FPS, spec.fps)
        return cap
    return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG)


def _fit(image: np.ndarray, spec: SourceSpec) -> np.ndarray:
    """Resize to the requested size when the source delivers another (0 = keep)."""
    if spec.width and spec.height and image.shape[:2] != (spec.height, spec.width):
        return cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    return image


def _list_frames(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise ValueError(f"source folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _load_scene(name: str) -> np.ndarray:
    from device.assets import ASSETS

    scenes = sorted((ASSETS / "scene").glob("*.jpg"))
    if not scenes:
        raise ValueError(f"no synthetic scene shipped in {ASSETS / 'scene'}")
    chosen = [p for p in scenes if p.stem.startswith(name)] or scenes
    return read_frame(chosen[0])


def open_source(uri: str, width: int = 0, height: int = 0, fps: float = 0.0, loop: bool | None = None) -> FrameSource:
    """Open ``uri`` (see the module docstring) as a FrameSource."""
    return FrameSource(parse_uri(uri, width, height, fps, loop))
