"""A learned segmenter run by an inference backend (ONNX Runtime by default)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from device.contracts.constants import (
    DENSITY_SCALE,
    END_DENSITY_SCALE,
    END_EDGE_PX,
    SEG_INPUT,
    SEG_OUT_CENTRE,
    SEG_OUT_DENSITY,
    SEG_OUT_ENDS,
    SEG_OUT_LINES,
    SEG_OUT_MASK,
    SEG_OUT_THIN,
)
from device.contracts.preprocess import to_network_input
from device.models.backends import Backend, OrtBackend
from device.models.segmentation import CountStrategy, SegOutput

__all__ = ["ModelSegmenter", "hairs_from_ends"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


class ModelSegmenter:
    """Runs a segmentation graph (input ``SEG_INPUT``, output ``SEG_OUT_MASK`` and optionally
    an instance output, ``SEG_OUT_DENSITY`` (with ``SEG_OUT_THIN``), ``SEG_OUT_CENTRE``,
    ``SEG_OUT_LINES`` or ``SEG_OUT_ENDS``) on frames of any size: frames are resized to the
    graph's static input size and the probabilities resized back; a hair or end density is
    summed at the graph's size into a hair count.

    ``count_strategy``: which output counts hairs, chosen here from the graph's outputs
    (``CountStrategy.for_outputs``) and carried by every ``SegOutput`` this segmenter returns."""

    def __init__(self, backend: Backend, name: str = "student") -> None:
        if SEG_INPUT not in backend.input_shapes:
            raise ValueError(f"model has no input named {SEG_INPUT!r} (has {sorted(backend.input_shapes)})")
        self.backend = backend
        self.name = name
        _, _, self.height, self.width = backend.input_shapes[SEG_INPUT]
        extra = (SEG_OUT_CENTRE, SEG_OUT_LINES, SEG_OUT_ENDS, SEG_OUT_DENSITY, SEG_OUT_THIN)
        self.extra = [n for n in extra if n in backend.output_names]
        self.count_strategy = CountStrategy.for_outputs(backend.output_names)

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 2, name: str | None = None) -> ModelSegmenter:
        return cls(OrtBackend(path, threads=threads), name=name or Path(path).stem)

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        """frame_bgr: HxWx3 uint8 BGR -> SegOutput at the frame's own size."""
        h, w = frame_bgr.shape[:2]
        x = to_network_input(frame_bgr, self.height, self.width)
        out = self.backend.run({SEG_INPUT: x}, [SEG_OUT_MASK, *self.extra])
        ends = out.pop(SEG_OUT_ENDS, None)
        hairs = None if ends is None else hairs_from_ends(ends[0, 0])
        visible = None if ends is None else hairs_from_ends(ends[0, 0], edge_px=0)
        raw_density, raw_thin = out.pop(SEG_OUT_DENSITY, None), out.pop(SEG_OUT_THIN, None)
        density = thin_hairs = None
        if raw_density is not None:
            density = np.maximum(raw_density[0, 0], 0.0) / DENSITY_SCALE  # hairs per network pixel
            hairs = max(0.0, float(raw_density[0, 0].sum(dtype=np.float64)) / DENSITY_SCALE)
            if raw_thin is not None:
                thin = float(raw_thin[0, 0].sum(dtype=np.float64)) / DENSITY_SCALE
                thin_hairs = min(max(thin, 0.0), hairs)
        maps = {name: _sigmoid(value[0, 0]) for name, value in out.items()}
        if (h, w) != (self.height, self.width):
            maps = {k: cv2.resize(v, (w, h), interpolation=cv2.INTER_LINEAR) for k, v in maps.items()}
            if density is not None:  # resampled, then rescaled so it still sums to the hairs
                density = cv2.resize(density, (w, h), interpolation=cv2.INTER_LINEAR)
                density *= (self.height * self.width) / (h * w)
        return SegOutput(
            prob=maps[SEG_OUT_MASK],
            centre=maps.get(SEG_OUT_CENTRE),
            lines=maps.get(SEG_OUT_LINES),
            hairs=hairs,
            hairs_visible=visible,
            density=density,
            thin_hairs=thin_hairs,
            count_strategy=self.count_strategy,
        )


def hairs_from_ends(density: np.ndarray, edge_px: int = END_EDGE_PX) -> float:
    """Hairs in a frame from its HxW strand-end density (``SEG_OUT_ENDS``, at the network's
    size), as a counting frame: every hair has two ends of mass END_DENSITY_SCALE, so hairs per
    area = ends per area / 2. Ends within ``edge_px`` of the frame's edge are left out (that is
    where the network marks strands cut by the edge, which are not hair ends), and the rest is
    scaled to the frame's area. A hair cut by the edge thus counts one half on average, and the
    count per area is unbiased however the frame cuts the hair. The raw sum (small negative and
    positive noise cancel); never below 0."""
    d = np.asarray(density)
    h, w = d.shape
    if not 0 <= 2 * edge_px < min(h, w):
        raise ValueError(f"edge_px={edge_px} leaves nothing of a {h}x{w} map")
    inner = d[edge_px : h - edge_px, edge_px : w - edge_px]  # a view: summed in float64, not copied
    return max(0.0, float(inner.sum(dtype=np.float64)) * (h * w / inner.size) / (2.0 * END_DENSITY_SCALE))
