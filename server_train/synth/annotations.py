"""Overlays that capture software burns into saved microscope frames: measurement lines and
circles, scale bars, text labels and info bars (seen on real trichoscopy exports). They are
thin, coloured and line-like, so they teach the segmenter hard negatives: never hair."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["draw_annotations"]

# Saturated colours only: a black or white line would be indistinguishable from a hair.
_COLOURS = ((40, 40, 220), (200, 60, 40), (40, 200, 230), (200, 40, 200), (40, 180, 40))
_LABELS = ("RC0", "DC0", "L1", "#12", "70x", "1.0 mm", "P1")


def _readout_lines(rng: np.random.Generator) -> list[str]:
    """A measurement readout: a label, then 0-3 value lines with random numbers."""
    values = [
        f"C={rng.uniform(0.5, 30):.3f} mm",
        f"A={rng.uniform(0.1, 40):.3f} mm^2",
        f"r={rng.uniform(0.05, 5):.3f} mm",
        f"D={rng.uniform(0.01, 0.2):.3f} mm",
        f"L={rng.uniform(0.1, 6):.2f} mm",
    ]
    picked = [values[i] for i in rng.permutation(len(values))[: int(rng.integers(0, 4))]]
    return [str(_LABELS[int(rng.integers(len(_LABELS)))]), *picked]


def _draw_readout(rng: np.random.Generator, img: np.ndarray, colour: tuple[int, ...]) -> None:
    """Text lines as capture software burns them in, half of them on a translucent panel."""
    h, w = img.shape[:2]
    org = (int(rng.integers(0, w - 80)), int(rng.integers(15, h)))
    scale, thick = float(rng.uniform(0.35, 0.8)), int(rng.integers(1, 3))
    lines = _readout_lines(rng)
    step = int(28 * scale) + 4
    if rng.random() < 0.5:  # a label box: the text on a translucent grey panel
        width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for t in lines)
        y0, y1 = max(org[1] - step, 0), min(org[1] + step * (len(lines) - 1) + 6, h)
        x0, x1 = max(org[0] - 4, 0), min(org[0] + width + 4, w)
        panel = np.array(img[y0:y1, x0:x1], np.float32)
        img[y0:y1, x0:x1] = (panel * 0.45 + float(rng.uniform(110, 200)) * 0.55).astype(np.uint8)
    for i, word in enumerate(lines):
        cv2.putText(img, word, (org[0], org[1] + step * i), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def draw_annotations(rng: np.random.Generator, img: np.ndarray) -> dict[str, Any]:
    """Draw 1-4 random overlays in place on HxWx3 uint8 BGR ``img``; returns meta."""
    h, w = img.shape[:2]
    kinds = []
    for _ in range(int(rng.integers(1, 5))):
        colour = tuple(int(c) for c in _COLOURS[int(rng.integers(len(_COLOURS)))])
        kind = str(rng.choice(["circle", "line", "scale", "text", "bar"], p=[0.25, 0.2, 0.1, 0.35, 0.1]))
        kinds.append(kind)
        if kind == "circle":
            centre = (int(rng.integers(-w // 2, w + w // 2)), int(rng.integers(-h // 2, h + h // 2)))
            cv2.circle(img, centre, int(rng.integers(80, 700)), colour, 1, cv2.LINE_AA)
        elif kind == "line":
            p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p0, p1, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
        elif kind == "scale":
            x0, y0 = int(rng.integers(5, w // 3)), int(rng.integers(h // 2, h - 10))
            length = int(rng.integers(60, 220))
            cv2.line(img, (x0, y0), (x0 + length, y0), colour, 1, cv2.LINE_AA)
            cv2.line(img, (x0, y0), (x0, y0 - length), colour, 1, cv2.LINE_AA)
        elif kind == "text":
            _draw_readout(rng, img, colour)
        else:  # info bar along the top or bottom edge
            bar_h = int(rng.integers(10, 22))
            y0 = 0 if rng.random() < 0.6 else h - bar_h
            img[y0 : y0 + bar_h] = (np.array(img[y0 : y0 + bar_h], np.float32) * 0.3 + 60).astype(np.uint8)
            cv2.putText(
                img,
                "1280x1024 2022/01/05 09:00 70x",
                (4, y0 + bar_h - 4),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                (230, 230, 230),
                1,
            )
    return {"annotations": kinds}
