"""Frame preprocessing shared by training, export and the device runtime.

One definition of how a BGR frame becomes a network input, so a model never sees pixels
prepared differently on the device than in training.
"""

from __future__ import annotations

import cv2
import numpy as np

from device.contracts.constants import FRAME_HEIGHT, FRAME_WIDTH, PIXEL_MEAN, PIXEL_STD

__all__ = ["to_tensor_layout", "prepare_frame", "to_network_input"]

_MEAN = np.asarray(PIXEL_MEAN, np.float32).reshape(3, 1, 1)
_STD = np.asarray(PIXEL_STD, np.float32).reshape(3, 1, 1)


def to_tensor_layout(frame_bgr: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 BGR -> 3xHxW float32 normalised RGB ((x/255 - mean) / std)."""
    rgb = frame_bgr[:, :, ::-1].astype(np.float32) * (1.0 / 255.0)
    return np.ascontiguousarray((rgb.transpose(2, 0, 1) - _MEAN) / _STD)


def prepare_frame(frame_bgr: np.ndarray, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH) -> np.ndarray:
    """Resize any HxWx3 uint8 BGR frame to the model size (area interpolation when shrinking).

    The aspect ratio is not preserved: scanners deliver 4:3 frames, and callers that need
    physical units scale micrometres-per-pixel by the same factors.
    """
    if frame_bgr.shape[:2] == (height, width):
        return frame_bgr
    shrink = frame_bgr.shape[0] > height or frame_bgr.shape[1] > width
    return cv2.resize(frame_bgr, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_network_input(frame_bgr: np.ndarray, height: int = FRAME_HEIGHT, width: int = FRAME_WIDTH) -> np.ndarray:
    """HxWx3 uint8 BGR (any size) -> 1x3xheightxwidth float32 network input."""
    return to_tensor_layout(prepare_frame(frame_bgr, height, width))[None]
