"""Tiny labelled trichoscopy sets for the counting tests: frames shaped like the Huashan set
(1280x1024 with a text bar on top), dark hair stubs on a light scalp, one Pascal VOC box per
stub, stems ``DATE_SUBJECT_SITE``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_voc(path: Path, boxes: list[tuple[float, float, float, float]], classes: list[str], reverse: int = 0) -> None:
    """A Pascal VOC file; the first ``reverse`` boxes are written with swapped corners (as some
    labelling tools store them)."""
    objects = []
    for i, ((x1, y1, x2, y2), name) in enumerate(zip(boxes, classes, strict=True)):
        if i < reverse:
            x1, x2, y1, y2 = x2, x1, y2, y1
        objects.append(
            f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    path.write_text(
        "<annotation><size><width>1280</width><height>1024</height></size>" + "".join(objects) + "</annotation>"
    )


def stub_frame(rng: np.random.Generator, n: int, thin_every: int = 4) -> tuple[np.ndarray, list, list]:
    """A 1280x1024 BGR frame with ``n`` hair stubs away from the edges, its boxes and classes
    (every ``thin_every``-th stub thin and labelled ``undersize``)."""
    frame = np.full((1024, 1280, 3), (150, 170, 200), np.uint8)
    frame[:40] = 20  # the text bar
    cv2.putText(frame, "70X", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    boxes, classes, centres = [], [], []
    for i in range(n):
        cx, cy = rng.uniform(150, 1130), rng.uniform(190, 900)
        while any(np.hypot(cx - x, cy - y) < 110 for x, y in centres):  # stubs apart: one hair, one box
            cx, cy = rng.uniform(150, 1130), rng.uniform(190, 900)
        centres.append((cx, cy))
        angle = rng.uniform(0, np.pi)
        dx, dy = 45 * np.cos(angle), 45 * np.sin(angle)
        thin = i % thin_every == thin_every - 1
        p1, p2 = (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy))
        cv2.line(frame, p1, p2, (40, 35, 30), 6 if thin else 16, cv2.LINE_AA)
        boxes.append((min(p1[0], p2[0]) - 4, min(p1[1], p2[1]) - 4, max(p1[0], p2[0]) + 4, max(p1[1], p2[1]) + 4))
        classes.append("undersize" if thin else "premium")
    return frame, boxes, classes


def write_set(root: Path, subjects: int = 4, sites: int = 2, seed: int = 0) -> Path:
    """``root/images/*.jpg`` and ``root/annotations/*.xml`` for ``subjects`` x ``sites`` frames."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for s in range(subjects):
        for site in range(1, sites + 1):
            stem = f"220101_A{s:03d}_{site}"
            frame, boxes, classes = stub_frame(rng, int(rng.integers(4, 12)))
            cv2.imwrite(str(root / "images" / f"{stem}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_voc(root / "annotations" / f"{stem}.xml", boxes, classes, reverse=1)
    return root
