"""Calibration data readers: representative frames in, model input dicts out.

They follow ONNX Runtime's ``CalibrationDataReader`` protocol (``get_next()`` returns a
{input name: array} dict, or None when exhausted; ``rewind()`` starts over), and prepare each
frame exactly as the device does (``device.contracts.preprocess`` for the segmenters,
``device.models.classifiers`` for the classifiers), so the ranges calibrated here are the
ranges the device sees. ``model_reader`` picks the preparation from the graph's input name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from device.capture.imageio import IMAGE_SUFFIXES, FrameError, list_images, read_frame
from device.contracts.constants import CLS_INPUT, DISEASE_INPUT, HAIR_PHOTO_INPUT, SEG_INPUT
from device.contracts.preprocess import photo_input, to_network_input

__all__ = ["FrameReader", "ArrayReader", "frame_files", "balanced_frame_files", "model_reader"]


def _image_folders(sources: Sequence[str | Path]) -> list[Path]:
    """Each source, or its ``images/`` sub-folder when it has one."""
    return [Path(s) / "images" if (Path(s) / "images").is_dir() else Path(s) for s in sources]


def frame_files(sources: Sequence[str | Path], limit: int | None = None, seed: int = 0) -> list[Path]:
    """Image files under ``sources`` (files or folders, a folder's ``images/`` when present),
    shuffled deterministically by ``seed`` and cut to ``limit``. Raises if none are found."""
    files = list_images([str(f) for f in _image_folders(sources)])
    if not files:
        raise FileNotFoundError(f"no calibration frames under {[str(s) for s in sources]}")
    order = np.random.default_rng(seed).permutation(len(files))
    picked = [files[i] for i in order]
    return picked[:limit] if limit else picked


def balanced_frame_files(sources: Sequence[str | Path], n: int) -> list[Path]:
    """Up to ``n`` image files spread evenly over ``sources`` (folders, their ``images/`` when
    present, searched recursively): n / len(sources) from each, evenly spaced in its sorted
    listing (deterministic). Raises if none are found."""
    found: list[Path] = []
    for folder in _image_folders(sources):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        k = max(1, n // max(len(sources), 1))
        found += [files[int(i)] for i in np.linspace(0, len(files) - 1, min(k, len(files)))] if files else []
    if not found:
        raise FileNotFoundError(f"no calibration frames under {[str(s) for s in sources]}")
    return found


def model_reader(files: Sequence[str | Path], model: str | Path, preprocess: str | None = None) -> FrameReader:
    """A reader preparing ``files`` for the ONNX ``model`` as the device would: the segmenter's
    preprocessing, the condition classifier's, or the disease classifier's (``preprocess``
    mode, default the graph's ``preprocess`` metadata, else "paper"), by the graph's input."""
    from device.models.backends import OrtBackend
    from device.models.classifiers import prepare_condition_input, prepare_disease_input

    backend = OrtBackend(model, threads=1)
    shapes = backend.input_shapes
    if SEG_INPUT in shapes:
        return FrameReader(files, SEG_INPUT, shapes[SEG_INPUT][2], shapes[SEG_INPUT][3])
    if CLS_INPUT in shapes:
        h, w = shapes[CLS_INPUT][2], shapes[CLS_INPUT][3]
        return FrameReader(files, CLS_INPUT, h, w, lambda im, h, w: prepare_condition_input(im, (w, h)))
    if HAIR_PHOTO_INPUT in shapes:
        side = shapes[HAIR_PHOTO_INPUT][3]
        return FrameReader(files, HAIR_PHOTO_INPUT, side, side, lambda im, _h, w: photo_input(im, w))
    if DISEASE_INPUT in shapes:
        mode = preprocess or backend.metadata.get("preprocess", "paper")
        side = shapes[DISEASE_INPUT][3]
        return FrameReader(files, DISEASE_INPUT, side, side, lambda im, _h, w: prepare_disease_input(im, mode, w))
    raise ValueError(f"{model}: inputs {sorted(shapes)} name no model calibration knows")


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
