"""The self-test a bundle passes before a device switches to it: its segmenter on sample frames.

``self_test`` loads the bundle's segmenter (the variant ONNX Runtime on a CPU would run) and
segments each sample frame (the shipped synthetic frames, ``device.assets.sample_frames``):
every raw output must be finite, the hair mask must cover at most ``MAX_COVERAGE`` of a frame,
a hair count read off the model (density or strand ends) must lie in ``[0, MAX_HAIRS]``, and at
least one frame must show hair (coverage of ``MIN_COVERAGE`` or one hair): the samples are hairy
scalp, so a segmenter that sees nothing in all of them is broken. It catches a bundle that is
signed but wrong (a graph that gives NaN, or all hair, or nothing), not a small loss of accuracy:
that is what the release's accuracy gate is for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device.assets import sample_frames
from device.capture.imageio import FrameError, read_frame
from device.models.backends import Backend, OrtBackend
from device.models.bundle import Bundle, BundleError
from device.models.onnx_segmenter import ModelSegmenter

__all__ = ["MAX_COVERAGE", "MAX_HAIRS", "MIN_COVERAGE", "SEGMENTER", "SelfTestError", "self_test"]

SEGMENTER = "segmenter"  # the model every bundle must have (device.app.pipeline.MODEL_NAMES)
MAX_HAIRS = 2000.0  # hairs in one frame, at most (a dense scalp shows a few hundred at 640x480)
MAX_COVERAGE = 0.9  # fraction of a frame's pixels the hair mask may cover, at most
MIN_COVERAGE = 0.002  # fraction that counts as "shows hair"


class SelfTestError(Exception):
    """The bundle failed its self-test; the message names the frame and the check."""


class _FiniteOutputs:
    """A Backend that raises SelfTestError when the model returns a value that is not finite."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.input_shapes = backend.input_shapes
        self.output_names = backend.output_names
        self.last_ms = 0.0
        self.frame = ""

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        values = self.backend.run(inputs, outputs)
        self.last_ms = self.backend.last_ms
        for name, value in values.items():
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise SelfTestError(f"{self.frame}: output {name!r} has {bad} values that are not finite")
        return values

    def warmup(self, runs: int = 2) -> float:
        return self.backend.warmup(runs)


def self_test(bundle: Bundle, frames: Iterable[str | Path] | None = None, threads: int = 1) -> dict[str, Any]:
    """Segment ``frames`` (default: the shipped samples) with ``bundle``'s segmenter on ONNX
    Runtime. Returns {"frames", "hairs" (per frame, None without a count output), "coverage"
    (fraction of pixels), "ms"}; raises SelfTestError saying which check failed."""
    t0 = time.perf_counter()
    paths = [Path(p) for p in frames] if frames is not None else sample_frames()
    if not paths:
        raise SelfTestError("no sample frames to test on")
    try:
        variant = bundle.select(SEGMENTER, "onnxruntime-cpu", "auto")
        backend = _FiniteOutputs(OrtBackend(variant.path, threads=threads))
        segmenter = ModelSegmenter(backend, name=SEGMENTER)
    except BundleError as exc:
        raise SelfTestError(f"no segmenter to test: {exc}") from None
    except Exception as exc:  # ONNX Runtime's errors (Fail, InvalidGraph, ...) derive from Exception only
        raise SelfTestError(f"cannot load the segmenter: {type(exc).__name__}: {exc}") from None
    hairs: list[float | None] = []
    coverage: list[float] = []
    for path in paths:
        try:
            image = read_frame(path)
        except FrameError as exc:
            raise SelfTestError(f"sample frame unreadable: {exc}") from None
        backend.frame = path.name
        try:
            seg = segmenter.segment(image)
        except SelfTestError:
            raise
        except Exception as exc:  # as above: any error of the model's run is a failed self-test
            raise SelfTestError(f"{path.name}: the segmenter failed: {type(exc).__name__}: {exc}") from None
        if seg.prob.shape != image.shape[:2] or not np.isfinite(seg.prob).all():
            raise SelfTestError(f"{path.name}: hair probabilities of shape {seg.prob.shape} or not finite")
        share = float(seg.mask().mean())
        if share > MAX_COVERAGE:
            raise SelfTestError(f"{path.name}: {share:.0%} of the frame marked as hair (at most {MAX_COVERAGE:.0%})")
        count = None if seg.hairs is None else float(seg.hairs)
        if count is not None and not 0.0 <= count <= MAX_HAIRS:
            raise SelfTestError(f"{path.name}: hair count {count:.1f} outside [0, {MAX_HAIRS:.0f}]")
        hairs.append(None if count is None else round(count, 1))
        coverage.append(round(share, 4))
    if not any(c >= MIN_COVERAGE or (h or 0.0) >= 1.0 for c, h in zip(coverage, hairs, strict=True)):
        raise SelfTestError(f"no hair found in any of {len(paths)} sample frames (coverage {coverage})")
    return {"frames": len(paths), "hairs": hairs, "coverage": coverage, "ms": round((time.perf_counter() - t0) * 1e3)}
