"""The segmenter interface shared by learned models and classical baselines.

A segmenter maps one HxWx3 uint8 BGR frame to per-pixel hair probabilities (and, for models
trained to locate hair instances, a per-hair centre heatmap, centre lines or strand-end
density). Everything downstream (hair metrics, overlays, evaluation) depends only on this
protocol. Which of a model's outputs counts hairs (``CountStrategy``) is decided once, from the
model's output names, when the model loads; every ``SegOutput`` it produces carries that
decision, so the live count, the diagnosis and evaluation all count the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from device.contracts.constants import MASK_THRESHOLD, SEG_OUT_CENTRE, SEG_OUT_DENSITY, SEG_OUT_ENDS, SEG_OUT_LINES

__all__ = ["CountStrategy", "SegOutput", "Segmenter"]


class CountStrategy(enum.Enum):
    """Which output counts hairs; the value is ``HairMetrics.count_source``."""

    DENSITY = "density"  # the sum of a hair density learnt from real labelled hairs (``SegOutput.hairs``)
    ENDS = "ends"  # half the strand ends of an end-density output (``SegOutput.hairs``)
    CENTRELINES = "centrelines"  # strands of the centre-line map inside the hair mask
    CENTRES = "centres"  # peaks of the centre heatmap that lie on the hair mask
    SKELETON = "skeleton"  # strands of the hair mask's skeleton (no instance output)

    @classmethod
    def for_outputs(cls, output_names: Collection[str]) -> CountStrategy:
        """The strategy of a model with these output names: hair density, else end density, else
        centre lines, else centre heatmap, else the mask's skeleton."""
        by_precedence = (
            (SEG_OUT_DENSITY, cls.DENSITY),
            (SEG_OUT_ENDS, cls.ENDS),
            (SEG_OUT_LINES, cls.CENTRELINES),
            (SEG_OUT_CENTRE, cls.CENTRES),
        )
        return next((strategy for name, strategy in by_precedence if name in output_names), cls.SKELETON)


_NEEDS = {
    CountStrategy.DENSITY: "density",
    CountStrategy.ENDS: "hairs",
    CountStrategy.CENTRELINES: "lines",
    CountStrategy.CENTRES: "centre",
}


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
    count_strategy: how hairs are counted, as the segmenter decided when it loaded; the output
        it names must be present (ValueError otherwise).
    """

    prob: np.ndarray
    centre: np.ndarray | None = None
    lines: np.ndarray | None = None
    hairs: float | None = None
    hairs_visible: float | None = None
    count_strategy: CountStrategy = CountStrategy.SKELETON
    density: np.ndarray | None = None
    thin_hairs: float | None = None

    def __post_init__(self) -> None:
        needed = _NEEDS.get(self.count_strategy)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"count strategy {self.count_strategy.value!r} needs the {needed!r} output")

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
