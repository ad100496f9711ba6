"""Calibration data readers: representative frames in, model input dicts out.

They follow ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next()`` returns a
{input name: array} dict, or None when exhausted; ``rewind()`` starts over), and prepare each
frame exactly as the device does (``device.contracts.preprocess``), so the ranges calibrated here are
the ranges the device sees.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from device.capture.imageio import FrameError, list_images, read_frame
from device.contracts.preprocess import to_network_input

__all__ = ["FrameReader", "ArrayReader", "frame_files"]


def frame_files(sources: Sequence[str | Path], limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files under ``sources`` (files or folders, a folder's ``images/`` when present),
    shuffled deterministically by ``seed`` and cut to ``limit``. Raises if none are found."""
    folders = [Path(s) / "images" if (Path(s) / "images").is_dir() else Path(s) for s in sources]
    files = list_images([str(f) for f in folders])
    if not files:
        raise FileNotFoundError(f"no calibration frames under {[str(s) for s in sources]}")
    order = np.random.default_rng(seed).permutation(len(files))
    picked = [files[i] for i in order]
    return picked[:limit] if limit else picked


class FrameReader:
    """Frames from files, each turned into {input_name: 1x3xHxW float32} by ``prepare``
    (default: the segmenter's preprocessing at height x width). Unreadable files are skipped
    and counted in ``skipped``."""

    def __init__(
        self,
        files: Iterable[str | Path],
        input_name: str,
        height: int,
        width: int,
        prepare: Callable[[np.ndarray, int, int], np.ndarray] = to_network_input,
    ) -> None:
        self.files = [Path(f) for f in files]
        if not self.files:
            raise ValueError("FrameReader needs at least one frame")
        self.input_name = input_name
        self.height, self.width = height, width
        self.prepare = prepare
        self.skipped: list[str] = []
        self._index = 0

    def __len__(self) -> int:
        return len(self.files)

    def get_next(self) -> dict[str, np.ndarray] | None:
        while self._index < len(self.files):
            path = self.files[self._index]
            self._index += 1
            try:
                frame = read_frame(path)
            except FrameError as exc:
                self.skipped.append(str(exc))
                continue
            return {self.input_name: self.prepare(frame, self.height, self.width)}
        return None

    def rewind(self) -> None:
        self._index = 0


class ArrayReader:
    """Ready-made input dicts (e.g. classifier inputs computed elsewhere)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        if not feeds:
            raise ValueError("ArrayReader needs at least one input dict")
        self.feeds = list(feeds)
        self._index = 0

    def __len__(self) -> int:
        return len(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self.feeds):
            return None
        self._index += 1
        return self.feeds[self._index - 1]

    def rewind(self) -> None:
        self._index = 0
