"""Torch-free scalp classifiers run through an inference backend (ONNX Runtime by default).

- ``SeverityClassifier``: frame -> per condition (dandruff, sebum, erythema) a level (good, mild,
  moderate, severe) with probabilities, P(present), present or not (P(present) >= the condition's
  threshold: the model card's ``thresholds``, else the graph's ``presence_thresholds`` metadata,
  else 0.5) and the predicted share of the frame covered.
- ``AlopeciaGrader``: hair metrics (count, thickness statistics, thin-hair ratio, density) ->
  alopecia level 0..3 with probabilities.
- ``DiseaseClassifier``: clinical scalp photo -> alopecia / psoriasis / folliculitis, after the
  small-CNN paper's preprocessing (``disease_preprocess``).

Tensor names, sizes and normalisation come from ``device.contracts.constants``. Wrong shapes or dtypes
raise ``ClassifierInputError`` (a ValueError) naming what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.capture.imageio import as_bgr
from device.contracts.constants import (
    ALOPECIA_FEATURES,
    ALOPECIA_INPUT,
    ALOPECIA_OUT_PROBS,
    CLS_HEIGHT,
    CLS_INPUT,
    CLS_OUT_AREA,
    CLS_OUT_LEVELS,
    CLS_OUT_PRESENCE,
    CLS_WIDTH,
    CONDITION_NAMES,
    DISEASE_INPUT,
    DISEASE_NAMES,
    DISEASE_OUT_LOGITS,
    DISEASE_SIZE,
    LEVEL_NAMES,
)
from device.contracts.preprocess import to_classifier_layout
from device.measure.hair_metrics import HairMetrics
from device.models.backends import Backend, OrtBackend

__all__ = [
    "ClassifierInputError",
    "ConditionResult",
    "SeverityClassifier",
    "AlopeciaGrader",
    "DiseaseClassifier",
    "prepare_condition_input",
    "disease_preprocess",
    "prepare_disease_input",
    "DISEASE_PREPROCESSING",
    "hair_features",
    "softmax",
    "default_classifier_path",
    "default_presence_thresholds",
    "presence_thresholds",
    "BUNDLE_NAMES",
    "DEFAULT_PRESENCE_THRESHOLD",
]


class ClassifierInputError(ValueError):
    """An input tensor or image a classifier cannot take, with what was expected."""


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (float32)."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return (z / z.sum(axis=axis, keepdims=True)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


def prepare_condition_input(frame_bgr: np.ndarray, size: tuple[int, int] = (CLS_WIDTH, CLS_HEIGHT)) -> np.ndarray:
    """HxWx3 uint8 BGR frame of any size (grey, BGRA and 16-bit are converted) ->
    1x3xhxw float32, (w, h) = ``size`` (default CLS_WIDTH x CLS_HEIGHT; a graph's own size is
    ``SeverityClassifier.size``), area interpolation, aspect not preserved."""
    frame = as_bgr(frame_bgr, "condition classifier input")
    small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return to_classifier_layout(small)


DISEASE_PREPROCESSING = ("paper", "resize")


def disease_preprocess(image_bgr: np.ndarray, size: int = DISEASE_SIZE, mode: str = "paper") -> np.ndarray:
    """-> size x size x 3 uint8 BGR. ``mode="paper"`` is the small-CNN paper's preprocessing:
    resize (area) to ``size`` x ``size``, denoise (non-local means, h=5), histogram equalisation
    of the lightness (CLAHE on L of Lab, clip 2.0, 8x8 tiles) and enhancement (unsharp mask,
    amount 0.5, sigma 1.5). ``mode="resize"`` only resizes."""
    if mode not in DISEASE_PREPROCESSING:
        raise ValueError(f"disease preprocessing must be one of {DISEASE_PREPROCESSING}, got {mode!r}")
    img = as_bgr(image_bgr, "disease classifier input")
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if mode == "resize":
        return img
    img = cv2.fastNlMeansDenoisingColored(img, None, 5, 5, 7, 21)
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB)
    lab[:, :, 0] = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(lab[:, :, 0])
    img = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    blur = cv2.GaussianBlur(img, (0, 0), 1.5)
    return cv2.addWeighted(img, 1.5, blur, -0.5, 0)


def prepare_disease_input(image_bgr: np.ndarray, mode: str = "paper", size: int = DISEASE_SIZE) -> np.ndarray:
    """Clinical photo (HxWx3 uint8 BGR, any size) -> 1x3x``size``x``size`` float32 (``size`` is
    the graph's input side: DISEASE_SIZE times its tile grid)."""
    return to_classifier_layout(disease_preprocess(image_bgr, size, mode=mode))


def hair_features(metrics: HairMetrics) -> np.ndarray:
    """1xF float32 in ``ALOPECIA_FEATURES`` order; missing thickness values (no strands) are 0."""
    t = np.asarray(metrics.thickness_um, np.float64)
    iqr = float(np.subtract(*np.percentile(t, [75, 25]))) if len(t) else 0.0
    values = {
        "count": float(metrics.count),
        "mean_thickness_um": metrics.mean_thickness_um or 0.0,
        "median_thickness_um": metrics.median_thickness_um or 0.0,
        "thickness_iqr_um": iqr,
        "thin_ratio": metrics.thin_ratio or 0.0,
        "density_per_cm2": metrics.density_per_cm2 or 0.0,
        "hair_fraction": metrics.hair_fraction,
    }
    return np.asarray([[values[k] for k in ALOPECIA_FEATURES]], np.float32)


class _Model:
    """A backend whose one input must have a fixed shape and float32 dtype."""

    def __init__(self, backend: Backend, input_name: str, outputs: tuple[str, ...], what: str) -> None:
        if input_name not in backend.input_shapes:
            raise ValueError(f"{what}: model has no input {input_name!r} (has {sorted(backend.input_shapes)})")
        missing = [o for o in outputs if o not in backend.output_names]
        if missing:
            raise ValueError(f"{what}: model lacks outputs {missing} (has {list(backend.output_names)})")
        self.backend = backend
        self.input_name = input_name
        self.input_shape = backend.input_shapes[input_name]
        self.outputs = outputs
        self.what = what

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if not isinstance(x, np.ndarray):
            raise ClassifierInputError(f"{self.what}: input must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ClassifierInputError(f"{self.what}: input dtype {x.dtype}, expected float32")
        if tuple(x.shape) != self.input_shape:
            raise ClassifierInputError(f"{self.what}: input shape {tuple(x.shape)}, expected {self.input_shape}")
        if not np.isfinite(x).all():
            raise ClassifierInputError(f"{self.what}: input holds NaN or infinite values")
        return self.backend.run({self.input_name: x}, list(self.outputs))


DEFAULT_PRESENCE_THRESHOLD = 0.5


def _level(probs: np.ndarray, present: bool) -> str:
    """The level of one condition: ``good`` when the presence decision says absent, else the
    most probable of the other levels (the presence head, with its threshold chosen on real
    frames, decides whether a condition is there; the level head how severe it is)."""
    return LEVEL_NAMES[1 + int(np.argmax(probs[1:]))] if present else LEVEL_NAMES[0]


def presence_thresholds(card: dict[str, Any] | None) -> dict[str, float]:
    """Per condition (``CONDITION_NAMES``) the P(present) threshold from a model card / manifest
    entry (``thresholds``: ``{"presence_<condition>": t}``); a condition it does not name (or a
    card without thresholds, or None) gets DEFAULT_PRESENCE_THRESHOLD."""
    raw = (card or {}).get("thresholds") or {}
    out = {}
    for c in CONDITION_NAMES:
        value = raw.get(f"presence_{c}") if isinstance(raw, dict) else None
        if value is not None and not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"presence threshold of {c} must be in [0, 1], got {value}")
        out[c] = DEFAULT_PRESENCE_THRESHOLD if value is None else float(value)
    return out


@dataclass(frozen=True)
class ConditionResult:
    """Per condition (``CONDITION_NAMES``): level name, level probabilities (4, good..severe),
    P(present), present (P(present) >= the model's threshold for it) and predicted area share of
    the frame in [0, 1]."""

    levels: dict[str, str]
    level_probs: dict[str, list[float]]
    presence: dict[str, float]
    area_share: dict[str, float]
    present: dict[str, bool]

    def to_dict(self) -> dict[str, Any]:
        return {
            "levels": self.levels,
            "level_probs": {k: [round(p, 4) for p in v] for k, v in self.level_probs.items()},
            "presence": {k: round(v, 4) for k, v in self.presence.items()},
            "present": dict(self.present),
            "area_share": {k: round(v, 4) for k, v in self.area_share.items()},
        }


class SeverityClassifier:
    """Condition severity graph: input ``CLS_INPUT`` 1x3xHxW float32 (H x W read from the graph,
    4:3 and a multiple of 32: CLS_HEIGHT x CLS_WIDTH or a larger grader's, ``self.size`` = (W, H)),
    outputs ``CLS_OUT_LEVELS`` (1x3x4), ``CLS_OUT_PRESENCE`` (1x3), ``CLS_OUT_AREA`` (1x3).

    ``card``: the model's card or bundle manifest entry; its ``thresholds`` decide presence.
    Without one, the graph's ``presence_thresholds`` metadata (JSON ``{condition: t}``) does,
    else DEFAULT_PRESENCE_THRESHOLD for every condition (``self.thresholds``)."""

    OUTPUTS = (CLS_OUT_LEVELS, CLS_OUT_PRESENCE, CLS_OUT_AREA)

    def __init__(self, backend: Backend, card: dict[str, Any] | None = None) -> None:
        self.model = _Model(backend, CLS_INPUT, self.OUTPUTS, "severity classifier")
        shape = self.model.input_shape
        if len(shape) != 4 or shape[:2] != (1, 3) or shape[2] % 32 or shape[3] * 3 != shape[2] * 4:
            raise ValueError(
                f"severity classifier: graph input {shape} is not 1x3xHxW with W:H = 4:3, H a multiple of 32"
                f" (e.g. 1x3x{CLS_HEIGHT}x{CLS_WIDTH})"
            )
        self.size = (int(shape[3]), int(shape[2]))
        if card is None or not card.get("thresholds"):
            meta: dict[str, str] = getattr(backend, "metadata", {})
            graph = json.loads(meta.get("presence_thresholds", "{}"))
            card = {"thresholds": {f"presence_{c}": t for c, t in graph.items()}}
        self.thresholds = presence_thresholds(card)

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 1, card: dict[str, Any] | None = None) -> SeverityClassifier:
        return cls(OrtBackend(path, threads=threads), card)

    def raw(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Network outputs (by name) for a prepared 1x3xHxW float32 input."""
        return self.model.run(x)

    def predict_tensor(self, x: np.ndarray) -> ConditionResult:
        out = self.raw(x)
        probs = softmax(out[CLS_OUT_LEVELS][0], axis=-1)
        present = _sigmoid(out[CLS_OUT_PRESENCE][0])
        area = out[CLS_OUT_AREA][0]
        return ConditionResult(
            levels={c: _level(probs[i], bool(present[i] >= self.thresholds[c])) for i, c in enumerate(CONDITION_NAMES)},
            level_probs={c: [float(p) for p in probs[i]] for i, c in enumerate(CONDITION_NAMES)},
            presence={c: float(present[i]) for i, c in enumerate(CONDITION_NAMES)},
            area_share={c: float(np.clip(area[i], 0, 1)) for i, c in enumerate(CONDITION_NAMES)},
            present={c: bool(present[i] >= self.thresholds[c]) for i, c in enumerate(CONDITION_NAMES)},
        )

    def predict(self, frame_bgr: np.ndarray) -> ConditionResult:
        """frame_bgr: HxWx3 uint8 BGR of any size."""
        return self.predict_tensor(prepare_condition_input(frame_bgr, self.size))


class AlopeciaGrader:
    """Alopecia level from hair features: input ``ALOPECIA_INPUT`` 1xF float32 (F =
    len(ALOPECIA_FEATURES)), output ``ALOPECIA_OUT_PROBS`` 1x4 float32."""

    def __init__(self, backend: Backend) -> None:
        self.model = _Model(backend, ALOPECIA_INPUT, (ALOPECIA_OUT_PROBS,), "alopecia grader")
        if self.model.input_shape != (1, len(ALOPECIA_FEATURES)):
            raise ValueError(f"alopecia grader: graph input {self.model.input_shape} != 1x{len(ALOPECIA_FEATURES)}")

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 1) -> AlopeciaGrader:
        return cls(OrtBackend(path, threads=threads))

    def predict_features(self, features: np.ndarray) -> tuple[str, list[float]]:
        """features: 1xF float32 -> (level name, probabilities over LEVEL_NAMES)."""
        probs = self.model.run(features)[ALOPECIA_OUT_PROBS][0]
        return LEVEL_NAMES[int(np.argmax(probs))], [float(p) for p in probs]

    def predict(self, metrics: HairMetrics) -> tuple[str, list[float]]:
        return self.predict_features(hair_features(metrics))


class DiseaseClassifier:
    """Disease-type graph: input ``DISEASE_INPUT`` 1x3xSxS float32 (S is read from the graph: a
    multiple of DISEASE_SIZE when it tiles the photo), output ``DISEASE_OUT_LOGITS`` 1x3.
    The preprocessing mode is the graph's ``preprocess`` metadata ("paper" when absent)."""

    def __init__(self, backend: Backend) -> None:
        self.model = _Model(backend, DISEASE_INPUT, (DISEASE_OUT_LOGITS,), "disease classifier")
        shape = self.model.input_shape
        if len(shape) != 4 or shape[:2] != (1, 3) or shape[2] != shape[3] or shape[2] % DISEASE_SIZE:
            raise ValueError(f"disease classifier: graph input {shape} is not 1x3xSxS, S a multiple of {DISEASE_SIZE}")
        self.size = int(shape[2])
        meta: dict[str, str] = getattr(backend, "metadata", {})
        self.preprocess = meta.get("preprocess", "paper")
        if self.preprocess not in DISEASE_PREPROCESSING:
            raise ValueError(f"disease classifier: unknown preprocess {self.preprocess!r} in the graph metadata")

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int = 1) -> DiseaseClassifier:
        return cls(OrtBackend(path, threads=threads))

    def predict_tensor(self, x: np.ndarray) -> dict[str, float]:
        probs = softmax(self.model.run(x)[DISEASE_OUT_LOGITS][0])
        return {name: float(p) for name, p in zip(DISEASE_NAMES, probs, strict=True)}

    def predict(self, image_bgr: np.ndarray) -> tuple[str, dict[str, float]]:
        """Photo (HxWx3 uint8 BGR) -> (disease name, probabilities by name)."""
        probs = self.predict_tensor(prepare_disease_input(image_bgr, self.preprocess, self.size))
        return max(probs, key=lambda k: probs[k]), probs


