"""Frame preprocessing shared by training, export and the device runtime.

One definition of how a BGR frame becomes a network input, so a model never sees pixels
prepared differently on the device than in training.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.contracts.constants import (
    CLS_PIXEL_MEAN,
    CLS_PIXEL_STD,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    HAIR_PATCH_PX,
    HAIR_PHOTO_SIDE,
    MODEL_UM_PER_PX,
    PIXEL_MEAN,
    PIXEL_STD,
)

__all__ = [
    "to_tensor_layout",
    "to_classifier_layout",
    "crop_box",
    "source_px_per_frame_px",
    "prepare_frame",
    "to_network_input",
    "hair_patches",
    "photo_input",
]


# (x / 255 - mean) / std as one multiply-add per RGB channel: x * scale + offset
def _affine(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return (1.0 / (255.0 * s)).astype(np.float32), (-m / s).astype(np.float32)


_SEG_AFFINE = _affine(PIXEL_MEAN, PIXEL_STD)  # the segmenters, refiners and per-hair class model
_CLS_AFFINE = _affine(CLS_PIXEL_MEAN, CLS_PIXEL_STD)  # ImageNet-trunk classifiers (about [-1, 1])


def _normalised_planes(bgr: np.ndarray, affine: tuple[np.ndarray, np.ndarray] = _SEG_AFFINE) -> np.ndarray:
    """... x H x W x 3 BGR (uint8) -> ... x 3 x H x W float32 normalised RGB ((x/255 - mean) /
    std, ``affine`` = (scale, offset) per RGB channel). Written one channel plane at a time into
    the output, in place: at 640x480 that is 0.5 ms where a reversed, transposed float copy took
    7-10 ms (2-core CPU, 2026-12-06)."""
    scale, offset = affine
    out = np.empty((*bgr.shape[:-3], 3, *bgr.shape[-3:-1]), np.float32)
    for c in range(3):
        plane = out[..., c, :, :]
        plane[...] = bgr[..., 2 - c]
        plane *= scale[c]
        plane += offset[c]
    return out


def to_classifier_layout(image_bgr: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR -> 1x3xHxW float32 RGB normalised with CLS_PIXEL_MEAN/STD (the
    ImageNet-trunk classifiers' input; about [-1, 1])."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
    return _normalised_planes(image_bgr, _CLS_AFFINE)[None]


def to_tensor_layout(frame_bgr: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR -> 3xHxW float32 normalised RGB ((x/255 - mean) / std)."""
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {frame_bgr.shape}")
    return _normalised_planes(frame_bgr)


def crop_box(
    height: int, width: int, frame_height: int = FRAME_HEIGHT, frame_width: int = FRAME_WIDTH
) -> tuple[int, int, int, int]:
    """(x0, y0, w, h): the centred region of a ``height`` x ``width`` image with the frame's
    aspect ratio (FRAME_WIDTH:FRAME_HEIGHT), as large as fits. A 4:3 image is kept whole; a
    wider one loses columns on both sides, a taller one rows at the top and bottom."""
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image {height}x{width}")
    if width * frame_height > height * frame_width:  # too wide
        w = max(1, round(height * frame_width / frame_height))
        return (width - w) // 2, 0, w, height
    h = max(1, round(width * frame_height / frame_width))
    return 0, (height - h) // 2, width, h


def source_px_per_frame_px(source_shape: tuple[int, ...], frame_height: int = FRAME_HEIGHT) -> float:
    """Pixels of an image of ``source_shape`` (H, W, ...) per pixel of the frame ``prepare_frame``
    makes of it (the same in both axes: the crop keeps the aspect ratio)."""
    _, _, _, h = crop_box(source_shape[0], source_shape[1])
    return h / frame_height


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = image.shape[0] > height or image.shape[1] > width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def prepare_frame(frame_bgr: np.ndarray, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH) -> np.ndarray:
    """Any HxWx3 uint8 BGR image -> the camera geometry, ``height`` x ``width``: centre-cropped to
    the frame's aspect ratio (``crop_box``; never stretched, so hair keeps its shape and one
    pixel scale holds in both axes), then resized (area interpolation when shrinking). Callers
    that need physical units scale micrometres per pixel by ``source_px_per_frame_px``."""
    if frame_bgr.shape[:2] == (height, width):
        return frame_bgr
    x0, y0, w, h = crop_box(frame_bgr.shape[0], frame_bgr.shape[1], height, width)
    return _resize(frame_bgr[y0 : y0 + h, x0 : x0 + w], height, width)


def to_network_input(frame_bgr: np.ndarray, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH) -> np.ndarray:
    """HxWx3 uint8 BGR -> 1x3xheightxwidth float32 network input. The whole image is resized
    (a segmenter maps its output back onto the same pixels); the device hands it frames that
    ``prepare_frame`` already brought to the network's size."""
    return to_tensor_layout(_resize(frame_bgr, height, width))[None]


def hair_patches(frame_bgr: np.ndarray, points: np.ndarray, um_per_px: float, size: int = HAIR_PATCH_PX) -> np.ndarray:
    """The per-hair class model's input: for each (x, y) px of ``points`` ((N, 2)) the square of
    ``frame_bgr`` (HxWx3 uint8 BGR, pixels of ``um_per_px``) centred on it that spans
    ``size`` x MODEL_UM_PER_PX micrometres, resampled to ``size`` x ``size`` px and normalised
    like every network input (``to_tensor_layout``). Beyond the frame's edge it is mirrored.
    Returns Nx3xsizexsize float32."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if not um_per_px > 0:
        raise ValueError(f"um_per_px must be > 0, got {um_per_px}")
    if not len(pts):
        return np.empty((0, 3, size, size), np.float32)
    crops = np.empty((len(pts), size, size, 3), np.uint8)
    side = size * MODEL_UM_PER_PX / um_per_px  # frame px the patch spans
    pad = int(np.ceil(side)) + 1
    big = cv2.copyMakeBorder(frame_bgr, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    h, w = frame_bgr.shape[:2]
    for i, (x, y) in enumerate(pts):
        cx, cy = float(np.clip(x, 0, w - 1)) + pad, float(np.clip(y, 0, h - 1)) + pad
        if abs(side - size) < 1e-6:  # the model's own scale: a plain crop
            x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
            patch = big[y0 : y0 + size, x0 : x0 + size]
        else:
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            n = int(round(side))
            patch = cv2.resize(
                big[y0 : y0 + n, x0 : x0 + n],
                (size, size),
                interpolation=cv2.INTER_AREA if n > size else cv2.INTER_LINEAR,
            )
        crops[i] = patch
    return _normalised_planes(crops)  # one normalisation for all patches, as for a frame


def photo_input(image_bgr: np.ndarray, side: int = HAIR_PHOTO_SIDE) -> np.ndarray:
    """The hair-photo segmenter's input: any HxWx3 uint8 BGR photo -> 1x3xsidexside float32 RGB,
    the whole photo resized (area when shrinking, linear when growing; aspect not kept) and
    normalised with CLS_PIXEL_MEAN/STD (``to_classifier_layout``)."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"photo_input: expected an HxWx3 BGR image, got shape {image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    interp = cv2.INTER_AREA if h * w > side * side else cv2.INTER_LINEAR
    return to_classifier_layout(cv2.resize(image_bgr, (side, side), interpolation=interp))
