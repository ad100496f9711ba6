"""Image files read one by one for the batch commands (``scalpedge segment``, ``classify``):
an unreadable file is recorded with its error and skipped, never fatal."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from device.capture.imageio import FrameError, read_frame

__all__ = ["read_each", "unreadable"]


Record = dict[str, Any]  # one file's entry in a command's report


def read_each(paths: Iterable[Path], records: list[Record]) -> Iterator[tuple[Path, np.ndarray, Record]]:
    """For each path, append its record ``{"file": path}`` to ``records``; yield (path, HxWx3
    uint8 BGR frame, record) for the command to fill in, or, for a file that cannot be read,
    put the reason under ``"error"``, print ``skipped: reason`` to stderr and go on."""
    for path in paths:
        record: Record = {"file": str(path)}
        records.append(record)
        try:
            frame = read_frame(path)
        except FrameError as exc:
            record["error"] = str(exc)
            print(f"skipped: {exc}", file=sys.stderr)
            continue
        yield path, frame, record


def unreadable(records: list[Record]) -> int:
    """How many of ``records`` are files ``read_each`` could not read."""
    return sum("error" in r for r in records)
