"""Reading frames from disk with clear errors for bad input.

An image's size is read from its header before it is decoded, so a huge file (a panorama, a
decompression bomb) is refused with its size in milliseconds instead of being decoded into
hundreds of megabytes first.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

__all__ = [
    "FrameError",
    "read_frame",
    "as_bgr",
    "image_size",
    "list_images",
    "skipped_subfolders",
    "IMAGE_SUFFIXES",
    "MAX_MEGAPIXELS",
    "MAX_PIXELS",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 32  # px; smaller frames cannot hold a measurable hair
# Larger images are refused before decoding: a 50 MP frame is ~150 MB decoded; a scanner frame
# is under 1 MP, a phone photo about 12-48 MP.
MAX_MEGAPIXELS = 50
MAX_PIXELS = MAX_MEGAPIXELS * 1_000_000


class FrameError(ValueError):
    """A frame that cannot be used, with the reason in the message."""


def _too_large(source: str, width: int, height: int) -> FrameError:
    return FrameError(
        f"{source}: image {width}x{height} ({width * height / 1e6:.1f} MP) is too large "
        f"(limit {MAX_MEGAPIXELS} MP); shrink it first"
    )


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
        raise _too_large(source, w, h)
    return np.ascontiguousarray(image)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return (width, height) if height else None  # height 0: set later by a DNL segment
        i += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first image file directory of a (classic) TIFF."""
    order = "<" if data[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset : offset + 2])
    found: dict[int, int] = {}
    for k in range(count):
        entry = data[offset + 2 + 12 * k : offset + 14 + 12 * k]
        if len(entry) < 12:
            return None
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            fmt = "H" if kind == 3 else "I"
            found[tag] = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) px of an encoded PNG, JPEG, BMP, TIFF or WebP image, read from its
    header without decoding it; None for another format or a header that cannot be read
    (the decoder then decides)."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:2] == b"BM" and len(data) >= 26:
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                w, h = struct.unpack("<HH", data[18:22])
                return w, h
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)  # negative height: rows stored top-down
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
    except struct.error:  # a truncated header
        return None
    return None


def read_frame(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 BGR; raises FrameError naming the file on failure.
    An image over MAX_MEGAPIXELS (by its header) is refused as too large, without decoding."""
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"{path}: no such file")
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise FrameError(f"{path}: cannot read ({exc.strerror or exc})") from None
    size = image_size(data[:65536].tobytes()) if data.size else None
    if size is None and data.size > 65536 and data[:2].tobytes() in (b"\xff\xd8", b"II", b"MM"):
        size = image_size(data.tobytes())  # a JPEG's frame header after large metadata, a TIFF's IFD at the end
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise _too_large(str(path), *size)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise FrameError(f"{path}: not a readable image")
    return as_bgr(image, str(path))


def _holds_images(folder: Path, exclude: tuple[Path, ...]) -> bool:
    return any(
        f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() and not _excluded(f, exclude) for f in folder.rglob("*")
    )


def _excluded(path: Path, exclude: tuple[Path, ...]) -> bool:
    resolved = path.resolve()
    return any(resolved == e or e in resolved.parents for e in exclude)


def list_images(paths: list[str | Path], recursive: bool = False, exclude: tuple[str | Path, ...] = ()) -> list[Path]:
    """Expand files and folders into image paths (each folder's sorted; with ``recursive``, its
    subfolders' too, hidden ones and those under ``exclude`` left out). Raises FrameError for a
    path that does not exist or a folder without images (saying when its subfolders hold some)."""
    skip = tuple(Path(e).resolve() for e in exclude)
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            candidates = p.rglob("*") if recursive else p.iterdir()
            files = sorted(
                f
                for f in candidates
                if f.suffix.lower() in IMAGE_SUFFIXES
                and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts[:-1])
                and not _excluded(f, skip)
            )
            if not files:
                nested = skipped_subfolders([p], exclude=tuple(skip)) if not recursive else []
                hint = f"; {len(nested)} subfolders hold some (list them recursively)" if nested else ""
                raise FrameError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}){hint}")
            found.extend(files)
        elif p.exists():
            found.append(p)
        else:
            raise FrameError(f"{p}: no such file or folder")
    return found


def skipped_subfolders(paths: list[str | Path], exclude: tuple[str | Path, ...] = ()) -> list[Path]:
    """The subfolders (not hidden, not under ``exclude``) of the folders among ``paths`` that hold
    images at any depth: what a non-recursive ``list_images`` leaves out."""
    skip = tuple(Path(e).resolve() for e in exclude)
    return [
        sub
        for p in map(Path, paths)
        if p.is_dir()
        for sub in sorted(p.iterdir())
        if sub.is_dir() and not sub.name.startswith(".") and not _excluded(sub, skip) and _holds_images(sub, skip)
    ]
