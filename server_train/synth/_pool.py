"""Frames rendered in parallel: the one process pool of the data set writers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from multiprocessing import get_context
from typing import TypeVar

import cv2

__all__ = ["map_jobs"]

J = TypeVar("J")
R = TypeVar("R")


def _init_worker() -> None:
    cv2.setNumThreads(1)


def map_jobs(fn: Callable[[J], R], jobs: list[J], workers: int) -> Iterator[R]:
    """``fn(job)`` of every job, in order: in this process for ``workers`` <= 1 or fewer than 4
    jobs, else in ``workers`` spawned processes (OpenCV single-threaded in each). ``fn`` and the
    jobs must pickle."""
    if workers <= 1 or len(jobs) < 4:
        for job in jobs:
            yield fn(job)
        return
    with get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(fn, jobs, chunksize=4)
