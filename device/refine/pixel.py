"""The pixel refiner on the device: the student's P(hair) refined at full resolution.

One graph (``PIX_IN_IMAGE`` the normalised frame, ``PIX_IN_COARSE`` the student's P(hair) and,
when the graph takes it (``takes_prompt``), ``PIX_IN_PROMPT`` the prompt refiner's M_AP
probabilities, all at the graph's static size; ``PIX_OUT`` refined logits) run through the
backend interface (ONNX Runtime or TensorRT). Its mask is the refined P(hair) >= the threshold of its model card (chosen
on a validation set: ``scalpedge export pixel-refiner --tune``); ``refine`` returns
probabilities recalibrated so that this mask is ``>= 0.5``, like every segmenter's.

Why it exists (docs/results/refiner.md): ScalpVision's AND can only remove pixels, and the
student's misses are mostly faint, thin strands it scores just under 0.5. The pixel refiner
sees the frame again at full resolution beside the student's map and M_AP and was trained on
the generator's truth: it fuses the two maps by a learnt rule, restoring those strands.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.contracts.constants import PIX_IN_COARSE, PIX_IN_IMAGE, PIX_IN_PROMPT, PIX_OUT, PIXEL_REFINER_MODEL
from device.contracts.preprocess import to_network_input
from device.models.backends import Backend, open_backend
from device.models.bundle import Bundle
from device.refine.refiner import calibrated_prob, logit_shift

__all__ = ["PixelRefiner", "DEFAULT_THRESHOLD"]

DEFAULT_THRESHOLD = 0.5  # when a card names none


class PixelRefiner:
    """The graph's backend (state: the session) and the refined mask's threshold."""

    def __init__(self, backend: Backend, threshold: float = DEFAULT_THRESHOLD) -> None:
        missing = [n for n in (PIX_IN_IMAGE, PIX_IN_COARSE) if n not in backend.input_shapes]
        if missing:
            raise ValueError(f"pixel refiner graph lacks inputs {missing} (has {sorted(backend.input_shapes)})")
        self.backend, self.threshold = backend, float(threshold)
        self.takes_prompt = PIX_IN_PROMPT in backend.input_shapes
        self.logit_shift = logit_shift(threshold)
        _, _, self.height, self.width = backend.input_shapes[PIX_IN_IMAGE]
        self.last_ms = 0.0

    @staticmethod
    def card_threshold(card: dict[str, Any]) -> float:
        """The refined mask's threshold a model card (or manifest entry) names."""
        return float((card.get("thresholds") or {}).get("refined_mask", DEFAULT_THRESHOLD))

    @classmethod
    def from_folder(cls, folder: str | Path, threads: int = 2, kind: str = "onnxruntime") -> PixelRefiner:
        """``pixel_refiner.onnx`` of a staging folder (``scalpedge export pixel-refiner``) with the
        threshold of the card beside it."""
        folder = Path(folder)
        card = json.loads((folder / f"{PIXEL_REFINER_MODEL}.card.json").read_text())
        return cls(open_backend(folder / f"{PIXEL_REFINER_MODEL}.onnx", kind, threads), cls.card_threshold(card))

    @classmethod
    def from_bundle(cls, bundle: Bundle, threads: int = 2) -> PixelRefiner | None:
        """The bundle's pixel refiner on ONNX Runtime, or None when it has none."""
        if PIXEL_REFINER_MODEL not in bundle.models:
            return None
        variant = bundle.select(PIXEL_REFINER_MODEL, "onnxruntime-cpu", "auto")
        return cls(
            open_backend(variant.path, "onnxruntime", threads), cls.card_threshold(bundle.model(PIXEL_REFINER_MODEL))
        )

    def refine(
        self, frame_bgr: np.ndarray, coarse_prob: np.ndarray, prompt_prob: np.ndarray | None = None
    ) -> np.ndarray:
        """frame_bgr: HxWx3 uint8 BGR; coarse_prob: HxW float32 P(hair) of the student; prompt_prob:
        HxW float32 M_AP probabilities (``device.refine.fusion.refine`` at stage "refined"), given
        exactly when the graph takes them (same HxW) -> HxW float32 refined P(hair), recalibrated
        so that the refined mask is >= 0.5. Sets ``last_ms``."""
        if (prompt_prob is not None) != self.takes_prompt:
            raise ValueError(
                "this pixel refiner takes the prompt refiner's map: pass prompt_prob"
                if self.takes_prompt
                else "this pixel refiner takes no prompt refiner map"
            )
        for name, m in (("coarse", coarse_prob), ("prompt", prompt_prob)):
            if m is not None and m.shape != frame_bgr.shape[:2]:
                raise ValueError(f"{name} map {m.shape} does not match the frame {frame_bgr.shape[:2]}")
        t = time.perf_counter()
        h, w = coarse_prob.shape
        feeds = self.feeds(frame_bgr, coarse_prob, prompt_prob)
        prob = calibrated_prob(self.backend.run(feeds, [PIX_OUT])[PIX_OUT][0, 0], self.logit_shift)
        if (h, w) != (self.height, self.width):
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        self.last_ms = (time.perf_counter() - t) * 1000
        return prob

    def feeds(
        self, frame_bgr: np.ndarray, coarse_prob: np.ndarray, prompt_prob: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The graph's input dict for ``refine``'s arguments (unchecked): the normalised frame
        and the maps at the graph's size, each 1xCxHxW float32 (also INT8 calibration's input)."""
        feeds = {PIX_IN_IMAGE: to_network_input(frame_bgr, self.height, self.width)}
        for name, m in ((PIX_IN_COARSE, coarse_prob), (PIX_IN_PROMPT, prompt_prob)):
            if m is not None:
                feeds[name] = self._at_graph_size(m)[None, None]
        return feeds

    def _at_graph_size(self, m: np.ndarray) -> np.ndarray:
        p = np.asarray(m, np.float32)
        if p.shape != (self.height, self.width):
            p = np.asarray(cv2.resize(p, (self.width, self.height), interpolation=cv2.INTER_LINEAR), np.float32)
        return p
