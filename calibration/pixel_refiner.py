"""INT8 calibration of the pixel refiner: its inputs as the device makes them, and its gate.

The pixel refiner reads the frame, the student's P(hair) and the prompt refiner's M_AP
(``device.refine.pixel``), so a calibration or gate input is a frame run through a bundle's
student and prompt path exactly as ``ScanPipeline.diagnose`` runs it (the quality gate's
prepared frame, the automatic prompts, the decoder's "refined" map). ``FusedDiceGate`` scores
the fused mask (the refined P(hair) at the card's threshold) of the FP32 graph and of a
candidate against the truth masks of a held-out folder: the same inputs for both, made once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from calibration.gate import GateResult, gate, mask_pairs, qdq_reference_backend
from calibration.quantize import QuantRecipe
from device.app.pipeline import ScanPipeline
from device.capture.imageio import read_frame
from device.contracts.constants import MASK_THRESHOLD, PIX_OUT
from device.models.backends import OrtBackend
from device.models.bundle import Bundle
from device.refine.fusion import refine
from device.refine.pixel import PixelRefiner
from device.refine.prompts import auto_prompts
from device.refine.refiner import calibrated_prob, logit_shift
from scoring.seg_metrics import confusion, summarise

__all__ = ["pixel_refiner_feeds", "FusedDiceGate", "held_out_masks"]


def pixel_refiner_feeds(
    files: Sequence[str | Path], graph: str | Path, bundle: Bundle, threads: int = 2
) -> tuple[list[dict[str, np.ndarray]], list[Path]]:
    """(input dicts of the pixel refiner ``graph``, the files they came from): each frame through
    ``bundle``'s student (the variant the device picks here) and prompt refiner, as a diagnosis
    runs them. Frames the quality gate rejects are left out (a diagnosis does not refine them).
    Raises BundleError when the graph takes M_AP and the bundle has no prompt refiner, ValueError
    when the gate rejects every frame."""
    pixel = PixelRefiner(OrtBackend(graph, threads=1))
    stage = "refined" if pixel.takes_prompt else "coarse"
    pipe = ScanPipeline(bundle, threads=threads, mask_stage=stage, parallel=False)
    try:
        feeds, kept = [], []
        for path in files:
            pipe.forget_motion()
            live = pipe.live(read_frame(path), count=False)
            if live.seg is None:
                continue
            prompt_prob = None
            if pixel.takes_prompt:
                assert pipe.refiner is not None
                groups = auto_prompts(live.seg.prob >= MASK_THRESHOLD, pipe.prompt_config)
                prompt_prob = refine(live.seg, live.frame, pipe.refiner, groups, "refined").seg.prob
            feeds.append(pixel.feeds(live.frame, live.seg.prob, prompt_prob))
            kept.append(Path(path))
    finally:
        pipe.close()
    if not feeds:
        raise ValueError(f"the quality gate rejected all {len(files)} frames: nothing to calibrate on")
    return feeds, kept


def held_out_masks(data: str | Path, limit: int | None = None) -> tuple[list[Path], list[np.ndarray]]:
    """(image files, HxW bool truth masks) of the first ``limit`` pairs of a held-out folder
    (``calibration.gate.mask_pairs``: ``images/`` and ``masks/`` PNGs of the same stem, hair > 0)."""
    pairs = mask_pairs(data)[:limit] if limit else mask_pairs(data)
    return [image for image, _ in pairs], [cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0 for _, mask in pairs]


class FusedDiceGate:
    """Dice of the fused mask of a candidate pixel refiner vs the FP32 graph's, on the same
    inputs (``pixel_refiner_feeds`` of held-out frames) and truth masks; the FP32 score is
    computed once. threshold: the refined mask's threshold (the card's ``refined_mask``)."""

    def __init__(
        self,
        feeds: list[dict[str, np.ndarray]],
        truths: list[np.ndarray],
        threshold: float,
        max_drop: float,
        threads: int = 2,
    ) -> None:
        if len(feeds) != len(truths) or not feeds:
            raise ValueError(f"{len(feeds)} inputs for {len(truths)} truth masks")
        self.feeds, self.truths, self.max_drop, self.threads = feeds, truths, max_drop, threads
        self.shift = logit_shift(threshold)
        self._reference: float | None = None

    def dice(self, model: str | Path, emulate: bool = False) -> float:
        """Dice (``scoring.seg_metrics.summarise``) of ``model``'s fused masks on the gate's frames."""
        backend = qdq_reference_backend(model, self.threads) if emulate else OrtBackend(model, threads=self.threads)
        confs = []
        for feed, truth in zip(self.feeds, self.truths, strict=True):
            prob = calibrated_prob(backend.run(feed, [PIX_OUT])[PIX_OUT][0, 0], self.shift)
            if prob.shape != truth.shape:
                prob = cv2.resize(prob, truth.shape[::-1], interpolation=cv2.INTER_LINEAR)
            confs.append(confusion(prob >= 0.5, truth))
        return float(summarise(confs)["dice"])

    def __call__(self, fp32: Path, candidate: Path, recipe: QuantRecipe) -> GateResult:
        if self._reference is None:
            self._reference = self.dice(fp32)
        emulate = "onnxruntime-cpu" not in recipe.targets
        return gate("fused_dice", self._reference, self.dice(candidate, emulate), self.max_drop)
