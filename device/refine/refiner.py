"""The prompt refiner on the device: exported image encoder and mask decoder run through the
backend interface (ONNX Runtime or TensorRT), SAM's predictor contract.

``set_image`` runs the encoder once per frame and caches the embedding and the coarse mask
prompt; ``predict`` runs the decoder on prompt groups (static K points and B groups per call,
read from the graph) and returns the union of the groups' masks, M_AP. Calling ``predict``
before ``set_image`` raises. The union is taken on the decoder's low-resolution logits (max
over groups) and upscaled to the frame once with bilinear interpolation, so the cost of the
upscale does not grow with the number of groups.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from device.contracts.constants import (
    REF_DEC_COORDS,
    REF_DEC_EMBED,
    REF_DEC_LABELS,
    REF_DEC_MASK_INPUT,
    REF_DEC_OUT_MASKS,
    REF_ENC_INPUT,
    REF_ENC_OUT,
    REFINER_MASK_THRESHOLD,
)
from device.contracts.preprocess import to_network_input
from device.models.backends import Backend, open_backend
from device.refine.prompts import PromptGroups

__all__ = ["PromptRefiner", "RefineOutput", "mask_prompt", "logit_shift", "calibrated_prob"]


def mask_prompt(prob: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxW P(hair) (or bool) -> 1x1xhxw float32 mask prompt logits 8 * (P - 0.5), area-resized
    to ``size`` (h, w): the decoder's ``mask_input`` (training uses this same function)."""
    p = cv2.resize(np.asarray(prob, np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return (8.0 * (p - 0.5)).astype(np.float32)[None, None]


def logit_shift(threshold: float) -> float:
    """logit(``threshold``): subtracted from a refiner's logits, it puts P(hair) = threshold at 0.5."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), not {threshold}")
    return float(np.log(threshold / (1.0 - threshold)))


def calibrated_prob(logits: np.ndarray, shift: float) -> np.ndarray:
    """sigmoid(logits - shift) as float32 (``shift``: ``logit_shift`` of the mask's threshold),
    so that the mask is ``>= 0.5`` like every segmenter's."""
    return (1.0 / (1.0 + np.exp(-np.clip(logits - np.float32(shift), -30, 30)))).astype(np.float32)


@dataclass(frozen=True)
class RefineOutput:
    """prob: HxW float32 of M_AP, the union of the groups' masks, calibrated so that M_AP = prob >= 0.5
    (the decoder's own P(hair) >= the refiner's ``threshold``); zeros without groups;
    groups: G; calls: decoder calls made; timings_ms: decoder and upscale wall times."""

    prob: np.ndarray
    groups: int
    calls: int
    timings_ms: dict[str, float] = field(default_factory=dict)


class PromptRefiner:
    """Encoder (``REF_ENC_INPUT`` -> ``REF_ENC_OUT``) and decoder (``REF_DEC_*``) backends."""

    def __init__(self, encoder: Backend, decoder: Backend, threshold: float = REFINER_MASK_THRESHOLD) -> None:
        for backend, names in ((encoder, (REF_ENC_INPUT,)), (decoder, (REF_DEC_EMBED, REF_DEC_COORDS))):
            missing = [n for n in names if n not in backend.input_shapes]
            if missing:
                raise ValueError(f"refiner graph lacks inputs {missing} (has {sorted(backend.input_shapes)})")
        self.encoder, self.decoder = encoder, decoder
        self.logit_shift = logit_shift(threshold)  # M_AP = P >= threshold, at 0.5 after the shift
        _, _, self.height, self.width = encoder.input_shapes[REF_ENC_INPUT]
        self.batch, self.k, _ = decoder.input_shapes[REF_DEC_COORDS]
        self.mask_size = tuple(decoder.input_shapes[REF_DEC_MASK_INPUT][2:])
        self._embedding: np.ndarray | None = None
        self._mask_input: np.ndarray | None = None
        self._frame_size = (self.height, self.width)
        self.encoder_ms = 0.0

    @classmethod
    def from_onnx(
        cls,
        encoder_path: str | Path,
        decoder_path: str | Path,
        threads: int = 2,
        kind: str = "onnxruntime",
        threshold: float = REFINER_MASK_THRESHOLD,
    ) -> PromptRefiner:
        return cls(open_backend(encoder_path, kind, threads), open_backend(decoder_path, kind, threads), threshold)

    def encode(self, frame_bgr: np.ndarray) -> np.ndarray:
        """frame_bgr: HxWx3 uint8 BGR -> its image embedding (1 x C x h x w float32), the
        encoder's output. Needs the frame only, not the coarse mask, so a caller may run it
        beside the student (another thread) and hand it to ``set_image``. Sets ``encoder_ms``."""
        t = time.perf_counter()
        x = to_network_input(frame_bgr, self.height, self.width)
        embedding = self.encoder.run({REF_ENC_INPUT: x}, [REF_ENC_OUT])[REF_ENC_OUT]
        self.encoder_ms = (time.perf_counter() - t) * 1000
        return embedding

    def set_image(self, frame_bgr: np.ndarray, coarse_prob: np.ndarray, embedding: np.ndarray | None = None) -> None:
        """frame_bgr: HxWx3 uint8 BGR; coarse_prob: HxW float32 P(hair) of M^ (same HxW).
        Caches the frame's embedding (``embedding`` when given, ``encode``'s of this frame;
        else the encoder runs now) and the mask prompt."""
        if coarse_prob.shape != frame_bgr.shape[:2]:
            raise ValueError(f"coarse mask {coarse_prob.shape} does not match the frame {frame_bgr.shape[:2]}")
        self._embedding = self.encode(frame_bgr) if embedding is None else embedding
        self._mask_input = mask_prompt(coarse_prob, (int(self.mask_size[0]), int(self.mask_size[1])))
        self._frame_size = (int(frame_bgr.shape[0]), int(frame_bgr.shape[1]))

    def predict_low_res(self, groups: PromptGroups) -> np.ndarray:
        """Gx h4 x w4 float32 mask logits, one per group (points in frame pixels)."""
        if self._embedding is None or self._mask_input is None:
            raise RuntimeError("call set_image() before predict()")
        if groups.count and groups.points.shape[1] != self.k:
            raise ValueError(f"groups have {groups.points.shape[1]} points, the decoder takes K={self.k}")
        sy, sx = self.height / self._frame_size[0], self.width / self._frame_size[1]
        scale = np.array([sx, sy], np.float32)
        outs = []
        for start in range(0, groups.count, self.batch):
            pts = np.zeros((self.batch, self.k, 2), np.float32)
            lab = np.full((self.batch, self.k), -1.0, np.float32)
            n = min(self.batch, groups.count - start)
            pts[:n] = groups.points[start : start + n] * scale
            lab[:n] = groups.labels[start : start + n]
            feeds = {REF_DEC_EMBED: self._embedding, REF_DEC_COORDS: pts, REF_DEC_LABELS: lab}
            feeds[REF_DEC_MASK_INPUT] = self._mask_input
            outs.append(self.decoder.run(feeds, [REF_DEC_OUT_MASKS])[REF_DEC_OUT_MASKS][:n, 0])
        if not outs:
            return np.zeros((0, int(self.mask_size[0]), int(self.mask_size[1])), np.float32)
        return np.concatenate(outs, axis=0)

    def predict(self, groups: PromptGroups) -> RefineOutput:
        """M_AP for ``groups`` at the size of the frame given to ``set_image``."""
        t = time.perf_counter()
        low = self.predict_low_res(groups)
        t_dec = (time.perf_counter() - t) * 1000
        h, w = self._frame_size
        t = time.perf_counter()
        if len(low) == 0:
            prob = np.zeros((h, w), np.float32)
        else:
            up = cv2.resize(low.max(axis=0), (w, h), interpolation=cv2.INTER_LINEAR)
            prob = calibrated_prob(up, self.logit_shift)
        t_up = (time.perf_counter() - t) * 1000
        calls = -(-groups.count // self.batch)
        return RefineOutput(prob, groups.count, calls, {"decoder_ms": t_dec, "upscale_ms": t_up})
