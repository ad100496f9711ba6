"""Overlay drawing for saved results and the live preview.

An overlay is the frame with its hair mask tinted, located hairs circled and strands coloured by
thickness, above a solid label bar: text at a size that fits the frame (capitals at least
MIN_TEXT_PX tall, no outline) and a legend of the colours used. The bar is added below the
frame, so no hair is hidden under a label and the frame's H x W pixels stay where they are (a
mask of the frame lines up with the overlay's top H rows). ``with_side_panel`` adds a panel of
figures and condition grades (full level names) beside an overlay, for a diagnosis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import cv2
import numpy as np

from device.contracts.constants import LEVEL_NAMES

__all__ = [
    "draw_overlay",
    "label_bar",
    "with_side_panel",
    "thickness_colour",
    "text_scale",
    "LegendItem",
    "MASK_BGR",
    "MASK_ALPHA",
    "CENTRE_BGR",
    "PANEL_BGR",
    "TEXT_BGR",
    "NOTE_BGR",
    "LEVEL_BGR",
    "MIN_TEXT_PX",
    "THIN_UM",
    "THICK_UM",
]

MASK_BGR = (255, 160, 0)  # hair mask tint, added at MASK_ALPHA
MASK_ALPHA = 0.45
CENTRE_BGR = (255, 0, 255)  # located hairs: circles
PANEL_BGR = (40, 40, 40)  # label bar and side panel
TEXT_BGR = (255, 255, 255)
NOTE_BGR = (80, 200, 255)  # amber: why a frame was rejected, warnings
LEVEL_BGR = {"good": (80, 180, 60), "mild": (60, 200, 230), "moderate": (40, 140, 250), "severe": (60, 60, 235)}
THIN_UM, THICK_UM = 20.0, 100.0  # strand colours run red (thin) -> yellow -> green (thick) over this range
MIN_TEXT_PX = 12  # capital height of any text, px
_TEXT_PX_AT_640 = 14  # capital height in a 640-wide frame; scales with the width
_CAP_PX_PER_SCALE = 20.0  # capital height of FONT_HERSHEY_SIMPLEX at font scale 1
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_SWATCH_GREY = 128  # what the mask swatch tints, to show the tint as it looks on skin

LegendItem = Literal["mask", "centres", "thickness"]
_LEGEND_LABELS: dict[str, str] = {
    "mask": "hair mask",
    "centres": "located hair",
    "thickness": f"strand thickness {THIN_UM:.0f}-{THICK_UM:.0f} um",
}


def thickness_colour(um: float, lo: float = THIN_UM, hi: float = THICK_UM) -> tuple[int, int, int]:
    """BGR colour from thin (red) to thick (green) through yellow."""
    t = float(np.clip((um - lo) / (hi - lo), 0.0, 1.0))
    return (0, int(255 * min(1.0, 2 * t)), int(255 * min(1.0, 2 * (1 - t))))


def text_scale(width: int) -> tuple[float, int, int]:
    """(font scale, stroke px, capital height px) for text on an image ``width`` px wide:
    14 px capitals at 640 wide, scaled with the width, never under MIN_TEXT_PX."""
    cap = max(MIN_TEXT_PX, round(_TEXT_PX_AT_640 * width / 640))
    scale = cap / _CAP_PX_PER_SCALE
    return scale, max(1, round(scale * 1.4)), cap


def _text_width(text: str, scale: float, stroke: int) -> int:
    return int(cv2.getTextSize(text, _FONT, scale, stroke)[0][0])


def _wrap(text: str, max_px: int, scale: float, stroke: int) -> list[str]:
    """``text`` broken at spaces into lines at most ``max_px`` wide (a longer word stays whole)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and _text_width(f"{lines[-1]} {word}", scale, stroke) <= max_px:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _tint(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    """``image`` with MASK_BGR added at MASK_ALPHA where the HxW bool ``where`` is set."""
    tint = np.zeros_like(image)
    tint[where] = MASK_BGR
    return np.asarray(cv2.addWeighted(image, 1.0, tint, MASK_ALPHA, 0))


def _swatch(bar: np.ndarray, item: str, x: int, y: int, size: int) -> None:
    """Draw ``item``'s legend swatch, ``size`` px square, top left at (x, y); thickness: a
    gradient 3 swatches wide."""
    if item == "mask":
        patch = np.full((size, size, 3), _SWATCH_GREY, np.uint8)
        bar[y : y + size, x : x + size] = _tint(patch, np.ones((size, size), bool))
    elif item == "centres":
        r = size // 2
        cv2.circle(bar, (x + r, y + r), max(3, r - 2), CENTRE_BGR, 2, cv2.LINE_AA)
    else:
        for i in range(3 * size):
            um = THIN_UM + (THICK_UM - THIN_UM) * i / (3 * size - 1)
            bar[y + size // 3 : y + size - size // 3, x + i] = thickness_colour(um)


def _swatch_width(item: str, size: int) -> int:
    return 3 * size if item == "thickness" else size


def label_bar(
    width: int, lines: Sequence[str] = (), notes: Sequence[str] = (), legend: Sequence[LegendItem] = ()
) -> np.ndarray:
    """A solid PANEL_BGR bar ``width`` px wide (height: what it holds), HxWx3 uint8 BGR: the text
    ``lines`` (white) and ``notes`` (amber), each wrapped to the width, then the legend swatches
    with their labels, flowed into rows."""
    scale, stroke, cap = text_scale(width)
    pad, row = cap, round(cap * 1.9)
    gap = cap  # between a swatch and its label, and between legend entries
    rows: list[list[tuple[str, str | None, tuple[int, int, int]]]] = []  # (text, swatch, colour) per row
    for text, colour in [(t, TEXT_BGR) for t in lines] + [(t, NOTE_BGR) for t in notes]:
        rows += [[(part, None, colour)] for part in _wrap(text, width - 2 * pad, scale, stroke)]
    used = width  # start a new legend row
    for item in legend:
        label = _LEGEND_LABELS[item]
        w = _swatch_width(item, cap + 4) + gap + _text_width(label, scale, stroke)
        if used + w > width - pad:
            rows.append([])
            used = pad
        rows[-1].append((label, item, TEXT_BGR))
        used += w + 2 * gap
    bar = np.empty((2 * pad + (len(rows) - 1) * row + cap if rows else 0, width, 3), np.uint8)
    bar[:] = PANEL_BGR
    for i, entries in enumerate(rows):
        base = pad + i * row + cap  # text baseline
        x = pad
        for text, swatch, colour in entries:
            if swatch is not None:
                size = cap + 4
                _swatch(bar, swatch, x, base - cap - 2, size)
                x += _swatch_width(swatch, size) + gap
            cv2.putText(bar, text, (x, base), _FONT, scale, colour, stroke, cv2.LINE_AA)
            x += _text_width(text, scale, stroke) + 2 * gap
    return bar


def draw_overlay(
    frame_bgr: np.ndarray,
    mask: np.ndarray,
    strands: Sequence[tuple[np.ndarray, float]] = (),
    centres: np.ndarray | None = None,
    lines: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> np.ndarray:
    """(H + bar) x W x 3 uint8 BGR: the HxWx3 uint8 BGR frame with the HxW hair ``mask`` tinted,
    strand skeletons coloured by thickness (strands: (K,2) int (x, y) points with thickness in
    micrometres), located hairs (``centres``, (N,2) (x, y) px) circled, above a ``label_bar`` of
    the text ``lines``, the ``notes`` (a rejected frame's reason, warnings) and a legend of the
    layers drawn."""
    out = _tint(frame_bgr, mask.astype(bool))
    legend: list[LegendItem] = ["mask"]
    for points, um in strands:
        if len(points) >= 2:
            cv2.polylines(out, [points.reshape(-1, 1, 2).astype(np.int32)], False, thickness_colour(um), 1, cv2.LINE_AA)
    if any(len(points) >= 2 for points, _ in strands):
        legend.append("thickness")
    if centres is not None:
        for x, y in np.asarray(centres).reshape(-1, 2):
            cv2.circle(out, (int(round(x)), int(round(y))), 4, CENTRE_BGR, 1, cv2.LINE_AA)
        legend.insert(1, "centres")
    return np.vstack([out, label_bar(out.shape[1], lines, notes, legend)])


def _grade_panel(
    width: int, lines: Sequence[str], grades: Sequence[tuple[str, str, Mapping[str, float]]]
) -> np.ndarray:
    """A solid PANEL_BGR panel ``width`` px wide: ``lines``, then per (name, level, P(level))
    a title and one row per level: its full name and a bar (length = P, colour = level)."""
    scale, stroke, cap = text_scale(640)
    pad, row, small = cap, round(cap * 1.9), cap + 7
    names_px = max(_text_width(lvl, scale, stroke) for lvl in LEVEL_NAMES)
    bar_x = 2 * pad + names_px
    bar_px = width - bar_x - pad
    height = 2 * pad + row * len(lines) + sum(row + small * len(LEVEL_NAMES) for _ in grades)
    panel = np.empty((height, width, 3), np.uint8)
    panel[:] = PANEL_BGR
    y = pad + cap  # baseline
    for text in lines:
        cv2.putText(panel, text, (pad, y), _FONT, scale, TEXT_BGR, stroke, cv2.LINE_AA)
        y += row
    for name, level, probs in grades:
        y += pad // 2
        cv2.putText(panel, f"{name}: {level}", (pad, y), _FONT, scale, TEXT_BGR, stroke, cv2.LINE_AA)
        y += small + 2
        for lvl in LEVEL_NAMES:
            p = float(np.clip(probs.get(lvl, 0.0), 0.0, 1.0))
            cv2.putText(panel, lvl, (pad, y), _FONT, scale, TEXT_BGR, stroke, cv2.LINE_AA)
            cv2.rectangle(panel, (bar_x, y - cap), (bar_x + max(1, int(bar_px * p)), y), LEVEL_BGR[lvl], -1)
            y += small
        y += row - small - 2 - pad // 2
    return panel


def with_side_panel(
    overlay: np.ndarray,
    lines: Sequence[str],
    grades: Sequence[tuple[str, str, Mapping[str, float]]],
    width: int = 300,
) -> np.ndarray:
    """The HxWx3 uint8 BGR ``overlay`` with a panel ``width`` px wide on its right: the figures
    ``lines``, then per condition (name, level, {level name: probability}) its grade and a bar
    per level labelled with the level's full name. The shorter of the two is padded with
    PANEL_BGR at the bottom."""
    panel = _grade_panel(width, lines, grades)
    h = max(overlay.shape[0], panel.shape[0])

    def padded(image: np.ndarray) -> np.ndarray:
        extra = np.empty((h - image.shape[0], image.shape[1], 3), np.uint8)
        extra[:] = PANEL_BGR
        return np.vstack([image, extra])

    return np.hstack([padded(overlay), padded(panel)])
