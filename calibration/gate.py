"""The accuracy gate: an INT8 model ships only if it keeps the FP32 model's accuracy.

- Segmenters: Dice on held-out data the model never saw in calibration (``DiceGate``).
- The hair-photo segmenter: mIoU on held-out photos (``MiouGate``).
- Classifiers: their decisions (level per condition, presence, disease type) and logits
  against the FP32 model's on the same frames (``AgreementGate``): no labels needed.

A candidate for TensorRT only is run through ``qdq_reference_backend`` (the Q/DQ graph
computed as written, as TensorRT does), not through this CPU's integer kernels, which on x86
without VNNI saturate where TensorRT does not. A refused variant is recorded in the model
card with both scores, and the FP32 model stays the one the device uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from calibration.quantize import QuantRecipe
from device.capture.imageio import list_images, read_frame
from device.contracts.constants import CLS_OUT_LEVELS, CLS_OUT_PRESENCE, DISEASE_OUT_LOGITS
from device.models.backends import OrtBackend
from device.models.hair_photo import HairPhotoSegmenter
from device.models.onnx_segmenter import ModelSegmenter
from scoring.seg_metrics import Confusion, confusion, summarise

__all__ = [
    "GateResult",
    "Judge",
    "DiceGate",
    "MiouGate",
    "AgreementGate",
    "gate",
    "qdq_reference_backend",
    "segmenter_dice",
    "segmenter_scores",
    "photo_scores",
    "mask_pairs",
]

# classifier outputs that are decisions, and how a decision is read from them
_DECISIONS = {CLS_OUT_LEVELS: "argmax", CLS_OUT_PRESENCE: "sign", DISEASE_OUT_LOGITS: "argmax"}


@dataclass(frozen=True)
class GateResult:
    """metric: name; reference/candidate: scores in [0, 1]; max_drop: allowed loss (same units);
    passed: candidate >= reference - max_drop (and every check in ``checks`` held);
    checks: further measures and their limits, e.g. {"max_logit_error": 0.03, "limit": 0.25}."""

    metric: str
    reference: float
    candidate: float
    max_drop: float
    passed: bool
    checks: dict[str, float] = field(default_factory=dict)

    @property
    def drop(self) -> float:
        return self.reference - self.candidate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"drop": round(self.drop, 5)}

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        extra = "".join(f", {k} {v:.4g}" for k, v in self.checks.items())
        return (
            f"{self.metric}: {self.candidate:.4f} vs {self.reference:.4f} "
            f"(drop {self.drop * 100:+.2f} pt, allowed {self.max_drop * 100:.2f} pt{extra}): {verdict}"
        )


def gate(metric: str, reference: float, candidate: float, max_drop: float) -> GateResult:
    """Compare a candidate's score with the reference's; ``max_drop`` >= 0 in score units."""
    if max_drop < 0:
        raise ValueError("max_drop must be >= 0")
    return GateResult(metric, float(reference), float(candidate), float(max_drop), candidate >= reference - max_drop)


class Judge(Protocol):
    """Scores a candidate INT8 file made by ``recipe`` against its FP32 model."""

    def __call__(self, fp32: Path, candidate: Path, recipe: QuantRecipe) -> GateResult: ...


def qdq_reference_backend(path: str | Path, threads: int = 2) -> OrtBackend:
    """An ONNX Runtime CPU backend that computes the Q/DQ nodes as written (float arithmetic on
    the quantized values, no fused integer kernels): what TensorRT's INT8 engine computes."""
    import onnxruntime as ort

    backend = OrtBackend(path, threads=threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    backend.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return backend


def _backend(path: str | Path, threads: int, emulate: bool) -> OrtBackend:
    return qdq_reference_backend(path, threads) if emulate else OrtBackend(path, threads=threads)


def segmenter_scores(
    model: str | Path, data: str | Path, limit: int | None = None, threads: int = 2, emulate: bool = False
) -> dict[str, Any]:
    """Pixel scores (dice, jaccard, ...) of an ONNX segmenter on ``data`` (a folder with
    ``images/`` and ``masks/``, masks as PNG with the image's stem, hair > 0); ``emulate``: run
    Q/DQ nodes as written (``qdq_reference_backend``)."""
    data = Path(data)
    images = list_images([str(data / "images")])[:limit] if limit else list_images([str(data / "images")])
    seg = ModelSegmenter(_backend(model, threads, emulate))
    confs: list[Confusion] = []
    for path in images:
        mask_path = data / "masks" / f"{path.stem}.png"
        truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if truth is None:
            raise FileNotFoundError(f"no mask for {path.name} at {mask_path}")
        confs.append(confusion(seg.segment(read_frame(path)).mask(), truth > 0))
    return summarise(confs)


def segmenter_dice(
    model: str | Path, data: str | Path, limit: int | None = None, threads: int = 2, emulate: bool = False
) -> float:
    """Dice of an ONNX segmenter on a held-out folder (see ``segmenter_scores``)."""
    return float(segmenter_scores(model, data, limit, threads, emulate)["dice"])


class DiceGate:
    """Held-out Dice of the candidate vs the FP32 model's (scored once)."""

    def __init__(self, data: str | Path, max_drop: float, limit: int | None = None, threads: int = 2) -> None:
        self.data, self.max_drop, self.limit, self.threads = data, max_drop, limit, threads
        self._reference: float | None = None

    def __call__(self, fp32: Path, candidate: Path, recipe: QuantRecipe) -> GateResult:
        if self._reference is None:
            self._reference = segmenter_dice(fp32, self.data, self.limit, self.threads)
        dice = segmenter_dice(candidate, self.data, self.limit, self.threads, emulate=recipe.emulated)
        return gate("dice", self._reference, dice, self.max_drop)


def mask_pairs(data: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) of every image in ``data``/images with a PNG of the same stem in
    ``data``/masks; FileNotFoundError when there is none."""
    data = Path(data)
    pairs = [(p, data / "masks" / f"{p.stem}.png") for p in list_images([str(data / "images")])]
    pairs = [(i, m) for i, m in pairs if m.is_file()]
    if not pairs:
        raise FileNotFoundError(f"{data}: no images/ with masks/ of the same stem")
    return pairs


def photo_scores(
    model: str | Path, pairs: Sequence[tuple[Path, Path]], threads: int = 2, emulate: bool = False
) -> dict[str, Any]:
    """Pixel scores (miou, accuracy, ...) of an ONNX hair-photo segmenter on (photo, mask)
    ``pairs`` (mask PNG, hair > 127), each at the photo's own size."""
    seg = HairPhotoSegmenter(_backend(model, threads, emulate))
    confs: list[Confusion] = []
    for image_path, mask_path in pairs:
        truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if truth is None:
            raise FileNotFoundError(f"unreadable mask {mask_path}")
        photo = read_frame(image_path)
        if truth.shape != photo.shape[:2]:
            truth = cv2.resize(truth, (photo.shape[1], photo.shape[0]), interpolation=cv2.INTER_NEAREST)
        confs.append(confusion(seg.segment(photo).mask, truth > 127))
    return summarise(confs)


class MiouGate:
    """Held-out mIoU of a hair-photo candidate vs the FP32 model's (scored once) on (photo,
    mask) ``pairs``."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], max_drop: float, threads: int = 2) -> None:
        if not pairs:
            raise ValueError("MiouGate needs at least one (photo, mask) pair")
        self.pairs, self.max_drop, self.threads = list(pairs), max_drop, threads
        self._reference: float | None = None

    def __call__(self, fp32: Path, candidate: Path, recipe: QuantRecipe) -> GateResult:
        if self._reference is None:
            self._reference = float(photo_scores(fp32, self.pairs, self.threads)["miou"])
        miou = float(photo_scores(candidate, self.pairs, self.threads, emulate=recipe.emulated)["miou"])
        return gate("miou", self._reference, miou, self.max_drop)


class AgreementGate:
    """A classifier candidate's decisions and logits against the FP32 model's on ``feeds``
    (input dicts, e.g. the calibration frames). agreement: share of decisions (argmax level
    per condition, presence logit sign, disease argmax) that match FP32, must be at least
    1 - max_drop; max_logit_error: largest logit difference as a share of FP32's largest
    absolute logit, must be at most ``max_logit_error``."""

    def __init__(
        self, feeds: Sequence[dict[str, np.ndarray]], max_drop: float, max_logit_error: float, threads: int = 2
    ) -> None:
        if not feeds:
            raise ValueError("AgreementGate needs at least one input")
        self.feeds, self.max_drop, self.max_logit_error, self.threads = list(feeds), max_drop, max_logit_error, threads
        self._reference: dict[str, np.ndarray] | None = None

    def _logits(self, path: Path, emulate: bool) -> dict[str, np.ndarray]:
        backend = _backend(path, self.threads, emulate)
        names = [n for n in backend.output_names if n in _DECISIONS]
        if not names:
            raise ValueError(f"{path}: no classifier logits among outputs {list(backend.output_names)}")
        runs = [backend.run(f, names) for f in self.feeds]
        return {n: np.concatenate([r[n] for r in runs]) for n in names}

    def __call__(self, fp32: Path, candidate: Path, recipe: QuantRecipe) -> GateResult:
        if self._reference is None:
            self._reference = self._logits(fp32, emulate=False)
        got = self._logits(candidate, emulate=recipe.emulated)
        same, total, worst, scale = 0, 0, 0.0, 1e-6
        for name, ref in self._reference.items():
            a, b = (ref.argmax(-1), got[name].argmax(-1)) if _DECISIONS[name] == "argmax" else (ref > 0, got[name] > 0)
            same, total = same + int((a == b).sum()), total + a.size
            worst, scale = max(worst, float(np.abs(ref - got[name]).max())), max(scale, float(np.abs(ref).max()))
        verdict = gate("agreement", 1.0, same / total, self.max_drop)
        error = worst / scale
        checks = {"max_logit_error": round(error, 5), "max_logit_error_limit": self.max_logit_error}
        return replace(verdict, passed=verdict.passed and error <= self.max_logit_error, checks=checks)
