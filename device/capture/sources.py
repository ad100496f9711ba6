"""Camera sources behind one URI style (like jetson-inference's videoSource).

==============================================  ==================================================
``v4l2:///dev/video0``, ``/dev/video0``, ``0``  a V4L2 camera (USB microscope), by path or index
``csi://0``                                     a Jetson CSI camera through GStreamer (nvarguscamerasrc)
``rtsp://host/stream``                          a network stream (OpenCV's FFmpeg backend)
``file:///clip.mp4``, ``clip.avi``              a video file (``?loop=1`` to repeat)
``file:///frames/``, ``frames/``, ``a.jpg``     a folder of stills (or one image) in name order
                                                (``?loop=1``; ``?stills=0``: a clip's frames)
``synthetic://``                                a looping clip of generator-made frames (shipped in
                                                ``device/assets/samples/clip``) for demos;
                                                ``synthetic://scene`` pans across a larger scene
==============================================  ==================================================

Options come from the URI query (``?width=640&height=480&fps=15&loop=1``) or the arguments of
``open_source``. Cameras are asked for width, height and fps through ``cv2.CAP_PROP_*``; what
the driver granted is reported in ``FrameSource.actual`` and frames are resized to the request.
Files, folders and clips are paced to the requested fps (0 = as fast as read).

Every source ends or retries on purpose. A video file or a folder that is not looped *ends*
after its last frame: ``read`` returns None and ``ended`` turns True (the frame loop then stops).
A camera or stream that stops delivering (unplugged, dropped), or a looped folder that was
emptied, is released and reopened with exponential backoff (``resilience.Backoff``, 0.5 s doubling
to 8 s, each attempt logged and counted in ``FrameSource.stats``); ``read`` returns None
meanwhile and never raises into the frame loop. The images of a folder are *stills*
(``Frame.still``): independent photographs, so the frame loop measures no motion between them.
Malformed URIs, unknown schemes and missing paths raise ValueError naming the URI at open time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.capture.imageio import IMAGE_SUFFIXES, FrameError, read_frame
from device.capture.source_uri import SourceSpec, csi_pipeline, open_capture, parse_uri, synthetic_folder
from resilience import Backoff

__all__ = ["Frame", "SourceSpec", "SourceStats", "FrameSource", "parse_uri", "csi_pipeline", "open_source"]

log = logging.getLogger(__name__)

LIVE_KINDS = ("v4l2", "csi", "rtsp")
PACED_KINDS = ("video", "folder", "synthetic")
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 8.0


@dataclass(frozen=True)
class Frame:
    """image: HxWx3 uint8 BGR; seq: per-source counter from 1, never repeats; t_capture: UTC
    wall time, epoch seconds; t_mono: time.monotonic() at capture, seconds; source: the URI;
    still: an independent photograph (a folder's image), not the next frame of a moving view;
    name: the image file it was read from ("" for cameras, streams, videos and synthetic clips)."""

    image: np.ndarray
    seq: int
    t_capture: float
    t_mono: float
    source: str
    still: bool = False
    name: str = ""


@dataclass
class SourceStats:
    """frames delivered; read_failures: times a source stopped delivering and was released;
    open_failures: reopen attempts that failed; reconnects: times it came back; skipped_files:
    unreadable images skipped; last_error: the latest failure, for logs and status."""

    frames: int = 0
    read_failures: int = 0
    open_failures: int = 0
    reconnects: int = 0
    skipped_files: int = 0
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FrameSource:
    """Frames from one source. ``read(timeout_s)`` returns a Frame, or None when nothing came in
    time (pacing, reconnecting) or a file or folder has finished (then ``ended`` is True).
    ``opener`` builds the OpenCV capture for capture kinds (v4l2, csi, rtsp, video) from the
    spec; it is injectable so reconnects can be tested with real captures of files."""

    def __init__(
        self,
        spec: SourceSpec,
        opener: Callable[[SourceSpec], Any] | None = None,
        max_backoff_s: float = RECONNECT_MAX_S,
    ) -> None:
        self.spec = spec
        self.stats = SourceStats()
        self.actual: dict[str, float] = {}
        self.ended = False
        self._opener = opener or open_capture
        self._cap: Any = None
        self._folder = synthetic_folder(spec.target) if spec.kind == "synthetic" else Path(spec.target)
        self._files: list[Path] = []
        self._index = 0
        self._scene: np.ndarray | None = None
        self._next_due = 0.0
        self._down = False
        self._backoff = Backoff(RECONNECT_MIN_S, max_backoff_s)
        self._rewound = False
        self._seq = 0
        self._name = ""  # the file the last image came from (folders)
        if spec.kind == "synthetic" and spec.target == "scene":
            self._scene = _load_scene(self._folder)
        elif spec.kind in ("folder", "synthetic"):
            self._files = _list_frames(self._folder)  # raises ValueError: nothing to play
        else:
            self._reopen()
            if self._cap is None and spec.kind not in LIVE_KINDS:
                raise ValueError(f"source {spec.uri!r}: cannot open {spec.target}: {self.stats.last_error}")
            # a live camera absent at start is retried by read(), like one unplugged later

    # -- public ---------------------------------------------------------------------------
    def read(self, timeout_s: float = 1.0) -> Frame | None:
        """The next frame within ``timeout_s`` seconds, or None (see the class docstring)."""
        if self.ended:
            return None
        deadline = time.monotonic() + max(timeout_s, 0.0)
        if self.spec.kind in PACED_KINDS and self.spec.fps > 0:
            wait = self._next_due - time.monotonic()
            if wait > timeout_s:
                time.sleep(max(timeout_s, 0.0))
                return None
            if wait > 0:
                time.sleep(wait)
            # the next frame is due one period after this one; a late reader is not caught up
            self._next_due = max(self._next_due, time.monotonic()) + 1.0 / self.spec.fps
        image = self._grab(deadline)
        if image is None:
            return None
        self._seq += 1
        self.stats.frames += 1
        if "width" not in self.actual or not self.actual["width"]:
            h, w = image.shape[:2]
            self.actual.update(width=float(w), height=float(h), fps=self.actual.get("fps") or self.spec.fps)
        name = self._name if self.spec.kind == "folder" else ""
        return Frame(
            _fit(image, self.spec), self._seq, time.time(), time.monotonic(), self.spec.uri, self.spec.stills, name
        )

    @property
    def synthetic(self) -> bool:
        """Whether the frames are made up (``synthetic://``): demos, never a real scan."""
        return self.spec.kind == "synthetic"

    def describe(self) -> str:
        """One line for the start log: what plays and how it ends or retries."""
        kind, target = self.spec.kind, self.spec.target
        ending = "loops" if self.spec.loop else "ends after the last frame"
        if kind == "synthetic":
            return f"synthetic camera ({target}, demo frames: results are marked synthetic://)"
        if kind == "folder":
            what = f"{len(self._files)} still(s)" if self.spec.stills else f"{len(self._files)} frame(s) of a clip"
            return f"folder {target}: {what}, {ending}"
        if kind == "video":
            return f"video file {target}: {ending}"
        return f"{kind} camera {target} (reopened with backoff when it stops delivering)"

    def close(self) -> None:
        """Release the capture; later reads return None (idempotent)."""
        self.ended = True
        self._release()

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- failure and recovery ---------------------------------------------------------------
    def _grab(self, deadline: float) -> np.ndarray | None:
        while not self.ended:
            if self._down:
                now = time.monotonic()
                retry_at = self._backoff.next_at
                if retry_at > deadline:
                    time.sleep(max(0.0, deadline - now))
                    return None
                time.sleep(max(0.0, retry_at - now))
                if not self._reopen():
                    continue
            try:
                image = self._grab_once()
            except _Dropped as exc:
                self._drop(str(exc))
                continue
            if image is not None:
                self._backoff.reset()
            return image
        return None

    def _drop(self, reason: str) -> None:
        """The source stopped delivering: release it and schedule a reopen."""
        self.stats.read_failures += 1
        self.stats.last_error = reason
        self._release()
        log.warning("%s: %s; reopening in %.1f s", self.spec.uri, reason, self._schedule_retry())

    def _schedule_retry(self) -> float:
        """Mark the source down; returns the seconds until the next attempt."""
        self._down = True
        return self._backoff.failed(time.monotonic())

    def _reopen(self) -> bool:
        """Open (or reopen) the source; on failure count it and schedule the next attempt."""
        was_down = self._down
        try:
            if self.spec.kind in ("folder", "synthetic"):
                self._files, self._index = _list_frames(self._folder), 0
            else:
                self._open_capture()
        except (cv2.error, OSError, ValueError) as exc:
            self.stats.open_failures += 1
            self.stats.last_error = str(exc)
            log.warning("%s: cannot open (%s); next try in %.1f s", self.spec.uri, exc, self._schedule_retry())
            return False
        self._down = False
        if was_down:
            self.stats.reconnects += 1
            log.info("%s: reopened after %d failure(s)", self.spec.uri, self.stats.read_failures)
        return True

    def _open_capture(self) -> None:
        cap = self._opener(self.spec)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise ValueError(f"cannot open {self.spec.target}")
        self._cap = cap
        self._rewound = False
        self.actual = {
            "width": float(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": float(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
        }
        if self.spec.width and self.actual["width"] and self.actual["width"] != self.spec.width:
            asked, got = (
                f"{self.spec.width}x{self.spec.height}",
                f"{self.actual['width']:.0f}x{self.actual['height']:.0f}",
            )
            log.info("%s: asked for %s, the driver gave %s (frames are resized)", self.spec.uri, asked, got)

    # -- kinds ----------------------------------------------------------------------------
    def _grab_once(self) -> np.ndarray | None:
        """One image; None when a file or folder has ended; raises _Dropped when the source
        stopped delivering."""
        if self._scene is not None:
            return self._pan()
        if self.spec.kind in ("folder", "synthetic"):
            return self._next_file()
        return self._read_capture()

    def _next_file(self) -> np.ndarray | None:
        skipped = 0
        while True:
            if self._index >= len(self._files):
                if not self.spec.loop:
                    self.ended = True
                    return None
                try:
                    self._files, self._index = _list_frames(self._folder), 0
                except ValueError as exc:  # folder emptied or removed: wait for it to come back
                    raise _Dropped(str(exc)) from None
            if skipped >= len(self._files):  # a whole pass without one readable image
                raise _Dropped(f"{self._folder}: no readable image ({self.stats.last_error})")
            path = self._files[self._index]
            self._index += 1
            try:
                image = read_frame(path)
                self._name = str(path)
                return image
            except FrameError as exc:  # a bad or vanished file is logged and skipped, never fatal
                skipped += 1
                self.stats.skipped_files += 1
                self.stats.last_error = str(exc)
                log.warning("skipped frame: %s", exc)

    def _pan(self) -> np.ndarray:
        """A 640x480 window drifting across the scene on a slow Lissajous path (a steady hand)."""
        assert self._scene is not None
        h, w = self._scene.shape[:2]
        out_w, out_h = self.spec.width or 640, self.spec.height or 480
        win_w, win_h = min(w, out_w), min(h, out_h)
        t = self._seq * 0.02
        x = int((w - win_w) * (0.5 + 0.5 * np.sin(t)))
        y = int((h - win_h) * (0.5 + 0.5 * np.sin(0.7 * t + 1.0)))
        return self._scene[y : y + win_h, x : x + win_w].copy()

    def _read_capture(self) -> np.ndarray | None:
        if self._cap is None:
            raise _Dropped("capture closed")
        ok, image = self._cap.read()
        if ok and image is not None:
            self._rewound = False
            return np.ascontiguousarray(image)
        if self.spec.kind != "video":
            raise _Dropped("camera delivered no frame")
        if not self.spec.loop:
            self.ended = True
            self._release()
            return None
        if self._rewound:  # nothing even right after reopening: the file went bad or away
            raise _Dropped(f"{self.spec.target}: no frame after rewinding")
        self._release()  # reopen rather than seek: also picks up a file replaced on disk
        try:
            self._open_capture()
        except (cv2.error, OSError, ValueError) as exc:
            raise _Dropped(str(exc)) from None
        self._rewound = True
        return self._read_capture()


class _Dropped(Exception):
    """The source stopped delivering (internal: turned into a logged reconnect)."""


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


def _load_scene(folder: Path) -> np.ndarray:
    scenes = sorted(folder.glob("*.jpg"))
    if not scenes:
        raise ValueError(f"no synthetic scene shipped in {folder}")
    return read_frame(scenes[0])


def open_source(
    uri: str,
    width: int = 0,
    height: int = 0,
    fps: float = 0.0,
    loop: bool | None = None,
    opener: Callable[[SourceSpec], Any] | None = None,
    stills: bool | None = None,
) -> FrameSource:
    """Open ``uri`` (see the module docstring) as a FrameSource; query options win over the
    arguments (None: the kind's default). Raises ValueError naming the URI when it cannot be
    parsed or does not exist."""
    return FrameSource(parse_uri(uri, width, height, fps, loop, stills), opener)
