"""The accuracy gate: an INT8 model ships only if it keeps the FP32 model's accuracy.

Scores come from held-out data the model never saw in calibration: Dice for the segmenter
(``segmenter_dice``), macro-F1 for classifiers (computed by the caller). A refused variant is
recorded in the model card with both scores, and the FP32 model stays the one the device uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2

from device.capture.imageio import list_images, read_frame
from device.models.onnx_segmenter import ModelSegmenter
from scoring.seg_metrics import Confusion, confusion, summarise

__all__ = ["GateResult", "gate", "segmenter_dice", "segmenter_scores"]


@dataclass(frozen=True)
class GateResult:
    """metric: name; reference/candidate: scores in [0, 1]; max_drop: allowed loss (same units);
    passed: candidate >= reference - max_drop."""

    metric: str
    reference: float
    candidate: float
    max_drop: float
    passed: bool

    @property
    def drop(self) -> float:
        return self.reference - self.candidate

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"drop": round(self.drop, 5)}

    def __str__(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        return (
            f"{self.metric}: {self.candidate:.4f} vs {self.reference:.4f} "
            f"(drop {self.drop * 100:+.2f} pt, allowed {self.max_drop * 100:.2f} pt): {verdict}"
        )


def gate(metric: str, reference: float, candidate: float, max_drop: float) -> GateResult:
    """Compare a candidate's score with the reference's; ``max_drop`` >= 0 in score units."""
    if max_drop < 0:
        raise ValueError("max_drop must be >= 0")
    return GateResult(metric, float(reference), float(candidate), float(max_drop), candidate >= reference - max_drop)


def segmenter_scores(model: str | Path, data: str | Path, limit: int | None = None, threads: int = 2) -> dict[str, Any]:
    """Pixel scores (dice, jaccard, ...) of an ONNX segmenter on ``data`` (a folder with
    ``images/`` and ``masks/``, masks as PNG with the image's stem, hair > 0)."""
    data = Path(data)
    images = list_images([str(data / "images")])[:limit] if limit else list_images([str(data / "images")])
    seg = ModelSegmenter.from_onnx(model, threads=threads)
    confs: list[Confusion] = []
    for path in images:
        mask_path = data / "masks" / f"{path.stem}.png"
        truth = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if truth is None:
            raise FileNotFoundError(f"no mask for {path.name} at {mask_path}")
        confs.append(confusion(seg.segment(read_frame(path)).mask(), truth > 0))
    return summarise(confs)


def segmenter_dice(model: str | Path, data: str | Path, limit: int | None = None, threads: int = 2) -> float:
    """Dice of an ONNX segmenter on a held-out folder (see ``segmenter_scores``)."""
    return float(segmenter_scores(model, data, limit, threads)["dice"])
