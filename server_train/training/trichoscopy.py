"""Real trichoscopy labelled with one box per hair (Pascal VOC), as training and validation data.

The Huashan follicle set (``follicle-counts/{train,val}``): 1280x1024 frames at 70x with a
burned-in text bar at the top, one box per hair shaft, classes ``premium`` (thick terminal),
``single``, ``undersize`` (thin, miniaturised) and ``abnormal``. Stems are ``DATE_SUBJECT_SITE``;
frames of one subject look alike, so every split here is by subject.

A frame becomes a network input the way the device makes one (``prepare_frame``: text bar cut,
centre-cropped to 4:3, resized to FRAME_HEIGHT x FRAME_WIDTH); each box becomes a Gaussian of
mass ``DENSITY_SCALE`` at its centre in the hair density target, and undersize boxes also in
the thin density target.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.contracts.constants import DENSITY_SCALE, DENSITY_SIGMA_PX, FRAME_HEIGHT, FRAME_WIDTH
from device.contracts.preprocess import crop_box, prepare_frame

__all__ = [
    "TEXT_BAR_PX",
    "THIN_CLASS",
    "LabelledFrame",
    "read_voc",
    "load_labelled",
    "subject_of",
    "subject_split",
    "frame_and_points",
    "density_target",
]

TEXT_BAR_PX = 40  # burned-in text bar at the top of each 1280x1024 frame
THIN_CLASS = "undersize"


@dataclass(frozen=True)
class LabelledFrame:
    """One labelled frame. boxes: (N, 4) float32 x1, y1, x2, y2 in the original frame's pixels
    (corners sorted); classes: N class names."""

    image: Path
    boxes: np.ndarray
    classes: tuple[str, ...]

    @property
    def stem(self) -> str:
        return self.image.stem

    @property
    def subject(self) -> str:
        return subject_of(self.stem)


def read_voc(path: str | Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N, 4) float32 boxes (x1, y1, x2, y2, corners sorted: some tools store them reversed)
    and N class names of a Pascal VOC annotation file."""
    root = ET.parse(path).getroot()
    boxes, classes = [], []
    for obj in root.iter("object"):
        classes.append((obj.findtext("name") or obj.findtext("class") or "").strip())
        b = obj.find("bndbox")
        if b is None:
            raise ValueError(f"{path}: an object without a bndbox")
        x1, y1, x2, y2 = (float(b.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    arr = np.asarray(boxes, np.float32).reshape(-1, 4)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: a box without all four coordinates")
    return arr, tuple(classes)


def load_labelled(roots: Sequence[str | Path]) -> list[LabelledFrame]:
    """Every ``images/*.jpg`` with an ``annotations/<stem>.xml`` under each root, sorted by stem.
    A stem found under two roots is an error (the same frame twice would leak across a split)."""
    frames: dict[str, LabelledFrame] = {}
    for root in map(Path, roots):
        images = sorted((root / "images").glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"{root}/images holds no .jpg frames")
        for image in images:
            ann = root / "annotations" / f"{image.stem}.xml"
            if not ann.exists():
                continue
            if image.stem in frames:
                raise ValueError(f"frame {image.stem} is under two roots")
            boxes, classes = read_voc(ann)
            frames[image.stem] = LabelledFrame(image, boxes, classes)
    return [frames[k] for k in sorted(frames)]


def subject_of(stem: str) -> str:
    """The subject of a ``DATE_SUBJECT_SITE`` stem: the stem without its last ``_N``."""
    head, sep, tail = stem.rpartition("_")
    return head if sep and tail.isdigit() else stem


def subject_split(
    frames: Sequence[LabelledFrame], val_percent: int = 20, salt: str = "scalpedge-counts"
) -> tuple[list[LabelledFrame], list[LabelledFrame]]:
    """(train, val) by subject: a subject is in val when sha256(salt + subject) mod 100 falls
    below ``val_percent``. Stable across machines and data versions (a subject never moves when
    frames are added), and no subject is on both sides."""
    if not 0 <= val_percent <= 100:
        raise ValueError(f"val_percent={val_percent} is not a percentage")

    def bucket(subject: str) -> int:
        return int(hashlib.sha256(f"{salt}{subject}".encode()).hexdigest(), 16) % 100

    train = [f for f in frames if bucket(f.subject) >= val_percent]
    val = [f for f in frames if bucket(f.subject) < val_percent]
    return train, val


def frame_and_points(item: LabelledFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame as the device sees it and where its hairs are.

    Returns (FRAME_HEIGHT x FRAME_WIDTH x 3 uint8 BGR, (N, 2) float32 box centres (x, y) in its
    pixels, (N,) bool: box is ``undersize``). The text bar is cut first; boxes whose centre
    falls outside the frame the device keeps (the 4:3 centre crop) are dropped.
    """
    raw = cv2.imread(str(item.image), cv2.IMREAD_COLOR)
    if raw is None:
        raise ValueError(f"cannot read {item.image}")
    raw = raw[TEXT_BAR_PX:]
    x0, y0, w, h = crop_box(raw.shape[0], raw.shape[1])
    frame = prepare_frame(raw)
    centres = np.stack([(item.boxes[:, 0] + item.boxes[:, 2]) / 2, (item.boxes[:, 1] + item.boxes[:, 3]) / 2], 1)
    centres = centres.reshape(-1, 2) - np.array([x0, y0 + TEXT_BAR_PX], np.float32)
    keep = (centres[:, 0] >= 0) & (centres[:, 0] < w) & (centres[:, 1] >= 0) & (centres[:, 1] < h)
    scale = np.array([FRAME_WIDTH / w, FRAME_HEIGHT / h], np.float32)
    thin = np.array([c == THIN_CLASS for c in item.classes], bool)
    return frame, (centres[keep] * scale).astype(np.float32), thin[keep]


def density_target(points: np.ndarray, height: int, width: int, sigma: float = DENSITY_SIGMA_PX) -> np.ndarray:
    """HxW float32 density: a Gaussian of std ``sigma`` px (cut at 3 sigma) and mass DENSITY_SCALE
    at each (x, y) point (cut, not renormalised, where it leaves the frame)."""
    out = np.zeros((height, width), np.float32)
    r = int(np.ceil(3 * sigma))
    ax = np.arange(-r, r + 1, dtype=np.float32)
    for x, y in np.asarray(points, np.float32).reshape(-1, 2):
        cx, cy = int(np.floor(x)), int(np.floor(y))
        gx = np.exp(-((ax + cx + 0.5 - x) ** 2) / (2 * sigma**2))
        gy = np.exp(-((ax + cy + 0.5 - y) ** 2) / (2 * sigma**2))
        g = np.outer(gy, gx)
        g *= DENSITY_SCALE / g.sum()  # the discrete kernel holds the whole mass
        xa, xb, ya, yb = cx - r, cx + r + 1, cy - r, cy + r + 1
        sx, sy = max(0, -xa), max(0, -ya)
        xa, ya, xb, yb = max(xa, 0), max(ya, 0), min(xb, width), min(yb, height)
        if xa < xb and ya < yb:
            out[ya:yb, xa:xb] += g[sy : sy + yb - ya, sx : sx + xb - xa]
    return out
