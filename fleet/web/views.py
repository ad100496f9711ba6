"""What the dashboard's pages show, computed from the store's rows: pure functions, no I/O.

A *visit* is one session of one client (``session_id``); its figure for a metric is the mean
over the visit's accepted scans (every site), so a rejected scan (out of focus, ...) never
pulls a visit's figure down. Visits are ordered by ``visit_date``, then by their first scan.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from fleet.store import DeviceStatus, StoredResult

__all__ = [
    "TREND_METRICS",
    "ResultView",
    "TrendMetric",
    "Visit",
    "ago",
    "battery_text",
    "state_text",
    "thumbnail_jpeg",
    "utc",
    "visits",
]


@dataclass(frozen=True)
class TrendMetric:
    """A metric plotted over a client's visits: record key, title, unit shown, scale, decimals."""

    key: str
    title: str
    unit: str
    scale: float = 1.0  # shown value = stored value x scale (a ratio as percent)
    decimals: int = 0


#: The client trend's plots, in page order.
TREND_METRICS = (
    TrendMetric("hair_count", "Hair count", "hairs"),
    TrendMetric("density", "Density", "hairs/cm²"),
    TrendMetric("thin_ratio", "Thin-hair ratio", "%", 100.0, 1),
)


@dataclass(frozen=True)
class ResultView:
    """One stored result as a table row or a detail page shows it."""

    stored: StoredResult
    record: dict[str, Any]

    @classmethod
    def of(cls, stored: StoredResult) -> ResultView:
        return cls(stored, stored.record())

    @property
    def accepted(self) -> bool:
        return bool(self.record.get("quality", {}).get("accepted"))

    def value(self, key: str) -> float | None:
        """A metric's value (its unit is the record's), or None when absent or not measured."""
        v = self.record.get("metrics", {}).get(key, {}).get("value")
        return None if v is None or isinstance(v, bool) else float(v)

    def shown(self, key: str, scale: float = 1.0, decimals: int = 0) -> str:
        v = self.value(key)
        return "—" if v is None else f"{v * scale:.{decimals}f}"

    @property
    def has_thumbnail(self) -> bool:
        return isinstance(self.record.get("thumbnail"), Mapping)


@dataclass
class Visit:
    """One session of a client: when, where on the head, how many scans, the mean figures."""

    session_id: str
    visit_date: str  # YYYY-MM-DD: the record's visit_date, else the day of its first scan
    first_captured: str
    devices: list[str] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    scans: int = 0
    accepted: int = 0
    means: dict[str, float | None] = field(default_factory=dict)  # metric key -> mean of accepted scans


_TREND_KEYS = tuple(m.key for m in TREND_METRICS)


def visits(results: Sequence[StoredResult], keys: Sequence[str] = _TREND_KEYS) -> list[Visit]:
    """A client's results grouped into visits (by ``session_id``), oldest visit first, with
    the mean of each metric in ``keys`` over the visit's accepted scans (None: none measured)."""
    grouped: dict[str, tuple[Visit, list[ResultView]]] = {}
    for r in sorted(results, key=lambda r: r.captured_at):
        sid = r.session_id or "(no session)"
        if sid not in grouped:
            grouped[sid] = (Visit(sid, r.visit_date or r.captured_at[:10], r.captured_at), [])
        visit, views = grouped[sid]
        view = ResultView.of(r)
        visit.scans += 1
        for name, seen in ((r.device_id, visit.devices), (r.site, visit.sites)):
            if name and name not in seen:
                seen.append(name)
        if view.accepted:
            visit.accepted += 1
            views.append(view)
    out = []
    for visit, views in grouped.values():
        for key in keys:
            vals = [v for v in (view.value(key) for view in views) if v is not None and math.isfinite(v)]
            visit.means[key] = sum(vals) / len(vals) if vals else None
        out.append(visit)
    return sorted(out, key=lambda v: (v.visit_date, v.first_captured))


def thumbnail_jpeg(record: Mapping[str, Any]) -> bytes | None:
    """The JPEG bytes of a record's ``thumbnail``; None when it has none or it is not a JPEG."""
    thumb = record.get("thumbnail")
    if not isinstance(thumb, Mapping) or not isinstance(thumb.get("jpeg_base64"), str):
        return None
    try:
        data = base64.b64decode(thumb["jpeg_base64"], validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data[:3] == b"\xff\xd8\xff" else None


def utc(epoch: float | None) -> str:
    """``2024-06-01 12:00:03 UTC`` (or ``—``) for epoch seconds."""
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(epoch: float | None, now: float | None = None) -> str:
    """How long ago, roughly: ``12 s ago``, ``3 min ago``, ``2 h ago``, ``4 d ago`` (or ``never``)."""
    if epoch is None:
        return "never"
    s = max(0.0, (time.time() if now is None else now) - epoch)
    for limit, div, unit in ((90, 1, "s"), (90 * 60, 60, "min"), (48 * 3600, 3600, "h")):
        if s < limit:
            return f"{s / div:.0f} {unit} ago"
    return f"{s / 86400:.0f} d ago"


def battery_text(battery: Any) -> str:
    """A battery reading as the scanner reported it (percent, or the bridge's dict) for a cell."""
    if battery is None:
        return "—"
    if isinstance(battery, Mapping):
        pct = battery.get("percent")
        text = "—" if pct is None else f"{float(pct):.0f} %"
        return text + (" charging" if battery.get("charging") else "")
    if isinstance(battery, int | float) and not isinstance(battery, bool):
        return f"{float(battery):.0f} %"
    return str(battery)


def state_text(device: DeviceStatus) -> tuple[str, str]:
    """(CSS class, words) of a scanner's state: online, offline with why, or no status yet."""
    if device.state == "online":
        return "online", "online"
    if device.state == "offline":
        return "offline", f"offline ({device.status_reason})" if device.status_reason else "offline"
    return "unknown", "no status yet"
