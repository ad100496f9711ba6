"""Seq ranges: sorted, disjoint, non-touching inclusive ``(lo, hi)`` pairs of integers.

The fleet consumer keeps every set of seqs (held, unrecoverable, flagged) in this form, so a
device reporting two million seqs lost costs one pair, not two million integers, and every
operation here is O(number of ranges).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

__all__ = ["Range", "add", "chunks", "clip", "fmt", "gaps", "overlaps", "union"]

Range = tuple[int, int]


def add(ranges: list[Range], lo: int, hi: int) -> int:
    """Insert ``[lo, hi]`` into ``ranges`` in place, merging overlapping and adjacent ranges.
    Returns how many of its seqs were not in ``ranges`` before."""
    i = bisect_left(ranges, (lo, lo))
    if i > 0 and ranges[i - 1][1] >= lo - 1:
        i -= 1
    j, new_lo, new_hi, known = i, lo, hi, 0
    while j < len(ranges) and ranges[j][0] <= hi + 1:
        a, b = ranges[j]
        known += max(0, min(b, hi) - max(a, lo) + 1)
        new_lo, new_hi = min(new_lo, a), max(new_hi, b)
        j += 1
    ranges[i:j] = [(new_lo, new_hi)]
    return hi - lo + 1 - known


def union(a: Iterable[Range], b: Iterable[Range]) -> list[Range]:
    """Both range lists merged into one."""
    out: list[Range] = []
    for lo, hi in sorted([*a, *b]):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def gaps(ranges: list[Range], lo: int, hi: int) -> list[Range]:
    """The parts of ``[lo, hi]`` not in ``ranges``."""
    out: list[Range] = []
    expect = lo
    for a, b in ranges[max(0, bisect_right(ranges, lo, key=_start) - 1) :]:
        if a > hi:
            break
        if a > expect:
            out.append((expect, min(a - 1, hi)))
        expect = max(expect, b + 1)
    if expect <= hi:
        out.append((expect, hi))
    return out


def _start(r: Range) -> int:
    return r[0]


def overlaps(ranges: list[Range], lo: int, hi: int) -> bool:
    """Whether any seq of ``[lo, hi]`` is in ``ranges``."""
    return lo <= hi and gaps(ranges, lo, hi) != [(lo, hi)]


def clip(ranges: list[Range], limit: int) -> list[Range]:
    """``ranges`` cut at ``limit`` (seqs above it dropped)."""
    return [(lo, min(hi, limit)) for lo, hi in ranges if lo <= limit]


def chunks(ranges: list[Range], max_seqs: int, max_chunks: int) -> list[Range]:
    """The first ``max_chunks`` pieces of ``ranges``, lowest first, each of at most ``max_seqs``
    seqs (work bounded by ``max_chunks``, however large the ranges)."""
    out: list[Range] = []
    for lo, hi in ranges:
        while lo <= hi and len(out) < max_chunks:
            out.append((lo, min(hi, lo + max_seqs - 1)))
            lo += max_seqs
        if len(out) >= max_chunks:
            break
    return out


def fmt(ranges: list[Range], limit: int = 8) -> str:
    """``"3-7, 9, ..."`` for a log line: at most ``limit`` ranges, then how many more."""
    text = ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges[:limit])
    more = len(ranges) - limit
    return f"{text} (and {more} more)" if more > 0 else text
