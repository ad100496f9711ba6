"""Preview images and the preview window.

``live_view`` draws the cheap live path (hair mask tint; count, FPS and the runtime's status
lines: the last diagnosis, an uncalibrated scale, on the label bar below the frame);
``diagnosis_view`` draws a full diagnosis (strands coloured by thickness, located hairs, metrics,
grades with full level names) for saving with each result. ``Preview`` shows frames in an
OpenCV window when a display and a GUI build of OpenCV exist, and does nothing otherwise
(headless scanners and CI).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from device.app.overlay import draw_overlay, with_side_panel
from device.app.pipeline import Diagnosis, LiveResult

__all__ = ["live_view", "diagnosis_view", "Preview", "display_available"]

log = logging.getLogger(__name__)


def live_view(live: LiveResult, fps: float | None = None, status: Sequence[str] = ()) -> np.ndarray:
    """(H + bar) x W x 3 uint8 BGR: the frame with the hair mask tinted, and below it one label
    bar holding the count, FPS, the ``status`` lines (the runtime's: last diagnosis, calibration)
    and a rejected frame's reason."""
    mask = live.seg.mask() if live.seg is not None else np.zeros(live.frame.shape[:2], bool)
    text = [f"hairs {live.count}" + (f"   {fps:.1f} fps" if fps is not None else "")]
    return draw_overlay(live.frame, mask, lines=[*text, *status], notes=[live.problem] if live.problem else [])


def diagnosis_view(diagnosis: Diagnosis) -> np.ndarray:
    """The analysis overlay (strands coloured by thickness, located hairs, label bar) with a
    panel on the right: the figures, then one grade per condition with a bar per level, each
    labelled with the level's full name."""
    m = diagnosis.analysis.metrics
    lines = [f"hairs {m.count}"]
    if m.median_thickness_um is not None:
        lines.append(f"median {m.median_thickness_um:.0f} um")
    if m.thin_ratio is not None:
        lines.append(f"thin {100 * m.thin_ratio:.0f} %")
    if m.density_per_cm2 is not None:
        lines.append(f"{m.density_per_cm2:.0f} hairs/cm2")
    rows: list[tuple[str, dict[str, Any]]] = list(diagnosis.conditions.items())
    if diagnosis.alopecia is not None:
        rows.append(("alopecia", diagnosis.alopecia))
    grades = [(name, str(r["level"]), r["probabilities"]) for name, r in rows]
    return with_side_panel(diagnosis.analysis.overlay(), lines, grades)


def display_available() -> bool:
    """True when a window can be opened: a display is set and OpenCV was built with a GUI."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    gui = [line for line in cv2.getBuildInformation().splitlines() if line.strip().startswith("GUI:")]
    return bool(gui) and "NONE" not in gui[0].upper()


class Preview:
    """An OpenCV window ("window"), nothing ("headless"), or whichever works ("auto").
    ``show`` returns the key pressed (or -1)."""

    def __init__(self, mode: str = "auto", title: str = "ScalpEdge") -> None:
        if mode not in ("auto", "window", "headless"):
            raise ValueError(f"preview mode {mode!r}; choose auto, window or headless")
        can = display_available()
        if mode == "window" and not can:
            raise ValueError("preview window requested but no display or no GUI build of OpenCV")
        self.enabled = can if mode == "auto" else mode == "window"
        self.title = title
        log.info("preview: %s", "window" if self.enabled else "headless")

    def show(self, image: np.ndarray) -> int:
        if not self.enabled:
            return -1
        cv2.imshow(self.title, image)
        return int(cv2.waitKey(1))

    def close(self) -> None:
        if self.enabled:
            cv2.destroyWindow(self.title)
