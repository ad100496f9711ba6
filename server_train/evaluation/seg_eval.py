"""Pixel-level evaluation on any folder with ``images/`` and ``masks/`` (same stems), plus
hair count and thickness error when the folder has the generator's ``truth.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from device.app.analysis import analyse_frame
from device.capture.imageio import IMAGE_SUFFIXES, read_frame
from device.contracts.constants import END_EDGE_PX, MASK_THRESHOLD
from device.models.hair_photo import HairPhotoSegmenter
from device.models.segmentation import Segmenter
from scoring.seg_metrics import confusion, miou, summarise

__all__ = ["evaluate_seg", "evaluate_photos", "paired_frames", "counting_frame_truth"]


def paired_frames(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs with the same stem; raises if the folder has none."""
    images = {p.stem: p for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in (root / "masks").glob("*.png")}
    pairs = [(images[s], masks[s]) for s in sorted(images) if s in masks]
    if not pairs:
        raise FileNotFoundError(f"{root}: no images/ and masks/ with matching stems")
    return pairs


def counting_frame_truth(ends: np.ndarray, height: int, width: int, edge_px: int = END_EDGE_PX) -> float:
    """The generator's truth for a counting-frame count (what an end-density model estimates,
    ``device.models.onnx_segmenter.hairs_from_ends``): strand ends (N, 2) (x, y) farther than
    ``edge_px`` from the frame's edge, halved and scaled to the whole frame's area."""
    e = np.asarray(ends, np.float64).reshape(-1, 2)
    inner = (e[:, 0] >= edge_px) & (e[:, 0] < width - edge_px) & (e[:, 1] >= edge_px) & (e[:, 1] < height - edge_px)
    area = height * width / ((height - 2 * edge_px) * (width - 2 * edge_px))
    return float(inner.sum()) / 2.0 * area


def evaluate_seg(
    segmenter: Segmenter, root: str | Path, limit: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Scores as in scoring.seg_metrics, plus count/thickness error against truth.jsonl if any:
    ``count_*`` against every visible strand, ``frame_count_*`` against the counting-frame
    truth (:func:`counting_frame_truth`, for sets written with strand ends)."""
    root = Path(root)
    pairs = paired_frames(root)[:limit]
    truth_path = root / "truth.jsonl"
    truth = {}
    if truth_path.exists():
        for line in truth_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                truth[row["stem"]] = row
    confs, count_err, thick_err, skel_err, frame_err = [], [], [], [], []
    for image_path, mask_path in tqdm(pairs, disable=not progress, desc=f"eval {getattr(segmenter, 'name', '')}"):
        frame = read_frame(image_path)
        gt = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
        result = analyse_frame(segmenter, frame)
        if result.seg is None:
            pred = np.zeros_like(gt)
        else:  # score at the label's own resolution
            prob = result.seg.prob
            if prob.shape != gt.shape:
                prob = cv2.resize(prob, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_LINEAR)
            pred = prob >= MASK_THRESHOLD
        confs.append(confusion(pred, gt))
        row = truth.get(image_path.stem)
        if row is not None:
            m = result.metrics
            count_err.append(m.count - row["count"])
            skel_err.append(len(m.strands) - row["count"])
            if "ends" in row:
                frame_err.append(m.count - counting_frame_truth(row["ends"], *gt.shape))
            if m.median_thickness_um is not None and row["thickness_px"]:
                true_px = float(np.median(row["thickness_px"]))
                thick_err.append(m.median_thickness_um / m.um_per_px - true_px)
    report: dict[str, Any] = {"model": getattr(segmenter, "name", type(segmenter).__name__), "data": str(root)}
    report.update(summarise(confs))
    if count_err:
        ce, se = np.asarray(count_err, float), np.asarray(skel_err, float)
        report["count_mae"] = float(np.abs(ce).mean())
        report["count_bias"] = float(ce.mean())
        report["skeleton_count_mae"] = float(np.abs(se).mean())
    if frame_err:
        fe = np.asarray(frame_err, float)
        report["frame_count_mae"] = float(np.abs(fe).mean())
        report["frame_count_bias"] = float(fe.mean())
    if thick_err:
        te = np.asarray(thick_err, float)
        report["median_thickness_error_px"] = {"mae": float(np.abs(te).mean()), "bias": float(te.mean())}
    return report


def evaluate_photos(
    segmenter: HairPhotoSegmenter, pairs: list[tuple[Path, Path]], progress: bool = True
) -> dict[str, Any]:
    """Scores of a hair-photo segmenter (``scoring.seg_metrics``: miou, accuracy, precision, f1,
    ...) on (photo, mask) ``pairs``, each photo at its own size, plus per photo its mIoU and
    hair coverage (predicted and true)."""
    if not pairs:
        raise ValueError("no photos to evaluate")
    confs, rows = [], []
    for image_path, mask_path in tqdm(pairs, disable=not progress, desc="eval hair_photo"):
        photo = read_frame(image_path)
        gt = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if gt is None:
            raise FileNotFoundError(f"unreadable mask {mask_path}")
        if gt.shape != photo.shape[:2]:
            gt = cv2.resize(gt, (photo.shape[1], photo.shape[0]), interpolation=cv2.INTER_NEAREST)
        pred = segmenter.segment(photo)
        c = confusion(pred.mask, gt > 127)
        confs.append(c)
        rows.append(
            {
                "stem": image_path.stem,
                "miou": round(miou(c), 4),
                "coverage": round(pred.coverage, 4),
                "true_coverage": round(float((gt > 127).mean()), 4),
            }
        )
    return summarise(confs) | {"per_photo": rows}
