"""Exponential backoff for reconnect loops that must not block (serial port, camera, broker).

The loop asks ``due(now)`` each turn; after a failed attempt it calls ``failed(now)``, which
schedules the next attempt ``delay_s`` later and doubles the delay up to ``max_s``; a success
calls ``reset()``. Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delay doubling from ``min_s`` to ``max_s`` (seconds) between failed attempts."""

    min_s: float
    max_s: float
    delay_s: float = field(init=False)
    next_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s (got {self.min_s}, {self.max_s})")
        self.delay_s = self.min_s

    def due(self, now: float) -> bool:
        """Whether the next attempt may run at ``now``."""
        return now >= self.next_at

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``: returns the delay (s) before the next one, then doubles it."""
        waited = self.delay_s
        self.next_at = now + waited
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return waited

    def reset(self) -> None:
        """A successful attempt: the next failure waits ``min_s`` again; an attempt may run now."""
        self.delay_s = self.min_s
        self.next_at = 0.0
