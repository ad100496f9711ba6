"""The hair mask a diagnosis measures, at each stage, and a segmenter that produces it.

M^ is the student's coarse mask (robust to dandruff, soft edges), M_AP the union of the prompt
refiner's masks over the automatic prompt groups (crisp, but only where prompted). The AND of
two probability maps at one threshold is their pixelwise minimum: min(p, q) >= t iff both are.
M^ may enter the AND at its own threshold (``FUSION_COARSE_THRESHOLD``): its probabilities are
recalibrated so that P(hair) >= that threshold maps to >= 0.5.

``RefinedSegmenter`` satisfies ``device.models.segmentation.Segmenter`` at any stage
(``MASK_STAGES``), so evaluation, hair metrics and the device pipeline use it like the student:

- ``coarse``: M^ (the student's probabilities);
- ``refined``: M_AP alone (the prompt refiner);
- ``paper``: ScalpVision's M = M^ AND M_AP;
- ``fused``: M^ and M_AP fused at full resolution by the pixel refiner (``device.refine.pixel``),
  which sees the frame beside them: the device's default. The AND can only remove pixels, while
  what the student misses is mostly faint thin strands it scores just under its threshold
  (docs/results/refiner.md), so the fusion is learnt, not a rule.

The student's instance outputs and its count strategy (``SegOutput.count_strategy``) pass
through unchanged: hairs are counted as the student counts them, inside the final mask.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from device.contracts.constants import FUSION_COARSE_THRESHOLD, MASK_STAGES, MASK_THRESHOLD
from device.models.segmentation import Segmenter, SegOutput
from device.refine.pixel import PixelRefiner
from device.refine.prompts import PROMPT_KINDS, PromptConfig, PromptGroups, auto_prompts, random_prompts
from device.refine.refiner import PromptRefiner

__all__ = ["fuse", "fuse_prob", "recalibrate", "refine", "Refined", "RefinedSegmenter", "STAGES", "PROMPT_STAGES"]

STAGES = MASK_STAGES
PROMPT_STAGES = ("refined", "paper")  # the stages the prompt refiner makes


def fuse(coarse: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """HxW bool M^ AND HxW bool M_AP -> HxW bool M."""
    if coarse.shape != refined.shape:
        raise ValueError(f"mask shapes differ: {coarse.shape} vs {refined.shape}")
    return np.logical_and(coarse, refined)


def recalibrate(prob: np.ndarray, threshold: float) -> np.ndarray:
    """HxW probabilities -> HxW float32 with ``prob >= threshold`` exactly where the result is
    >= 0.5 (a shift of the logit by logit(threshold)); ``threshold`` 0.5 returns ``prob``."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    p = np.asarray(prob, np.float32)
    if threshold == 0.5:
        return p
    eps = np.float32(1e-6)
    q = np.clip(p, eps, 1 - eps)
    shift = np.float32(np.log(threshold / (1.0 - threshold)))
    out = (1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) - shift)))).astype(np.float32)
    below_half = np.nextafter(np.float32(0.5), np.float32(0))
    return np.where(p >= threshold, np.maximum(out, np.float32(0.5)), np.minimum(out, below_half))


def fuse_prob(
    coarse_prob: np.ndarray, refined_prob: np.ndarray, coarse_threshold: float = FUSION_COARSE_THRESHOLD
) -> np.ndarray:
    """HxW float32 probabilities whose 0.5 threshold gives ``fuse`` of M^ (``coarse_prob`` >=
    ``coarse_threshold``) and M_AP (``refined_prob`` >= 0.5)."""
    if coarse_prob.shape != refined_prob.shape:
        raise ValueError(f"map shapes differ: {coarse_prob.shape} vs {refined_prob.shape}")
    return np.minimum(recalibrate(coarse_prob, coarse_threshold), refined_prob).astype(np.float32)


