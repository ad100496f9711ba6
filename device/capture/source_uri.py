"""Source URIs: parsing into a ``SourceSpec``, the Jetson CSI GStreamer pipeline, and the
default OpenCV opener that negotiates the capture format. See ``device.capture.sources`` for the URI
table; this module holds the pure parts so they can be tested without a camera."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlparse

import cv2

from device.capture.imageio import IMAGE_SUFFIXES

__all__ = ["SourceSpec", "parse_uri", "csi_pipeline", "open_capture", "VIDEO_SUFFIXES", "SYNTHETIC_CLIPS"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
OPTION_KEYS = ("width", "height", "fps", "loop", "stills")
# synthetic://<name>: "clip" plays device/assets/samples/clip/, "scene" pans across device/assets/scene/
SYNTHETIC_CLIPS = ("clip", "scene")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class SourceSpec:
    """kind: v4l2 | csi | rtsp | video | folder | synthetic; target: device path or index,
    CSI sensor id, URL, video file, image folder or file, synthetic clip name; width, height
    (px) and fps: requested (0 = the source's own); loop: repeat files, folders and clips;
    stills: the frames are independent photographs (a folder's default; ``?stills=0`` marks a
    folder of a clip's frames), so no motion is measured between them."""

    uri: str
    kind: str
    target: str
    width: int = 0
    height: int = 0
    fps: float = 0.0
    loop: bool = False
    stills: bool = False


def parse_uri(
    uri: str,
    width: int = 0,
    height: int = 0,
    fps: float = 0.0,
    loop: bool | None = None,
    stills: bool | None = None,
) -> SourceSpec:
    """Turn a source URI into a spec. Options in the query (width, height, fps, loop, stills) win
    over the arguments; loop=None means the kind's default (synthetic clips loop, files do not),
    stills=None too (a folder or image file holds stills, nothing else does).
    Raises ValueError naming the URI for malformed URIs, unknown schemes and missing paths."""
    text = uri.strip()
    if not text:
        raise ValueError("empty source URI")
    parsed = urlparse(text)
    pairs = parse_qsl(parsed.query, keep_blank_values=True)
    query = {k: v for k, v in pairs if k in OPTION_KEYS}
    try:
        width = int(query.get("width", width))
        height = int(query.get("height", height))
        fps = float(query.get("fps", fps))
    except ValueError as exc:
        raise ValueError(f"source {uri!r}: bad option value ({exc})") from None
    if width < 0 or height < 0 or fps < 0 or (width == 0) != (height == 0):
        raise ValueError(f"source {uri!r}: width and height go together and must be >= 0, fps >= 0")
    looping = loop if "loop" not in query else query["loop"].lower() not in _FALSE
    independent = stills if "stills" not in query else query["stills"].lower() not in _FALSE
    scheme = parsed.scheme.lower()

    def spec(kind: str, target: str, default_loop: bool = False) -> SourceSpec:
        still = kind == "folder" and (independent is None or independent)
        return SourceSpec(uri, kind, target, width, height, fps, default_loop if looping is None else looping, still)

    if text.split("?")[0].isdigit():
        return spec("v4l2", text.split("?")[0])
    if scheme == "v4l2":
        device = parsed.path or parsed.netloc
        if not device or not (device.isdigit() or device.startswith("/dev/")):
            raise ValueError(f"source {uri!r}: expected v4l2:///dev/videoN or v4l2://N")
        return spec("v4l2", device)
    if scheme == "csi":
        sensor = parsed.netloc or parsed.path.strip("/") or "0"
        if not sensor.isdigit():
            raise ValueError(f"source {uri!r}: CSI sensor id must be a number")
        return spec("csi", sensor)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        if not parsed.netloc:
            raise ValueError(f"source {uri!r}: a stream URL needs a host")
        extra = [(k, v) for k, v in pairs if k not in OPTION_KEYS]  # the camera's own query stays
        return spec("rtsp", parsed._replace(query=urlencode(extra)).geturl())
    if scheme == "synthetic":
        name = parsed.netloc or parsed.path.strip("/") or "clip"
        if name not in SYNTHETIC_CLIPS:
            raise ValueError(f"source {uri!r}: unknown synthetic clip {name!r} ({', '.join(SYNTHETIC_CLIPS)})")
        return spec("synthetic", name, default_loop=True)
    if scheme not in ("", "file") and not (len(scheme) == 1 and text[1:3] in (":\\", ":/")):  # C:\ paths
        raise ValueError(f"source {uri!r}: unknown scheme {scheme!r} (v4l2, csi, rtsp, file, synthetic)")
    path = Path(parsed.path if scheme == "file" else text.split("?")[0])
    if scheme == "file" and parsed.netloc not in ("", "localhost"):
        path = Path(parsed.netloc + parsed.path)  # file://relative/dir
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
    """GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc, NVMM buffers) converted to
    BGR for OpenCV's appsink; drops stale frames so ``read`` always gets the newest."""
    if sensor_id < 0 or width <= 0 or height <= 0 or fps < 0 or not 0 <= flip <= 7:
        raise ValueError(f"bad CSI pipeline settings: sensor {sensor_id}, {width}x{height} @ {fps} fps, flip {flip}")
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={round(fps or 30)}/1 ! "
        f"nvvidconv flip-method={flip} ! video/x-raw, format=BGRx ! "
        "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1"
    )


def open_capture(spec: SourceSpec) -> Any:
    """The default opener: an OpenCV VideoCapture for a capture kind (v4l2, csi, rtsp, video),
    with the requested width, height and fps asked for through ``cv2.CAP_PROP_*`` on V4L2 (the
    CSI pipeline carries them itself). The caller checks ``isOpened()`` and reads back what the
    driver granted."""
    if spec.kind == "csi":
        pipeline = csi_pipeline(int(spec.target), spec.width or 640, spec.height or 480, spec.fps or 30.0)
        return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
    if spec.kind == "v4l2":
        target: Any = int(spec.target) if spec.target.isdigit() else spec.target
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if cap.isOpened():
            for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, spec.width), (cv2.CAP_PROP_FRAME_HEIGHT, spec.height)):
                if value:
                    cap.set(prop, float(value))
            if spec.fps:
                cap.set(cv2.CAP_PROP_FPS, spec.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
        return cap
    if spec.kind in ("rtsp", "video"):
        return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG)
    raise ValueError(f"source {spec.uri!r}: {spec.kind} is not an OpenCV capture")


def synthetic_folder(name: str) -> Path:
    """The shipped folder behind ``synthetic://<name>``."""
    from device.assets import ASSETS

    return ASSETS / ("samples/clip" if name == "clip" else name)
