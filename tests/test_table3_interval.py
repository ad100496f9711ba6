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


def _row(method: str, seed: int, d: float, s: float, e: float) -> dict[str, object]:
    return {
        "method": method,
        "seed": seed,
        "severe_f1": {"dandruff": d, "sebum": s, "erythema": e},
        "severe_f1_mean": (d + s + e) / 3,
    }


def test_folder_seed_reads_the_table3_layout() -> None:
    assert table3.folder_seed(Path("benchmarks/reports/table3/seed4")) == 4
    assert table3.folder_seed(Path("benchmarks/reports/table3")) == 0
    assert table3.folder_seed(Path("reports/seedling")) == 0


def test_paired_difference_uses_common_seeds_only() -> None:
    rows = [
        _row("masked", 0, 0.9, 0.5, 0.6),
        _row("masked", 1, 0.8, 0.4, 0.6),
        _row("masked", 2, 0.7, 0.3, 0.6),  # noise has no seed 2: left out
        _row("noise", 0, 0.8, 0.4, 0.6),
        _row("noise", 1, 0.9, 0.2, 0.6),
    ]
    d = table3.paired(rows, "masked", "noise")
    assert d["seeds"] == [0, 1]
    f = d["severe_f1_difference"]
    assert f["dandruff"]["mean"] == pytest.approx(0.0) and f["dandruff"]["wins"] == 1
    assert f["sebum"]["mean"] == pytest.approx(0.15) and f["sebum"]["wins"] == 2
    assert f["erythema"]["wins"] == 0  # ties are not wins
    lo, hi = f["sebum"]["ci95"]  # differences 0.1 and 0.2: t(1) interval 0.15 +- 12.706 * 0.05
    assert lo == pytest.approx(0.15 - 0.6353, abs=1e-3) and hi == pytest.approx(0.15 + 0.6353, abs=1e-3)
    assert table3.paired(rows, "masked", "augmix") is None


def test_one_common_seed_has_no_interval() -> None:
    rows = [_row("masked", 0, 0.9, 0.5, 0.6), _row("noise", 0, 0.8, 0.4, 0.6)]
    assert table3.paired(rows, "masked", "noise")["severe_f1_difference"]["mean"]["ci95"] is None


def test_two_runs_of_one_seed_are_refused() -> None:
    rows = [_row("masked", 0, 0.9, 0.5, 0.6), _row("masked", 0, 0.8, 0.5, 0.6), _row("noise", 0, 0.8, 0.4, 0.6)]
    for r, folder in zip(rows, ("a", "b", "a"), strict=True):
        r["reports"] = folder
    with pytest.raises(ValueError, match="seed 0 in both a and b"):
        table3.paired(rows, "masked", "noise")
