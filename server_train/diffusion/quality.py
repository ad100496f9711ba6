"""Translation quality (``scalpedge eval translation``) and the Figure-4/5-style grid.

Per source frame and target condition (translated to ``severe``), masked (DiffuseIT-M) and
unmasked:
- ``hair_dice``: Dice of the segmenter's hair mask (P > 0.5) on the source vs on the output;
- ``hair_psnr_db``: PSNR (dB, 8-bit) of output vs source over the source's hair pixels, all
  frames pooled (capped at ``PSNR_CAP`` = identical);
- ``target_hit_rate``: share of outputs the grader grades at the target level (the shipped
  severity classifier through ``device.models.classifiers`` unless ``grader`` is given), and
  ``target_hit_rate_by_condition``;
- ``kid``: kernel inception distance (unbiased MMD^2, cubic polynomial kernel) between pooled
  features of real frames (the folder's frames that are not sources) and the outputs, with our
  guidance features (``features.py``); ``kid_sources`` is the sources vs the same real frames
  (the floor for this sample size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from device.capture.imageio import IMAGE_SUFFIXES, read_frame
from device.contracts.constants import CONDITION_NAMES, LEVEL_NAMES
from server_train.diffusion.data import to_tensor
from server_train.diffusion.features import GuidanceFeatures
from server_train.diffusion.translate import Translator, hair_mask

__all__ = ["dice", "masked_psnr", "kid", "evaluate_translation", "source_frames", "PSNR_CAP"]

PSNR_CAP = 100.0
SEVERE = len(LEVEL_NAMES) - 1


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two HxW bool masks (1.0 when both are empty)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def masked_psnr(sq_err_sum: float, count: int) -> float:
    """PSNR in dB of 8-bit images from a summed squared error over ``count`` values (capped)."""
    if count == 0 or sq_err_sum <= 0:
        return PSNR_CAP
    return float(min(PSNR_CAP, 10 * np.log10(255.0**2 / (sq_err_sum / count))))


def kid(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 between NxD and MxD features (N, M >= 2)."""
    d = real.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    krr, kff, krf = k(real, real), k(fake, fake), k(real, fake)
    n, m = len(real), len(fake)
    return float(
        (krr.sum() - np.trace(krr)) / (n * (n - 1)) + (kff.sum() - np.trace(kff)) / (m * (m - 1)) - 2 * krf.mean()
    )


def source_frames(folder: str | Path) -> list[Path]:
    """Sorted image files of ``folder`` (or its ``images/``)."""
    root = Path(folder)
    root = root / "images" if (root / "images").is_dir() else root
    if not root.is_dir():
        raise FileNotFoundError(f"no frame folder {folder}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images in {root}")
    return files


@torch.no_grad()
def _pooled(features: GuidanceFeatures, frames: list[np.ndarray], size: int) -> np.ndarray:
    x = torch.cat([to_tensor(f, size) for f in frames])
    return features.pooled(x).double().numpy()


class _Tally:
    def __init__(self) -> None:
        self.dice: list[float] = []
        self.sq, self.count = 0.0, 0
        self.outputs: list[np.ndarray] = []
        self.hits: dict[str, list[bool]] = {}  # condition -> hit per output

    def add(
        self, src: np.ndarray, out: np.ndarray, m_src: np.ndarray, m_out: np.ndarray, condition: str, hit: bool
    ) -> None:
        self.dice.append(dice(m_src, m_out))
        diff = out[m_src].astype(np.float64) - src[m_src].astype(np.float64)
        self.sq += float((diff**2).sum())
        self.count += diff.size
        self.hits.setdefault(condition, []).append(hit)
        self.outputs.append(out)

    def report(self, real_feats: np.ndarray, features: GuidanceFeatures, size: int) -> dict[str, Any]:
        return {
            "hair_dice": round(float(np.mean(self.dice)), 4),
            "hair_dice_min": round(float(np.min(self.dice)), 4),
            "hair_psnr_db": round(masked_psnr(self.sq, self.count), 2),
            "target_hit_rate": round(sum(map(sum, self.hits.values())) / len(self.outputs), 4),
            "target_hit_rate_by_condition": {c: round(float(np.mean(h)), 4) for c, h in self.hits.items()},
            "kid": round(kid(real_feats, _pooled(features, self.outputs, size)), 5),
        }


def evaluate_translation(
    translator: Translator,
    data: str | Path,
    n: int = 16,
    conditions: list[str] | None = None,
    grader: str | None = None,
    figure: str | None = None,
    seed: int = 0,
    n_real: int = 64,
) -> dict[str, Any]:
    """Translate the first ``n`` frames of ``data`` to severe in each condition, masked and
    unmasked; the metrics of the module docstring (masked at the top level, the ablation under
    ``unmasked``)."""
    from device.models.classifiers import SeverityClassifier, default_classifier_path

    conds = conditions or list(CONDITION_NAMES)
    files = source_frames(data)
    if len(files) < 3:
        raise ValueError(f"{data}: need at least 3 frames (sources and real references)")
    n = min(n, len(files) - 2)
    grade = SeverityClassifier.from_onnx(grader or default_classifier_path("severity"))
    thr = translator.config.threshold
    real = [read_frame(p) for p in files[n : n + n_real]]
    size = translator.size
    real_feats = _pooled(translator.features, real, size)
    tallies = {"masked": _Tally(), "unmasked": _Tally()}
    grid: list[list[np.ndarray]] = []
    for i, path in enumerate(files[:n]):
        src = read_frame(path)
        m_src = hair_mask(translator.segmenter.segment(src).prob, thr, 0)
        row = [src]
        for c in conds:
            for kind, tally in tallies.items():
                out = translator.translate(src, {c: SEVERE}, seed=seed + i, masked=kind == "masked", mask_full=m_src)
                m_out = hair_mask(translator.segmenter.segment(out.image).prob, thr, 0)
                hit = grade.predict(out.image).levels[c] == LEVEL_NAMES[SEVERE]
                tally.add(src, out.image, m_src, m_out, c, hit)
                row.append(out.image)
        grid.append(row)
    report: dict[str, Any] = {
        **tallies["masked"].report(real_feats, translator.features, size),
        "kid_sources": round(kid(real_feats, _pooled(translator.features, [r[0] for r in grid], size)), 5),
        "unmasked": tallies["unmasked"].report(real_feats, translator.features, size),
        "frames": n,
        "translations": n * len(conds),
        "real_frames": len(real),
        "target": {c: LEVEL_NAMES[SEVERE] for c in conds},
        "data": str(data),
        "grader": str(grader or "shipped severity classifier"),
        "settings": translator.info(),
    }
    if figure:
        report["figure"] = str(grid_figure(grid[:4], conds, figure))
    return report


def grid_figure(rows: list[list[np.ndarray]], conds: list[str], path: str | Path, cell: int = 160) -> Path:
    """PNG grid: per row a source, then per condition its masked and unmasked translation."""
    heads = ["source"] + [f"{c} {k}" for c in conds for k in ("masked", "unmasked")]
    band = 22
    canvas = np.full((band + cell * len(rows), cell * len(heads), 3), 255, np.uint8)
    for j, h in enumerate(heads):
        cv2.putText(canvas, h, (j * cell + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            tile = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA)
            canvas[band + i * cell : band + (i + 1) * cell, j * cell : (j + 1) * cell] = tile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"cannot write {path}")
    return path
