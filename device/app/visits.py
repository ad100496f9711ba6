"""A client's visits from the scanner's result records: figures per site and for the whole
visit, and the change since the previous visit.

Records come from the device outbox (``load_records``: read-only, so a running ``device run``
is not disturbed) and are grouped by their session tags (``device.app.sessions``). Per site, a
figure is the mean over the site's accepted scans and a grade the most severe level among them;
the whole visit's figure is the mean over its sites (each site counts once), its grade the most
severe over sites. A client's visits are ordered by visit date, then by first capture time; the
previous visit is the one just before. Rejected scans are counted, never averaged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from device.contracts.constants import LEVEL_NAMES
from device.contracts.records import SITES

__all__ = [
    "METRICS",
    "NO_SITE",
    "Change",
    "Metric",
    "SiteFigures",
    "Visit",
    "compare",
    "load_records",
    "overlay_path",
    "visit_of",
    "visits_of_client",
]

log = logging.getLogger(__name__)

NO_SITE = "unspecified"  # scans taken in a session before a site was chosen


@dataclass(frozen=True)
class Metric:
    """A figure of the report: record metric ``key``; ``scale`` turns the record's value into the
    shown one (a ratio into percent); ``better`` is +1 when more is better, -1 when less is."""

    key: str
    label: str
    unit: str
    decimals: int
    better: int
    scale: float = 1.0


METRICS = (
    Metric("hair_count", "Hair count", "hairs", 0, +1),
    Metric("density", "Density", "hairs/cm²", 0, +1),
    Metric("thin_ratio", "Thin hairs", "%", 1, -1, 100.0),
    Metric("median_thickness", "Median thickness", "µm", 1, +1),
)


@dataclass(frozen=True)
class SiteFigures:
    """One site of one visit: seqs of its scans (accepted and rejected), the reasons scans were
    rejected, figures (metric key -> mean over accepted scans, shown units; None: not measured),
    grades (condition -> most severe level) and the latest accepted scan (for its overlay)."""

    site: str
    seqs: list[int]
    rejected: list[str]
    figures: dict[str, float | None]
    grades: dict[str, str]
    latest: dict[str, Any] | None

    @property
    def accepted(self) -> int:
        return len(self.seqs) - len(self.rejected)


@dataclass(frozen=True)
class Visit:
    """One session of one client: its sites (in ``SITES`` order, then ``NO_SITE``), the whole
    visit's figures and grades, and where the scans came from."""

    client_id: str
    session_id: str
    visit_date: str
    first_captured: str
    sites: dict[str, SiteFigures]
    figures: dict[str, float | None]
    grades: dict[str, str]
    devices: list[str] = field(default_factory=list)
    bundles: list[str] = field(default_factory=list)

    @property
    def scans(self) -> int:
        return sum(len(s.seqs) for s in self.sites.values())


@dataclass(frozen=True)
class Change:
    """A figure then and now: ``delta`` = now - before (None when either is missing)."""

    before: float | None
    now: float | None

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.now is None else self.now - self.before

    @property
    def percent(self) -> float | None:
        d = self.delta
        return None if d is None or not self.before else 100.0 * d / abs(self.before)


