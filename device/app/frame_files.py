"""Image files read one by one for the batch commands (``scalpedge segment``, ``classify``) and
their results written as they are produced.

An unreadable input file is recorded with its error and skipped, never fatal. An output that
cannot be written (read-only folder, full disk, a file where the folder should be) raises
``OutputError`` naming the path, once; what was written before stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from device.capture.imageio import FrameError, read_frame

__all__ = ["read_each", "unreadable", "OutputError", "ResultsFolder"]


Record = dict[str, Any]  # one file's entry in a command's report


def read_each(
    paths: Iterable[Path], records: list[Record], on_unreadable: Callable[[Record], None] | None = None
) -> Iterator[tuple[Path, np.ndarray, Record]]:
    """For each path, append its record ``{"file": path}`` to ``records``; yield (path, HxWx3
    uint8 BGR frame, record) for the command to fill in, or, for a file that cannot be read,
    put the reason under ``"error"``, print ``skipped: reason`` to stderr, hand the record to
    ``on_unreadable`` (e.g. ``ResultsFolder.add``) and go on."""
    for path in paths:
        record: Record = {"file": str(path)}
        records.append(record)
        try:
            frame = read_frame(path)
        except FrameError as exc:
            record["error"] = str(exc)
            print(f"skipped: {exc}", file=sys.stderr)
            if on_unreadable is not None:
                on_unreadable(record)
            continue
        yield path, frame, record


def unreadable(records: list[Record]) -> int:
    """How many of ``records`` are files ``read_each`` could not read."""
    return sum("error" in r for r in records)


class OutputError(Exception):
    """An output that cannot be written; the message names the path and the reason."""


def _why(path: Path, exc: OSError) -> OutputError:
    return OutputError(f"{path}: {exc.strerror or exc}")


class ResultsFolder:
    """A batch command's output folder. ``add`` appends one JSON object a line to ``lines_name``
    and flushes it, so each file's result is on disk as soon as it is measured; ``write_image``
    and ``write_json`` write files beside it (JSON atomically). Every failure raises
    OutputError naming the path. Use as a context manager (closes the lines file)."""

    def __init__(self, folder: str | Path, lines_name: str = "metrics.jsonl") -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _why(self.folder, exc) from None
        self.lines_path = self.folder / lines_name
        self.written = 0  # lines added
        try:
            self._lines = open(self.lines_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise _why(self.lines_path, exc) from None

    def add(self, record: Record) -> None:
        """Append ``record`` (JSON-serialisable) as one line and flush it to the file."""
        try:
            self._lines.write(json.dumps(record) + "\n")
            self._lines.flush()
        except OSError as exc:
            raise _why(self.lines_path, exc) from None
        self.written += 1

    def write_image(self, name: str, image: np.ndarray) -> Path:
        """Write HxW or HxWx3 uint8 ``image`` as PNG ``name`` (may hold subfolders) in the folder."""
        path = self.folder / name
        ok, encoded = cv2.imencode(".png", image)
        if not ok:
            raise OutputError(f"{path}: the image could not be encoded as PNG")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encoded.tobytes())
        except OSError as exc:
            raise _why(path, exc) from None
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON ``name`` in the folder, atomically (a temporary file
        renamed over it: a reader never sees half a file)."""
        path = self.folder / name
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps(obj, indent=2))
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _why(path, exc) from None
        return path

    def close(self) -> None:
        """Close the lines file (an error flushing it is not raised: every line was flushed)."""
        with contextlib.suppress(OSError):
            self._lines.close()

    def __enter__(self) -> ResultsFolder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
