"""The per-hair class model: is a located hair miniaturised (thin) or terminal?

A small CNN pair (bundle model ``hair_classes``, learnt from the `undersize` boxes of real 70x
trichoscopy by ``scalpedge train hair-classes``) reads a field of the frame around each hair the
segmenter located (``device.contracts.preprocess.hair_patches``) and gives P(miniaturised). On
held-out subjects (bundle 2026.12.05) the frame's thin share, the card's share scale times the
share of hairs at or above its threshold, misses the labels' by 0.044 on average, against 0.054
for the single 40 px network it replaced and 0.061 from diameters (docs/results/counts.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device.contracts.constants import HAIR_CLS_INPUT, HAIR_CLS_OUT
from device.contracts.preprocess import hair_patches
from device.models.backends import Backend, OrtBackend
from device.models.bundle import Bundle

__all__ = ["HairClassifier", "DEFAULT_THIN_PROBABILITY", "HAIR_CLASSES_MODEL"]

HAIR_CLASSES_MODEL = "hair_classes"  # its name in the model bundle
DEFAULT_THIN_PROBABILITY = 0.5  # when the graph records no threshold of its own


def _number(name: str, given: float | None, meta: dict[str, str], default: float) -> float:
    value = given if given is not None else meta.get(name)
    try:
        return default if value is None else float(value)
    except ValueError:
        raise ValueError(f"hair classes: {name} {value!r} is not a number") from None


class HairClassifier:
    """A loaded per-hair class graph: input ``HAIR_CLS_INPUT`` Bx3xPxP float32 (B and P are the
    graph's own: B = HAIR_PATCH_BATCH for graphs exported since 2026-12-05, 32 before; P =
    HAIR_PATCH_PX for one patch network, HAIR_FIELD_PX for the two-field pair), output
    ``HAIR_CLS_OUT`` Bx1 logits. The decision threshold on P(miniaturised) is the graph's
    metadata ``thin_probability`` and the frame's thin share is ``thin_share_scale`` x the share
    of hairs at or above it (both chosen on training subjects when it was trained; graphs before
    2026-12-05 have no scale: 1), unless given here (the bundle card's ``thresholds``: a
    TensorRT engine keeps no graph metadata)."""

    def __init__(
        self, backend: Backend, thin_probability: float | None = None, thin_share_scale: float | None = None
    ) -> None:
        self.backend = backend
        meta: dict[str, str] = getattr(backend, "metadata", {})
        self.thin_probability = _number("thin_probability", thin_probability, meta, DEFAULT_THIN_PROBABILITY)
        if not 0.0 < self.thin_probability < 1.0:
            raise ValueError(f"hair classes: thin_probability must lie in (0, 1), got {self.thin_probability}")
        self.thin_share_scale = _number("thin_share_scale", thin_share_scale, meta, 1.0)
        if not 0.0 < self.thin_share_scale <= 1.0:
            raise ValueError(f"hair classes: thin_share_scale must lie in (0, 1], got {self.thin_share_scale}")
        shape = backend.input_shapes.get(HAIR_CLS_INPUT)
        if shape is None or len(shape) != 4 or not shape[0] > 0 or shape[2] != shape[3] or shape[1] != 3:
            raise ValueError(f"hair classes: input {HAIR_CLS_INPUT!r} must be a static Bx3xPxP, got {shape}")
        self.batch, self.patch_px = int(shape[0]), int(shape[2])

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 1) -> HairClassifier:
        return cls(OrtBackend(path, threads=threads))

    @classmethod
    def from_card(cls, backend: Backend, card: dict[str, Any]) -> HairClassifier:
        """``backend`` with the threshold and share scale of its model card (or bundle manifest entry)."""
        thresholds = card.get("thresholds") or {}
        return cls(
            backend,
            thin_probability=thresholds.get("thin_probability"),
            thin_share_scale=thresholds.get("thin_share_scale"),
        )

    @classmethod
    def from_bundle(cls, bundle: Bundle, threads: int = 1) -> HairClassifier | None:
        """The bundle's per-hair class model on ONNX Runtime with the card's threshold, or None
        when the bundle has none (bundles before 2026-12-04: hairs are then classed by diameter)."""
        if HAIR_CLASSES_MODEL not in bundle.models:
            return None
        variant = bundle.select(HAIR_CLASSES_MODEL, "onnxruntime-cpu", "auto")
        return cls.from_card(OrtBackend(variant.path, threads=threads), bundle.model(HAIR_CLASSES_MODEL))

    @classmethod
    def shipped(cls, threads: int = 1) -> HairClassifier | None:
        """The default bundle's per-hair class model (``from_bundle``)."""
        from device.assets import default_bundle_path

        return cls.from_bundle(Bundle.open(default_bundle_path()), threads=threads)

    def probabilities(self, frame_bgr: np.ndarray, points: np.ndarray, um_per_px: float) -> np.ndarray:
        """(N,) float64 P(miniaturised) of the hairs at ``points`` ((N, 2) (x, y) px) of
        ``frame_bgr`` (HxWx3 uint8 BGR, pixels of ``um_per_px``)."""
        return self.patch_probabilities(hair_patches(frame_bgr, points, um_per_px, size=self.patch_px))

    def patch_probabilities(self, patches: np.ndarray) -> np.ndarray:
        """(N,) float64 P(miniaturised) of Nx3xPxP ``hair_patches`` (run in batches of the
        graph's static size; any N, 0 included)."""
        out = np.empty(len(patches), np.float64)
        batch = np.zeros((self.batch, 3, self.patch_px, self.patch_px), np.float32)
        for start in range(0, len(patches), self.batch):
            chunk = patches[start : start + self.batch]
            batch[:] = 0.0
            batch[: len(chunk)] = chunk
            logits = self.backend.run({HAIR_CLS_INPUT: batch}, [HAIR_CLS_OUT])[HAIR_CLS_OUT].reshape(-1)
            out[start : start + len(chunk)] = 1.0 / (1.0 + np.exp(-logits[: len(chunk)].astype(np.float64)))
        return out
