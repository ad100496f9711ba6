"""The thread plumbing of the serial link and the simulated MCU: each owns one daemon thread."""

from __future__ import annotations

import threading
from typing import TypeVar

__all__ = ["Worker"]

_W = TypeVar("_W", bound="Worker")


class Worker:
    """Owns one daemon thread running ``_run()`` until ``_stop`` is set; ``with worker:`` calls
    ``start()`` and ``stop()``, which subclasses write around ``_spawn`` and ``_join``."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self: _W) -> _W:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError

    def _spawn(self, name: str) -> None:
        """Start the thread (again after a stop)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _join(self) -> None:
        """Ask the thread to end and wait for it (no-op when not started)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self: _W) -> _W:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
