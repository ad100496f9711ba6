"""The per-hair class model: is a located hair miniaturised (thin) or terminal?

A small CNN (bundle model ``hair_classes``, learnt from the `undersize` boxes of real 70x
trichoscopy by ``scalpedge train hair-classes``) reads a patch of the frame around each hair the
segmenter located (``device.contracts.preprocess.hair_patches``) and gives P(miniaturised). On
held-out subjects it finds `undersize` hairs with precision 0.73 / recall 0.62 where the earlier
diameter cut got 0.57 / 0.60, and the frame's thin share misses the labels' by 0.054 on average
against 0.061 from diameters (docs/results/counts.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device.contracts.constants import HAIR_CLS_INPUT, HAIR_CLS_OUT, HAIR_PATCH_BATCH, HAIR_PATCH_PX
from device.contracts.preprocess import hair_patches
from device.models.backends import Backend, OrtBackend
from device.models.bundle import Bundle

__all__ = ["HairClassifier", "DEFAULT_THIN_PROBABILITY", "HAIR_CLASSES_MODEL"]

HAIR_CLASSES_MODEL = "hair_classes"  # its name in the model bundle
DEFAULT_THIN_PROBABILITY = 0.5  # when the graph records no threshold of its own


class HairClassifier:
    """A loaded per-hair class graph: input ``HAIR_CLS_INPUT`` Bx3xPxP float32 (B =
    HAIR_PATCH_BATCH, P = HAIR_PATCH_PX), output ``HAIR_CLS_OUT`` Bx1 logits. The decision
    threshold on P(miniaturised) is the graph's metadata ``thin_probability`` (chosen on training
    subjects when it was trained), unless ``thin_probability`` is given (the bundle card's
    ``thresholds``: a TensorRT engine keeps no graph metadata)."""

    def __init__(self, backend: Backend, thin_probability: float | None = None) -> None:
        self.backend = backend
        meta: dict[str, str] = getattr(backend, "metadata", {})
        value = thin_probability if thin_probability is not None else meta.get("thin_probability")
        try:
            self.thin_probability = DEFAULT_THIN_PROBABILITY if value is None else float(value)
        except ValueError:
            raise ValueError(f"hair classes: thin_probability {value!r} is not a number") from None
        if not 0.0 < self.thin_probability < 1.0:
            raise ValueError(f"hair classes: thin_probability must lie in (0, 1), got {self.thin_probability}")

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 1) -> HairClassifier:
        return cls(OrtBackend(path, threads=threads))

    @classmethod
    def from_card(cls, backend: Backend, card: dict[str, Any]) -> HairClassifier:
        """``backend`` with the threshold of its model card (or bundle manifest entry)."""
        return cls(backend, thin_probability=(card.get("thresholds") or {}).get("thin_probability"))

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
        patches = hair_patches(frame_bgr, points, um_per_px)
        out = np.empty(len(patches), np.float64)
        batch = np.zeros((HAIR_PATCH_BATCH, 3, HAIR_PATCH_PX, HAIR_PATCH_PX), np.float32)
        for start in range(0, len(patches), HAIR_PATCH_BATCH):
            chunk = patches[start : start + HAIR_PATCH_BATCH]
            batch[:] = 0.0
            batch[: len(chunk)] = chunk
            logits = self.backend.run({HAIR_CLS_INPUT: batch}, [HAIR_CLS_OUT])[HAIR_CLS_OUT].reshape(-1)
            out[start : start + len(chunk)] = 1.0 / (1.0 + np.exp(-logits[: len(chunk)].astype(np.float64)))
        return out
