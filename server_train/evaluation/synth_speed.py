"""Rendering speed of the synthetic generator (frames per second, one process)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import cv2

from server_train.evaluation.speed import cpu_name
from server_train.synth import SynthConfig, render_index

__all__ = ["bench_synth"]


def bench_synth(n: int = 100, repeats: int = 3, modes: tuple[str, ...] = ("scalp", "trimmed")) -> dict[str, Any]:
    """Render ``n`` frames ``repeats`` times per mode (normal and hard) in this process with
    one OpenCV thread; report the median frames/s of the repeats."""
    cv2.setNumThreads(1)
    results = []
    for mode in modes:
        for hard in (False, True):
            cfg = SynthConfig(mode=mode, hard=hard)
            rates = []
            for _ in range(repeats):
                t = time.perf_counter()
                for i in range(n):
                    render_index(0, i, cfg)
                rates.append(n / (time.perf_counter() - t))
            results.append(
                {
                    "mode": mode,
                    "hard": hard,
                    "frames": n,
                    "repeats": repeats,
                    "median_fps": round(statistics.median(rates), 2),
                    "min_fps": round(min(rates), 2),
                }
            )
    return {"cpu": cpu_name(), "size": "640x480", "results": results}
