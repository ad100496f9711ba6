"""The fused hair mask M = M^ AND M_AP (ScalpVision), and a segmenter that produces it.

M^ is the student's coarse mask (robust to dandruff, soft edges), M_AP the union of the prompt
refiner's masks over the automatic prompt groups (crisp, but only where prompted). The AND of
two probability maps at one threshold is their pixelwise minimum: min(p, q) >= t iff both are.

``RefinedSegmenter`` satisfies ``device.segmentation.Segmenter`` at any stage, so evaluation,
hair metrics and the device pipeline use it like the student alone:

- ``coarse``: M^ (the student's probabilities);
- ``refined``: M_AP alone;
- ``fused``: M = M^ AND M_AP.

The student's centre-line output is passed through unchanged (hair counts split the centre
lines inside the final mask).
"""

from __future__ import annotations

import time

import numpy as np

from device.constants import MASK_THRESHOLD
from device.prompts import PROMPT_KINDS, PromptConfig, PromptGroups, auto_prompts, random_prompts
from device.refiner import PromptRefiner
from device.segmentation import Segmenter, SegOutput

__all__ = ["fuse", "fuse_prob", "RefinedSegmenter", "STAGES"]

STAGES = ("coarse", "refined", "fused")


def fuse(coarse: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """HxW bool M^ AND HxW bool M_AP -> HxW bool M."""
    if coarse.shape != refined.shape:
        raise ValueError(f"mask shapes differ: {coarse.shape} vs {refined.shape}")
    return np.logical_and(coarse, refined)


def fuse_prob(coarse_prob: np.ndarray, refined_prob: np.ndarray) -> np.ndarray:
    """HxW float32 probabilities whose threshold gives ``fuse`` of the thresholded inputs."""
    if coarse_prob.shape != refined_prob.shape:
        raise ValueError(f"map shapes differ: {coarse_prob.shape} vs {refined_prob.shape}")
    return np.minimum(coarse_prob, refined_prob).astype(np.float32)


class RefinedSegmenter:
    """Student + automatic (or random) prompts + refiner, at a chosen ``stage``.

    ``last_timings_ms`` holds the wall times of the last frame: student, prompts, encoder,
    decoder (all groups), upscale and fusion, plus ``groups`` (G) and ``decoder_calls``.
    """

    def __init__(
        self,
        student: Segmenter,
        refiner: PromptRefiner,
        stage: str = "fused",
        prompts: str = "auto",
        config: PromptConfig | None = None,
        threshold: float = MASK_THRESHOLD,
        seed: int = 0,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        if prompts not in PROMPT_KINDS:
            raise ValueError(f"prompts must be one of {PROMPT_KINDS}, not {prompts!r}")
        self.student, self.refiner = student, refiner
        self.stage, self.prompts = stage, prompts
        self.config = config or PromptConfig(group_size=refiner.k)
        if self.config.group_size != refiner.k:
            raise ValueError(f"prompt groups of {self.config.group_size} points; the decoder takes {refiner.k}")
        self.threshold, self.seed = threshold, seed
        self.name = f"{getattr(student, 'name', 'student')}+refiner[{stage},{prompts}]"
        self.last_timings_ms: dict[str, float] = {}
        self.last_groups: PromptGroups | None = None

    def prompt_groups(self, coarse_mask: np.ndarray) -> PromptGroups:
        """Prompt groups of an HxW bool coarse mask (the configured kind)."""
        if self.prompts == "random":
            return random_prompts(coarse_mask, seed=self.seed, config=self.config)
        return auto_prompts(coarse_mask, self.config)

    def segment(self, frame_bgr: np.ndarray) -> SegOutput:
        """frame_bgr: HxWx3 uint8 BGR -> SegOutput (prob of the configured stage)."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        coarse = self.student.segment(frame_bgr)
        timings["student_ms"] = (time.perf_counter() - t) * 1000
        if self.stage == "coarse":
            self.last_timings_ms = timings
            return coarse
        t = time.perf_counter()
        groups = self.prompt_groups(coarse.prob >= self.threshold)
        timings["prompts_ms"] = (time.perf_counter() - t) * 1000
        self.last_groups = groups
        if groups.count:
            self.refiner.set_image(frame_bgr, coarse.prob)
            timings["encoder_ms"] = self.refiner.encoder_ms
            out = self.refiner.predict(groups)
            timings.update(out.timings_ms)
            refined = out.prob
        else:  # nothing to prompt (empty coarse mask): M_AP is empty, the encoder is skipped
            refined = np.zeros_like(coarse.prob)
        timings["groups"] = float(groups.count)
        timings["decoder_calls"] = float(-(-groups.count // self.refiner.batch))
        t = time.perf_counter()
        prob = refined if self.stage == "refined" else fuse_prob(coarse.prob, refined)
        timings["fusion_ms"] = (time.perf_counter() - t) * 1000
        self.last_timings_ms = timings
        return SegOutput(prob=prob, centre=coarse.centre, lines=coarse.lines)