# Names of the classifiers in the model bundle (see device.app.pipeline.MODEL_NAMES).
BUNDLE_NAMES = {"severity": "conditions", "alopecia": "alopecia", "disease": "disease"}


def default_classifier_path(kind: str, precision: str | None = None) -> Path:
    """The shipped ONNX file of ``kind`` ("severity", "alopecia", "disease") from the verified
    default bundle; ``precision`` "fp32" or "int8" (default: the bundle's preferred variant for
    ONNX Runtime). Raises FileNotFoundError when the bundle has no such model or precision."""
    from device.assets import default_bundle_path
    from device.models.bundle import Bundle, BundleError

    if kind not in BUNDLE_NAMES:
        raise ValueError(f"unknown classifier {kind!r}; choose from {sorted(BUNDLE_NAMES)}")
    bundle = Bundle.open(default_bundle_path())
    if BUNDLE_NAMES[kind] not in bundle.models:
        raise FileNotFoundError(f"the shipped bundle has no {kind} model (has {bundle.models}); pass --model")
    try:
        return bundle.select(BUNDLE_NAMES[kind], "onnxruntime-cpu", precision or "auto").path
    except BundleError as exc:
        raise FileNotFoundError(str(exc)) from None


def default_presence_thresholds() -> dict[str, float]:
    """Per condition the presence threshold of the shipped bundle's severity card
    (``presence_thresholds``; 0.5 where the card records none)."""
    from device.assets import default_bundle_path
    from device.models.bundle import Bundle

    bundle = Bundle.open(default_bundle_path())
    return presence_thresholds(bundle.model(BUNDLE_NAMES["severity"]))
