"""Pieces of a diagnosis queued on the pipeline's worker thread (``device.app.pipeline``): a
task the worker has not started when its result is needed is taken back and run by the thread
that needs it."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["WorkerTask", "timed"]


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