def load_records(outbox: str | Path) -> list[dict[str, Any]]:
    """Every result record still held in the outbox SQLite file, in seq order (read-only).
    FileNotFoundError when there is no such file; unreadable rows are logged and skipped."""
    path = Path(outbox)
    if not path.is_file():
        raise FileNotFoundError(f"outbox not found: {path}")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
        try:
            rows = db.execute("SELECT seq, payload FROM outbox ORDER BY seq").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path} is not a readable outbox: {exc}") from exc
    records = []
    for seq, payload in rows:
        try:
            record = json.loads(bytes(payload).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("outbox %s: seq %s skipped: %s", path, seq, exc)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def visit_of(records: Iterable[Mapping[str, Any]], session_id: str) -> Visit:
    """The visit of ``session_id``; ValueError naming the sessions there are when it has no record."""
    records = list(records)
    mine = [r for r in records if r.get("session_id") == session_id]
    if not mine:
        known = sorted({(str(r.get("visit_date")), str(r["session_id"]), str(r["client_id"])) for r in records
                        if r.get("session_id")})  # fmt: skip
        listed = "; ".join(f"{s} (client {c}, {d})" for d, s, c in known[-10:]) or "none"
        raise ValueError(f"no record of session {session_id!r} in this outbox; sessions there: {listed}")
    return _visit(mine)


def visits_of_client(records: Iterable[Mapping[str, Any]], client_id: str) -> list[Visit]:
    """Every visit of ``client_id``, oldest first."""
    by_session: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("client_id") == client_id and r.get("session_id"):
            by_session.setdefault(str(r["session_id"]), []).append(r)
    visits = [_visit(rs) for rs in by_session.values()]
    return sorted(visits, key=lambda v: (v.visit_date, v.first_captured))


def compare(now: Visit, before: Visit) -> dict[str, dict[str, Change]]:
    """Per site both visits scanned (and ``"visit"`` for the whole visit): metric key -> Change."""
    out = {"visit": {m.key: Change(before.figures.get(m.key), now.figures.get(m.key)) for m in METRICS}}
    for site, figures in now.sites.items():
        if site in before.sites:
            old = before.sites[site].figures
            out[site] = {m.key: Change(old.get(m.key), figures.figures.get(m.key)) for m in METRICS}
    return out


def overlay_path(record: Mapping[str, Any], folder: str | Path) -> Path | None:
    """The overlay ``device run`` saved for ``record`` in ``folder``
    (``<capture time UTC, YYYYmmddTHHMMSS_ffffff>_seq<seq>.png``), or None when it is not there."""
    try:
        when = datetime.strptime(str(record["captured_at"]), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        when = datetime.strptime(str(record["captured_at"]), "%Y-%m-%dT%H:%M:%SZ")
    stem = f"{when.strftime('%Y%m%dT%H%M%S_%f')}_seq{record['seq']}"
    for suffix in (".png", ".jpg"):
        path = Path(folder) / (stem + suffix)
        if path.is_file():
            return path
    return None


def _visit(records: list[Mapping[str, Any]]) -> Visit:
    records = sorted(records, key=lambda r: (str(r["captured_at"]), int(r["seq"])))
    first = records[0]
    by_site: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_site.setdefault(str(r.get("site") or NO_SITE), []).append(r)
    order = [s for s in (*SITES, NO_SITE) if s in by_site]
    sites = {s: _site(s, by_site[s]) for s in order}
    measured = [s for s in sites.values() if s.accepted]
    figures = {m.key: _mean(s.figures.get(m.key) for s in measured) for m in METRICS}
    return Visit(
        client_id=str(first["client_id"]),
        session_id=str(first["session_id"]),
        visit_date=str(first.get("visit_date") or str(first["captured_at"])[:10]),
        first_captured=str(first["captured_at"]),
        sites=sites,
        figures=figures,
        grades=_worst(s.grades for s in measured),
        devices=sorted({str(r["device_id"]) for r in records}),
        bundles=sorted({str(r["bundle_version"]) for r in records}),
    )


def _site(site: str, records: list[Mapping[str, Any]]) -> SiteFigures:
    accepted = [r for r in records if r["quality"]["accepted"]]
    rejected = [str(r["quality"].get("reason") or "unusable frame") for r in records if not r["quality"]["accepted"]]
    figures = {m.key: _mean(_value(r, m) for r in accepted) for m in METRICS}
    grades = _worst({k: str(v["level"]) for k, v in r["conditions"].items()} for r in accepted)
    latest = dict(accepted[-1]) if accepted else None
    return SiteFigures(site, [int(r["seq"]) for r in records], rejected, figures, grades, latest)


def _value(record: Mapping[str, Any], metric: Metric) -> float | None:
    v = record["metrics"].get(metric.key, {}).get("value")
    return None if v is None else float(v) * metric.scale


def _mean(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.fmean(got) if got else None


def _worst(grades: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """Condition -> the most severe level among ``grades`` (conditions in first-seen order)."""
    out: dict[str, str] = {}
    for g in grades:
        for name, level in g.items():
            if name not in out or LEVEL_NAMES.index(level) > LEVEL_NAMES.index(out[name]):
                out[name] = level
    return out
