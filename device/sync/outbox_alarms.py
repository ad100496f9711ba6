"""The outbox's alarms: one event of a kind per ``ALARM_REPEAT_S``, repeats counted between.

An alarm is a dict ``{"event", "severity", "message", "repeats_suppressed", "ts", ...}`` handed
to the sink (the MQTT link publishes it on the ``event`` topic) and logged. Events that carry
data the fleet must not miss (``seqs_lost``) are raised with ``throttle=False``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from device.contracts.records import utc_timestamp

__all__ = ["AlarmCallback", "Alarms", "ALARM_REPEAT_S"]

log = logging.getLogger("device.sync.outbox")

AlarmCallback = Callable[[dict[str, Any]], None]
ALARM_REPEAT_S = 60.0  # one alarm of a kind per this many seconds; refusals are counted between


class Alarms:
    """Rate-limits alarms by kind and hands them to ``sink`` (None: only logged)."""

    def __init__(self, sink: AlarmCallback | None) -> None:
        self.sink = sink
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def raise_(self, kind: str, severity: str, message: str, throttle: bool = True, **fields: Any) -> None:
        """Raise alarm ``kind`` ("warning" or "error"); ``fields`` go into the event as they are."""
        now = time.monotonic()
        last = self._last.get(kind)
        if throttle and last is not None and now - last < ALARM_REPEAT_S:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            log.debug("outbox alarm %s (repeat suppressed): %s", kind, message)
            return
        self._last[kind] = now
        repeats = self._suppressed.pop(kind, 0)
        log.log(logging.ERROR if severity == "error" else logging.WARNING, "outbox alarm %s: %s", kind, message)
        event = {"event": kind, "severity": severity, "message": message, "repeats_suppressed": repeats, **fields}
        event["ts"] = utc_timestamp()  # when raised, however late the sink publishes it
        if self.sink is not None:
            try:
                self.sink(event)
            except Exception:  # an alarm sink must never break storing records
                log.exception("outbox: alarm callback failed for %s", kind)
