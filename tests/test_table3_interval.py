"""The Table 3 gatherer's severe-F1 bootstrap interval (benchmarks/table3.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("table3", Path(__file__).parents[1] / "benchmarks" / "table3.py")
assert _spec is not None and _spec.loader is not None
table3 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table3)


def test_perfect_grader_has_a_point_interval_at_one() -> None:
    confusion = [[50, 0, 0, 0], [0, 30, 0, 0], [0, 0, 15, 0], [0, 0, 0, 5]]
    assert table3.severe_f1_interval(confusion, draws=500, seed=0) == (1.0, 1.0)


def test_interval_brackets_the_point_estimate_and_narrows_with_more_frames() -> None:
    small = [[40, 5, 0, 0], [5, 30, 5, 0], [0, 5, 10, 5], [0, 0, 5, 10]]  # severe F1 = 20/30
    lo, hi = table3.severe_f1_interval(small, draws=2000, seed=0)
    assert lo < 2 / 3 < hi
    big = [[10 * v for v in row] for row in small]
    lo10, hi10 = table3.severe_f1_interval(big, draws=2000, seed=0)
    assert lo10 < 2 / 3 < hi10
    assert hi10 - lo10 < 0.5 * (hi - lo)


def test_empty_matrix_is_refused() -> None:
    with pytest.raises(ValueError):
        table3.severe_f1_interval([[0] * 4] * 4, draws=10, seed=0)
