"""The segmenter interface shared by learned models and classical baselines.

A segmenter maps one HxWx3 uint8 BGR frame to per-pixel hair probabilities (and, for models
trained to locate hair instances, a per-hair centre heatmap). Everything downstream (hair
metrics, overlays, evaluation) depends only on this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from device.contracts.constants import MASK_THRESHOLD

__all__ = ["SegOutput", "Segmenter"]


@dataclass(frozen=True)
class SegOutput:
    """Result of segmenting one frame.

    prob: HxW float32 in [0, 1], P(hair) per pixel, same size as the input frame.
    centre: HxW float32 in [0, 1] per-hair centre heatmap (peaks mark one hair each), or None.
    lines: HxW float32 in [0, 1], P(on a hair's centre line), or None.
    hairs: number of hairs read off a strand-end density output (half its ends, counted as a
        counting frame: ``device.models.onnx_segmenter.hairs_from_ends``), or None. Segmenters
        without an instance output (classical baselines) leave all three None.
    hairs_visible: from the same output, every visible strand including those the frame's
        edge cuts (each as one hair), or None.
    """

    prob: np.ndarray
    centre: np.ndarray | None = None
    lines: np.ndarray | None = None
    hairs: float | None = None
    hairs_visible: float | None = None

    def mask(self, threshold: float = MASK_THRESHOLD) -> np.ndarray:
        """HxW bool hair mask at ``threshold``."""
        return self.prob >= threshold


@runtime_checkable
class Segmenter(Protocol):
    """Anything that segments hair in a BGR frame."""

    name: str

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        """frame_bgr: HxWx3 uint8 BGR; returns probabilities at the frame's own size."""
        ...
