"""Reading frames from disk with clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["FrameError", "read_frame", "as_bgr", "list_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 32  # px; smaller frames cannot hold a measurable hair
MAX_PIXELS = 50_000_000  # refuse decompression bombs and mistaken inputs


class FrameError(ValueError):
    """A frame that cannot be used, with the reason in the message."""


def as_bgr(image: np.ndarray, source: str = "frame") -> np.ndarray:
    """Any decoded image -> HxWx3 uint8 BGR.

    Accepts HxW (grayscale), HxWx1, HxWx3 (BGR) and HxWx4 (BGRA, composited on black), uint8
    or uint16 (scaled to 8 bit). Raises FrameError for anything else or sizes outside
    [MIN_SIDE, MAX_PIXELS].
    """
    if image.dtype == np.uint16:
        image = (image / 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise FrameError(f"{source}: unsupported pixel type {image.dtype} (need 8- or 16-bit)")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3].astype(np.float32) * alpha).astype(np.uint8)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise FrameError(f"{source}: unsupported image shape {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise FrameError(f"{source}: frame {w}x{h} is too small (need at least {MIN_SIDE} px a side)")
    if h * w > MAX_PIXELS:
        raise FrameError(f"{source}: frame {w}x{h} is too large (over {MAX_PIXELS} pixels)")
    return np.ascontiguousarray(image)


def read_frame(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR; raises FrameError naming the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: no such file")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise FrameError(f"{path}: not a readable image")
    return as_bgr(image, str(path))


def list_images(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive, sorted) into image paths; raises FrameError
    for a path that does not exist or a folder without images."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise FrameError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif p.exists():
            found.append(p)
        else:
            raise FrameError(f"{p}: no such file or folder")
    return found
