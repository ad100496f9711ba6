"""Preview images and the preview window.

``live_view`` draws the cheap live path (hair mask tint, count, FPS); ``diagnosis_view`` draws
a full diagnosis (strands coloured by thickness, metrics, severity bars) for saving with each
result. ``Preview`` shows frames in an OpenCV window when a display and a GUI build of OpenCV
exist, and does nothing otherwise (headless scanners and CI).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import cv2
import numpy as np

from device.app.overlay import draw_overlay
from device.app.pipeline import Diagnosis, LiveResult
from device.contracts.constants import LEVEL_NAMES

__all__ = ["live_view", "diagnosis_view", "Preview", "display_available"]

log = logging.getLogger(__name__)

_LEVEL_COLOURS = {"good": (80, 180, 60), "mild": (60, 200, 230), "moderate": (40, 140, 250), "severe": (50, 50, 230)}


def live_view(live: LiveResult, fps: float | None = None) -> np.ndarray:
    """HxWx3 uint8 BGR: the frame with the hair mask tinted and count / FPS / problem text."""
    mask = live.seg.mask() if live.seg is not None else np.zeros(live.frame.shape[:2], bool)
    text = [live.problem] if live.problem else [f"hairs: {live.count}"]
    if fps is not None:
        text.append(f"{fps:.1f} fps")
    return draw_overlay(live.frame, mask, lines=text)


def diagnosis_view(diagnosis: Diagnosis) -> np.ndarray:
    """The analysis overlay (strands coloured thin red -> thick green) with a 220 px panel of
    metrics and one bar per condition (length = P(level), colour = level) on the right."""
    left = diagnosis.analysis.overlay()
    h = left.shape[0]
    panel = np.full((h, 220, 3), 245, np.uint8)
    y = 24

    def put(text: str, colour: tuple[int, int, int] = (30, 30, 30), scale: float = 0.45) -> None:
        nonlocal y
        cv2.putText(panel, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
        y += 20

    m = diagnosis.analysis.metrics
    put(f"hairs {m.count}", scale=0.6)
    if m.median_thickness_um is not None:
        put(f"median {m.median_thickness_um:.0f} um")
    if m.thin_ratio is not None:
        put(f"thin {100 * m.thin_ratio:.0f} %")
    if m.density_per_cm2 is not None:
        put(f"{m.density_per_cm2:.0f} hairs/cm2")
    y += 6
    rows: list[tuple[str, dict[str, Any]]] = list(diagnosis.conditions.items())
    if diagnosis.alopecia is not None:
        rows.append(("alopecia", diagnosis.alopecia))
    for name, result in rows:
        level = str(result["level"])
        put(f"{name}: {level}")
        probs = result["probabilities"]
        for lvl in LEVEL_NAMES:
            p = float(probs.get(lvl, 0.0))
            cv2.rectangle(panel, (8, y - 10), (8 + int(150 * p), y - 2), _LEVEL_COLOURS[lvl], -1)
            cv2.putText(panel, lvl[:3], (164, y - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (60, 60, 60), 1, cv2.LINE_AA)
            y += 11
        y += 8
    if not rows:
        put("no condition models in bundle", (120, 120, 120), 0.4)
    return np.hstack([left, panel])


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
