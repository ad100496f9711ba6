"""Hair counts against real trichoscopy labelled with one box per hair (Pascal VOC), as in
the Huashan follicle set (``follicle-counts/val``). Label-free: nothing is tuned on these."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from device.app.analysis import analyse_frame
from device.capture.imageio import read_frame
from device.models.segmentation import Segmenter

__all__ = ["evaluate_counts", "read_voc_boxes", "TEXT_BAR_PX", "THIN_CLASS", "TRICHOSCOPY_UM_PER_PX"]

TEXT_BAR_PX = 40  # burned-in text bar at the top of each 1280x1024 frame
THIN_CLASS = "undersize"
TRICHOSCOPY_UM_PER_PX = 2.8  # 70x at 1280x1024: the burned-in 1.0 mm scale bar spans ~358 px


def read_voc_boxes(path: Path) -> list[str]:
    """Class names of the boxes in a Pascal VOC annotation file."""
    root = ET.parse(path).getroot()
    return [(obj.findtext("class") or obj.findtext("name") or "").strip() for obj in root.iter("object")]


def evaluate_counts(
    segmenter: Segmenter, root: str | Path, um_per_px: float, limit: int | None = None, progress: bool = True
) -> dict[str, Any]:
    """Per frame: predicted hair count vs number of boxes; predicted thin-hair ratio vs share
    of ``undersize`` boxes. um_per_px refers to the original frame's pixels."""
    root = Path(root)
    images = sorted((root / "images").glob("*.jpg"))[:limit]
    if not images:
        raise FileNotFoundError(f"{root}/images holds no .jpg frames")
    rows = []
    for path in tqdm(images, disable=not progress, desc="eval counts"):
        ann = root / "annotations" / f"{path.stem}.xml"
        if not ann.exists():
            continue
        classes = read_voc_boxes(ann)
        frame = read_frame(path)[TEXT_BAR_PX:]
        result = analyse_frame(segmenter, frame, um_per_px=um_per_px)
        m = result.metrics
        rows.append(
            {
                "stem": path.stem,
                "true_count": len(classes),
                "pred_count": m.count,
                "skeleton_count": len(m.strands),
                "true_thin_ratio": (sum(c == THIN_CLASS for c in classes) / len(classes)) if classes else 0.0,
                "pred_thin_ratio": m.thin_ratio,
                "median_thickness_um": m.median_thickness_um,
            }
        )
    true = np.array([r["true_count"] for r in rows], float)
    pred = np.array([r["pred_count"] for r in rows], float)
    skel = np.array([r["skeleton_count"] for r in rows], float)
    thin = [(r["pred_thin_ratio"], r["true_thin_ratio"]) for r in rows if r["pred_thin_ratio"] is not None]

    def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
        return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else None

    return {
        "model": getattr(segmenter, "name", type(segmenter).__name__),
        "data": str(root),
        "um_per_px": um_per_px,
        "frames": len(rows),
        "count_mae": float(np.abs(pred - true).mean()),
        "count_bias": float((pred - true).mean()),
        "pearson_r": pearson(pred, true),
        "skeleton_count_mae": float(np.abs(skel - true).mean()),
        "skeleton_pearson_r": pearson(skel, true),
        "thin_ratio_mae": float(np.mean([abs(p - t) for p, t in thin])) if thin else None,
        "mean_true_count": float(true.mean()),
        "per_frame": rows,
    }
