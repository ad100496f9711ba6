"""The shared reconnect backoff: doubling, cap, reset, bad bounds."""

import pytest

from resilience import Backoff


def test_delay_doubles_to_the_cap_and_schedules_the_next_attempt() -> None:
    b = Backoff(0.5, 3.0)
    assert b.due(0.0)
    assert [b.failed(10.0) for _ in range(4)] == [0.5, 1.0, 2.0, 3.0]
    assert b.next_at == 13.0 and not b.due(12.9) and b.due(13.0)


def test_reset_starts_again_from_the_minimum() -> None:
    b = Backoff(0.2, 30.0)
    b.failed(0.0)
    b.failed(0.0)
    b.reset()
    assert b.due(0.0) and b.failed(1.0) == 0.2


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)])
def test_bad_bounds_are_refused(lo: float, hi: float) -> None:
    with pytest.raises(ValueError, match="0 < min_s <= max_s"):
        Backoff(lo, hi)