class RefinedSegmenter:
    """The student and its refiners at a chosen ``stage``: the prompt refiner with automatic (or
    random) prompts for ``refined`` and ``paper``, the pixel refiner for ``fused``.

    ``last_timings_ms`` holds the wall times of the last frame: student, then prompts, encoder,
    decoder (all groups), upscale and fusion, plus ``groups`` (G) and ``decoder_calls``, or
    ``pixel_refiner_ms``.
    """

    def __init__(
        self,
        student: Segmenter,
        refiner: PromptRefiner | None,
        stage: str = "paper",
        prompts: str = "auto",
        config: PromptConfig | None = None,
        threshold: float = MASK_THRESHOLD,
        seed: int = 0,
        coarse_threshold: float = FUSION_COARSE_THRESHOLD,
        pixel: PixelRefiner | None = None,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        if prompts not in PROMPT_KINDS:
            raise ValueError(f"prompts must be one of {PROMPT_KINDS}, not {prompts!r}")
        if stage in PROMPT_STAGES and refiner is None:
            raise ValueError(f"stage {stage!r} needs the prompt refiner")
        if stage == "fused" and pixel is None:
            raise ValueError("stage 'fused' needs the pixel refiner")
        if stage == "fused" and pixel is not None and pixel.takes_prompt and refiner is None:
            raise ValueError("this pixel refiner fuses M_AP: stage 'fused' needs the prompt refiner too")
        self.student, self.refiner, self.pixel = student, refiner, pixel
        # the prompt path runs for refined and paper, and for a pixel refiner that fuses M_AP
        self._prompts_run = refiner is not None and (stage != "fused" or (pixel is not None and pixel.takes_prompt))
        self.stage, self.prompts = stage, prompts
        k = refiner.k if refiner is not None else PromptConfig().group_size
        self.config = config or PromptConfig(group_size=k)
        if self.config.group_size != k:
            raise ValueError(f"prompt groups of {self.config.group_size} points; the decoder takes {k}")
        self.threshold, self.seed, self.coarse_threshold = threshold, seed, coarse_threshold
        base = getattr(student, "name", "student")
        self.name = f"{base}+pixel_refiner[fused]" if stage == "fused" else f"{base}+refiner[{stage},{prompts}]"
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
        prompt_map = None
        if self._prompts_run:
            assert self.refiner is not None
            t = time.perf_counter()
            groups = self.prompt_groups(coarse.prob >= self.threshold)
            timings["prompts_ms"] = (time.perf_counter() - t) * 1000
            self.last_groups = groups
            stage = "refined" if self.stage == "fused" else self.stage
            out = refine(coarse, frame_bgr, self.refiner, groups, stage, self.coarse_threshold)
            timings.update(out.timings_ms)
            if self.stage != "fused":
                self.last_timings_ms = timings
                return out.seg
            prompt_map = out.seg.prob
        assert self.pixel is not None
        prob = self.pixel.refine(frame_bgr, coarse.prob, prompt_map)
        self.last_timings_ms = timings | {"pixel_refiner_ms": self.pixel.last_ms}
        return dataclasses.replace(coarse, prob=prob)


@dataclass(frozen=True)
class Refined:
    """seg: the coarse ``SegOutput`` with ``prob`` of the asked stage; timings_ms: encoder_ms
    (0 when skipped or run before), decoder_ms, upscale_ms, fusion_ms, groups, decoder_calls."""

    seg: SegOutput
    timings_ms: dict[str, float]


def refine(
    coarse: SegOutput,
    frame_bgr: np.ndarray,
    refiner: PromptRefiner,
    groups: PromptGroups,
    stage: str = "paper",
    coarse_threshold: float = FUSION_COARSE_THRESHOLD,
    embedding: np.ndarray | None = None,
) -> Refined:
    """The ``refined`` (M_AP) or ``paper`` (M^ AND M_AP) output of ``coarse``, the student's
    segmentation of ``frame_bgr`` (HxWx3 uint8 BGR), prompted with ``groups``. embedding: the
    refiner's ``encode`` of this frame when it already ran (e.g. beside the student); without
    it the encoder runs here. No groups (an empty coarse mask): M_AP is empty and the encoder
    is skipped. The instance outputs pass through unchanged."""
    if stage not in PROMPT_STAGES:
        raise ValueError(f"refine: stage must be refined or paper, not {stage!r}")
    timings: dict[str, float] = {"encoder_ms": 0.0}
    if groups.count:
        refiner.set_image(frame_bgr, coarse.prob, embedding)
        if embedding is None:
            timings["encoder_ms"] = refiner.encoder_ms
        out = refiner.predict(groups)
        timings.update(out.timings_ms)
        refined = out.prob
    else:
        refined = np.zeros_like(coarse.prob)
    timings["groups"] = float(groups.count)
    timings["decoder_calls"] = float(-(-groups.count // refiner.batch))
    t = time.perf_counter()
    prob = refined if stage == "refined" else fuse_prob(coarse.prob, refined, coarse_threshold)
    timings["fusion_ms"] = (time.perf_counter() - t) * 1000
    return Refined(dataclasses.replace(coarse, prob=prob), timings)
