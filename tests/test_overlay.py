"""Overlays an operator can read: text on a solid label bar below the frame (nothing of the frame
hidden, no outline smeared over the hairs), at a size that fits the frame, a legend of the colours
drawn, and grade panels with full level names."""

import cv2
import numpy as np
import pytest

from device.app.overlay import (
    CENTRE_BGR,
    MASK_ALPHA,
    MASK_BGR,
    MIN_TEXT_PX,
    NOTE_BGR,
    PANEL_BGR,
    draw_overlay,
    text_scale,
    thickness_colour,
    with_side_panel,
)
from device.contracts.constants import LEVEL_NAMES


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A colourful frame: any of it showing through a label would not be grey."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _bands(rows: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) of each run of consecutive True rows."""
    bands: list[tuple[int, int]] = []
    for y in np.flatnonzero(rows):
        if bands and y == bands[-1][1] + 1:
            bands[-1] = (bands[-1][0], int(y))
        else:
            bands.append((int(y), int(y)))
    return bands


@pytest.mark.parametrize(("w", "h"), [(640, 480), (320, 240), (1280, 960)])
def test_text_sits_on_a_solid_bar_below_the_frame_at_a_size_that_fits(w: int, h: int) -> None:
    frame = _noise(h, w)
    out = draw_overlay(frame, np.zeros((h, w), bool), lines=["hairs 42   median thickness 61 um   thin 18%"])
    # The frame is kept whole and untouched (no mask here); the bar is added below it.
    assert out.shape[1] == w and out.shape[0] > h
    assert np.array_equal(out[:h], frame)
    bar = out[h:].astype(int)
    white = (bar > 200).all(axis=2)
    first, last = _bands(white.any(axis=1))[0]
    line = bar[first : last + 1]
    # Capitals and ascenders at least MIN_TEXT_PX tall, growing with the frame (14 px at 640 wide).
    assert last - first + 1 >= max(MIN_TEXT_PX, round(14 * w / 640)) - 1
    # Behind the text only the panel colour and its blends with white: grey, nothing of the
    # frame and no dark outline; most of the band is the plain panel colour.
    assert (line.max(axis=2) - line.min(axis=2) <= 2).all()
    assert (line.min(axis=2) >= PANEL_BGR[0] - 1).all()
    assert (line == PANEL_BGR).all(axis=2).mean() > 0.6
    assert text_scale(w)[2] >= MIN_TEXT_PX


def test_long_notes_wrap_inside_the_frame_width() -> None:
    reason = (
        "pixel scale 9.00 um/px is outside what the models measure (1.5-6.0 um/px at 640x480): check the magnification"
    )
    out = draw_overlay(_noise(480, 640), np.zeros((480, 640), bool), lines=["hairs 0"], notes=[reason])
    bar = out[480:].astype(int)
    amber = (np.abs(bar - NOTE_BGR) <= 40).all(axis=2)
    assert len(_bands(amber.any(axis=1))) >= 2  # the reason takes two rows or more
    cols = np.flatnonzero(amber.any(axis=0))
    assert cols.min() >= 8 and cols.max() <= 640 - 8  # nothing cut at the edges


def test_legend_names_each_layer_drawn() -> None:
    h, w = 480, 640
    mask = np.zeros((h, w), bool)
    mask[200:206, 100:500] = True
    strands = [(np.array([[100, 203], [500, 203]]), 30.0)]
    centres = np.array([[300.0, 203.0]], np.float32)
    frame = np.full((h, w, 3), 90, np.uint8)
    bar = draw_overlay(frame, mask, strands, centres, lines=["hairs 1"])[h:]
    grey_tinted = np.clip(128 + MASK_ALPHA * np.array(MASK_BGR), 0, 255).round()
    # A solid swatch of the mask tint as it looks on skin, a located-hair circle, and the
    # thickness scale from thin (red) to thick (green).
    assert ((np.abs(bar.astype(int) - grey_tinted) <= 1).all(axis=2)).sum() >= 100
    assert (bar == CENTRE_BGR).all(axis=2).any()
    assert (bar == thickness_colour(0.0)).all(axis=2).any() and (bar == thickness_colour(1e3)).all(axis=2).any()
    # Layers that are not drawn are not in the legend.
    plain = draw_overlay(frame, mask, lines=["hairs 1"])[h:]
    assert not (plain == CENTRE_BGR).all(axis=2).any()
    assert not (plain == thickness_colour(1e3)).all(axis=2).any()


def test_grade_panel_writes_full_level_names() -> None:
    overlay = draw_overlay(_noise(480, 640), np.zeros((480, 640), bool), lines=["hairs 3"])
    probs = {"good": 0.1, "mild": 0.2, "moderate": 0.6, "severe": 0.1}
    view = with_side_panel(overlay, ["hairs 3"], [("dandruff", "moderate", probs)], width=300)
    assert view.shape[1] == 640 + 300 and view.shape[0] >= overlay.shape[0]
    panel = view[:, 640:].astype(int)
    white = (panel > 200).all(axis=2)
    bands = _bands(white.any(axis=1))
    # Rows: "hairs 3", "dandruff: moderate", then one per level, its name at the left.
    level_rows = bands[2 : 2 + len(LEVEL_NAMES)]
    assert len(level_rows) == len(LEVEL_NAMES)
    scale, stroke, _ = text_scale(640)
    for name, (top, bottom) in zip(LEVEL_NAMES, level_rows, strict=True):
        cols = np.flatnonzero(white[top : bottom + 1].any(axis=0))
        inked = cols.max() - cols.min() + 1
        full = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, stroke)[0][0]
        short = cv2.getTextSize(name[:3], cv2.FONT_HERSHEY_SIMPLEX, scale, stroke)[0][0]
        assert inked > short + 4 and abs(inked - full) <= 6, name
