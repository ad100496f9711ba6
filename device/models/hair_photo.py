"""The hair-photo segmenter: where hair is in an ordinary photo of a head (bundle model
``hair_photo``), for the overview photo a technician takes before the microscope close-ups.

Trained on Figaro-1k photos by ``scalpedge train hair-photo`` (the model card says which of the
compared networks won and by how much). Input: the whole photo resized to HAIR_PHOTO_SIDE square
(``device.contracts.preprocess.photo_input``); the logit map is resized back to the photo's
pixels (linear), so the mask has the photo's size and aspect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.contracts.constants import HAIR_PHOTO_INPUT, HAIR_PHOTO_OUT
from device.contracts.preprocess import photo_input
from device.models.backends import Backend, OrtBackend
from device.models.bundle import Bundle
from device.models.bundle_trust import BundleError

__all__ = ["HAIR_PHOTO_MODEL", "HairPhotoSegmenter", "PhotoMask"]

HAIR_PHOTO_MODEL = "hair_photo"  # its name in the model bundle


@dataclass(frozen=True)
class PhotoMask:
    """``mask``: HxW bool, hair = True, the photo's size; ``probability``: HxW float32 P(hair)."""

    mask: np.ndarray
    probability: np.ndarray

    @property
    def coverage(self) -> float:
        """Share of the photo's pixels that are hair, [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0


class HairPhotoSegmenter:
    """A loaded hair-photo graph: ``HAIR_PHOTO_INPUT`` 1x3xSxS float32 -> ``HAIR_PHOTO_OUT``
    1x1xSxS logits (S from the graph's input shape)."""

    def __init__(self, backend: Backend) -> None:
        shapes = getattr(backend, "input_shapes", {})
        if HAIR_PHOTO_INPUT not in shapes:
            raise ValueError(f"not a hair-photo model: inputs {sorted(shapes)}, expected {HAIR_PHOTO_INPUT!r}")
        shape = shapes[HAIR_PHOTO_INPUT]
        if len(shape) != 4 or shape[2] != shape[3] or shape[2] <= 0:
            raise ValueError(f"hair-photo model: input {HAIR_PHOTO_INPUT!r} must be 1x3xSxS, got {shape}")
        self.backend = backend
        self.side = int(shape[2])

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 2) -> HairPhotoSegmenter:
        return cls(OrtBackend(path, threads=threads))

    @classmethod
    def from_bundle(cls, bundle: Bundle, precision: str = "auto", threads: int = 2) -> HairPhotoSegmenter:
        """The bundle's hair-photo model on ONNX Runtime; BundleError when the bundle has none."""
        if HAIR_PHOTO_MODEL not in bundle.models:
            raise BundleError(f"bundle {bundle.root} ({bundle.version}) has no {HAIR_PHOTO_MODEL!r} model")
        variant = bundle.select(HAIR_PHOTO_MODEL, "onnxruntime-cpu", precision)
        return cls(OrtBackend(variant.path, threads=threads))

    def segment(self, image_bgr: np.ndarray) -> PhotoMask:
        """HxWx3 uint8 BGR photo -> its hair mask and probabilities at HxW."""
        logits = self.backend.run({HAIR_PHOTO_INPUT: photo_input(image_bgr, self.side)}, [HAIR_PHOTO_OUT])
        small = np.asarray(logits[HAIR_PHOTO_OUT], np.float32).reshape(self.side, self.side)
        h, w = image_bgr.shape[:2]
        full = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        prob = (1.0 / (1.0 + np.exp(-np.clip(full, -30, 30)))).astype(np.float32)
        return PhotoMask(full > 0.0, prob)
