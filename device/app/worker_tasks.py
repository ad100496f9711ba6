"""Pieces of a diagnosis queued on the pipeline's worker thread (``device.app.pipeline``): a
task the worker has not started when its result is needed is taken back and run by the thread
that needs it; ``locate_beside`` queues the located hairs and their classes that way."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from device.app.analysis import LocatedHairs, hair_points
from device.contracts.preprocess import hair_patches
from device.models.hair_classes import HairClassifier
from device.models.segmentation import SegOutput

__all__ = ["WorkerTask", "timed", "locate_beside"]


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """(fn(*args), its wall time in ms)."""
    t = time.perf_counter()
    return fn(*args), (time.perf_counter() - t) * 1000


class WorkerTask:
    """One piece of a diagnosis queued on the pipeline's worker. ``result()`` takes it back and
    runs it in the calling thread when the worker has not started it (the worker is busy with
    an earlier piece), so neither thread waits while the other has queued work."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], future: Future[Any] | None) -> None:
        self.fn, self.args, self.future = fn, args, future
        self._taken_back: Future[Any] | None = None

    def result(self) -> Any:
        if self._taken_back is None and (self.future is None or self.future.cancel()):
            self._taken_back = Future()
            try:
                self._taken_back.set_result(self.fn(*self.args))
            except Exception as exc:  # raised again by every result(), as a worker's would be
                self._taken_back.set_exception(exc)
        return (self._taken_back or self.future).result()  # type: ignore[union-attr]


def locate_beside(
    beside: Callable[..., WorkerTask],
    frame: np.ndarray,
    seg: SegOutput,
    um_per_px: float,
    classes: HairClassifier | None,
) -> Callable[[], LocatedHairs]:
    """``locate_hairs`` of ``seg`` (a density output: it reads no mask) queued by ``beside`` (the
    pipeline's ``fn, *args -> WorkerTask``): the hairs' points and patches first, then the per-hair
    class model's batches in two halves (the longest frame-only work: split, the calling thread
    can take back the half the worker has not started; a half taken back waits for the points if
    the worker is still finding them). Returns a callable that gives the LocatedHairs (the same
    every call); ``ms``: the three pieces' own run times."""

    def points_and_patches() -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int, float]:
        t = time.perf_counter()
        centres, points = hair_points(seg, um_per_px)
        patches, cut = None, 0
        if classes is not None and points is not None and len(points):
            patches = hair_patches(frame, points, um_per_px, size=classes.patch_px)
            batches = -(-len(patches) // classes.batch)
            cut = min(len(patches), -(-batches // 2) * classes.batch)  # whole batches; the first half the larger
        return centres, points, patches, cut, (time.perf_counter() - t) * 1000

    found = beside(points_and_patches)

    def half(second: bool) -> tuple[np.ndarray, float]:
        _, _, patches, cut, _ = found.result()
        if classes is None or patches is None:
            return np.zeros(0), 0.0
        return timed(classes.patch_probabilities, patches[cut:] if second else patches[:cut])

    halves = [beside(half, second) for second in (False, True)] if classes is not None else []
    made: list[LocatedHairs] = []

    def located() -> LocatedHairs:
        if not made:
            centres, points, _, _, ms = found.result()
            probabilities = None
            if classes is not None and points is not None:
                parts = [h.result() for h in halves]
                probabilities = np.concatenate([p for p, _ in parts])
                ms += sum(part_ms for _, part_ms in parts)
            made.append(LocatedHairs.of(centres, points, probabilities, classes, ms))
        return made[0]

    return located
