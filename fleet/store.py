"""The fleet's database, behind one interface: ``Store``, with an embedded SQLite backend
(``fleet.store_sqlite``, the default: one file, no setup) and a PostgreSQL one
(``fleet.store_postgres``, for a fleet: several consumer replicas write to one server).

What the consumer writes through it: results once by ``msg_id`` (a redelivery is counted as a
duplicate; the same ``(device, seq)`` under another ``msg_id`` is a *conflict*, kept apart),
rejected payloads, unrecoverable ranges, anomalies, resend counters, and per device the last
status (retained status and last will), telemetry and events. What a dashboard reads: the
devices with their status, a device's results newest first, one result, a client's results
over visits, rows for a CSV export.

Every write is idempotent, so several replicas (or a broker redelivering) may send the same
message twice: results by ``msg_id`` and ``(device_id, seq)``, events by their payload's
SHA-256, telemetry by ``(device_id, boot_id, ts)``; counters and seq marks only grow.
Times are seconds since the epoch (``time.time()``); seqs are integers up to 2^53 - 1. The
schema and its migrations: ``fleet.migrations``; docs/sync-and-fleet.md describes the tables.

Not thread-safe by itself: the consumer serialises calls under its lock.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.ranges import Range

__all__ = [
    "REJECTED_KEEP_BYTES",
    "TAG_COLUMNS",
    "DeviceStatus",
    "Outcome",
    "Store",
    "StoreError",
    "StoredDevice",
    "StoredResult",
    "describe_url",
    "open_store",
]

REJECTED_KEEP_BYTES = 1024  # of a rejected payload, only this prefix is kept (with its size and SHA-256)
#: Session tags of a version 2 record, stored in their own columns.
TAG_COLUMNS = ("client_id", "session_id", "site", "visit_date")

Outcome = Literal["new", "duplicate", "conflict"]


class StoreError(ValueError):
    """The store cannot be opened as configured (a bad URL, an unreachable server, a schema
    newer than this code); the message says what to do. A ValueError: the CLI exits 2."""


@dataclass
class StoredDevice:
    """One device's seq stream as the database holds it: the seqs as ranges."""

    known_last: int = 0
    held: list[Range] = field(default_factory=list)
    received: int = 0
    unavailable: list[Range] = field(default_factory=list)
    delivered_upto: int | None = None


@dataclass(frozen=True)
class DeviceStatus:
    """One scanner as a dashboard lists it. Times: epoch seconds (the consumer's clock)."""

    device_id: str
    state: str | None  # "online" | "offline" (last will or shutdown) | None: no status seen yet
    status_reason: str | None  # why it went offline ("connection lost", "shutdown")
    boot_id: str | None
    status_at: float | None  # when the last status arrived
    last_seen: float | None  # when any message of the device last arrived
    battery: Any  # percent, the scanner bridge's report (a dict), or None
    temperature_c: float | None
    firmware: str | None  # None until the device reports one
    bundle_version: str | None  # from its latest status, telemetry or result
    last_error: str | None  # the last error event's message or reason
    last_error_at: float | None
    last_seq: int  # highest seq the device says it has allocated
    delivered_upto: int | None  # every seq up to it was acknowledged by the broker
    results: int  # results stored

    @property
    def online(self) -> bool:
        return self.state == "online"


@dataclass(frozen=True)
class StoredResult:
    """One stored result record: its columns and the record itself (``payload``, JSON text)."""

    msg_id: str
    device_id: str
    seq: int
    boot_id: str
    captured_at: str  # RFC 3339 UTC, as the device wrote it
    received_at: float  # epoch seconds, when the consumer stored it
    stored_by: str | None  # the client id of the consumer (replica) that stored it
    schema: str | None  # "scalpedge.result/2" | "scalpedge.result/1" | None (stored before versions)
    bundle_version: str | None
    client_id: str | None
    session_id: str | None
    site: str | None
    visit_date: str | None
    payload: str

    def record(self) -> dict[str, Any]:
        """The result record as a dict."""
        body: dict[str, Any] = json.loads(self.payload)
        return body


class Store(ABC):
    """The fleet database. Open one with ``open_store``; ``close()`` when done."""

    #: "sqlite" or "postgresql"
    backend: str

    # ----------------------------------------------------------------- writes
    @abstractmethod
    def add_device(self, device: str) -> None:
        """Make sure ``device`` has a row (no-op when it has)."""

    @abstractmethod
    def store_result(
        self,
        device: str,
        seq: int,
        msg_id: str,
        boot_id: str,
        captured_at: str,
        payload: str,
        schema: str | None = None,
        tags: Mapping[str, str] | None = None,
        bundle_version: str | None = None,
        stored_by: str | None = None,
    ) -> tuple[Outcome, Any]:
        """Store a validated result once: ``("new", None)``, ``("duplicate", None)`` (same
        ``msg_id`` again, counted) or ``("conflict", what is stored)`` (kept apart, never
        merged). ``schema``: the record's version; ``tags``: its session tags (``TAG_COLUMNS``);
        ``bundle_version``: the bundle that measured it; ``stored_by``: the consumer's client id."""

    @abstractmethod
    def reject(self, topic: str, reason: str, payload: bytes) -> None:
        """Keep a rejected payload once: its first ``REJECTED_KEEP_BYTES`` bytes, size and SHA-256."""

    @abstractmethod
    def add_unavailable(self, device: str, lo: int, hi: int) -> None:
        """Seqs ``lo..hi`` of ``device`` are unrecoverable (the device no longer has them)."""

    @abstractmethod
    def flag(self, device: str, kind: str, lo: int, hi: int) -> None:
        """Record anomaly ``kind`` over seqs ``lo..hi``; the same ``(kind, lo)`` again extends it."""

    @abstractmethod
    def note_seqs(self, device: str, last_seq: int | None = None, delivered_upto: int | None = None) -> None:
        """Raise the device's ``last_seq`` / ``delivered_upto`` marks (never lowers them)."""

    @abstractmethod
    def record_status(self, device: str, status: Mapping[str, Any]) -> None:
        """A validated status message (online, or offline: shutdown or last will) becomes the
        device's current status; its seq marks are raised."""

    @abstractmethod
    def record_telemetry(self, device: str, telemetry: Mapping[str, Any]) -> None:
        """Keep a validated telemetry message once (by ``(boot_id, ts)``) and update the
        device's battery, temperature, last seen and seq marks."""

    @abstractmethod
    def record_event(self, device: str, event: Mapping[str, Any], payload: bytes) -> None:
        """Keep a validated event once (by its payload's SHA-256); an ``error`` event becomes
        the device's last error."""

    @abstractmethod
    def count_resend_requests(self, device: str, n: int) -> None:
        """Add ``n`` to the device's resend request counter."""

    @abstractmethod
    def claim_resend(self, device: str, interval_s: float) -> bool:
        """True when no consumer (of any replica) has asked ``device`` to resend within the
        last ``interval_s`` seconds: the caller may ask now (the claim is recorded)."""

    @abstractmethod
    def prune_telemetry(self, before: float) -> int:
        """Delete telemetry received before ``before`` (epoch s); returns how many rows."""

    # ----------------------------------------------------------------- reads: the consumer
    @abstractmethod
    def load(self) -> dict[str, StoredDevice]:
        """Every device with its seqs held (grouped into runs by the database) and unrecoverable."""

    @abstractmethod
    def refresh(self, floors: Mapping[str, int]) -> dict[str, StoredDevice]:
        """For each device in ``floors``: the runs of seqs held *above* its floor (what other
        replicas stored since), unrecoverable ranges and seq marks. Cost: the rows above the floor."""

    @abstractmethod
    def device_report(self, device: str) -> dict[str, Any]:
        """Counters, conflicts and records per boot of one device."""

    @abstractmethod
    def rejected_count(self) -> int:
        """Rows in ``rejected``."""

    # ----------------------------------------------------------------- reads: dashboards
    @abstractmethod
    def devices(self) -> list[DeviceStatus]:
        """Every device known, with its status, ordered by device id."""

    @abstractmethod
    def device(self, device: str) -> DeviceStatus | None:
        """One device, or None."""

    @abstractmethod
    def device_results(self, device: str, limit: int | None = 50, before_seq: int | None = None) -> list[StoredResult]:
        """A device's results, newest (highest seq) first: at most ``limit`` (None: all), below
        ``before_seq`` when given (the next page starts below the last seq of this one)."""

    @abstractmethod
    def result(self, msg_id: str) -> StoredResult | None:
        """One result by ``msg_id``, or None."""

    @abstractmethod
    def client_results(self, client_id: str) -> list[StoredResult]:
        """A client's results over all visits, oldest first (by ``captured_at``, then device and seq)."""

    @abstractmethod
    def events(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        """A device's events, newest first: ``event``, ``severity``, ``message``, ``ts`` (the
        device's), ``received_at`` (epoch s) and ``body`` (the whole event)."""

    @abstractmethod
    def telemetry(self, device: str, limit: int = 100) -> list[dict[str, Any]]:
        """A device's telemetry, newest first: ``ts``, ``received_at``, ``battery``,
        ``temperature_c``, ``fps``, ``last_seq``, ``delivered_upto``, ``outbox``."""

    def export_rows(self, device: str | None = None, client_id: str | None = None) -> list[dict[str, Any]]:
        """Rows for a CSV export, oldest first, all with the same keys: the result's columns,
        then ``metric.<name>`` (value; the unit is the metric's) and ``condition.<name>``
        (level) for every metric and condition any exported record has (None where one lacks it)."""
        results = self._export_results(device, client_id)
        records = [r.record() for r in results]
        metrics = sorted({k for rec in records for k in rec.get("metrics", {})})
        conditions = sorted({k for rec in records for k in rec.get("conditions", {})})
        rows = []
        for r, rec in zip(results, records, strict=True):
            row: dict[str, Any] = {
                "msg_id": r.msg_id,
                "device_id": r.device_id,
                "seq": r.seq,
                "captured_at": r.captured_at,
                "received_at": r.received_at,
                "schema": r.schema,
                "bundle_version": r.bundle_version or rec.get("bundle_version"),
                **{k: getattr(r, k) for k in TAG_COLUMNS},
                "quality_accepted": rec.get("quality", {}).get("accepted"),
            }
            for name in metrics:
                row[f"metric.{name}"] = rec.get("metrics", {}).get(name, {}).get("value")
            for name in conditions:
                row[f"condition.{name}"] = rec.get("conditions", {}).get(name, {}).get("level")
            rows.append(row)
        return rows

    @abstractmethod
    def _export_results(self, device: str | None, client_id: str | None) -> list[StoredResult]:
        """The results ``export_rows`` flattens, oldest first."""

    @abstractmethod
    def schema_version(self) -> int:
        """The migration the database is at (``fleet.migrations``)."""

    @abstractmethod
    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """The store at ``url``: ``postgresql://user[:password]@host:port/db`` (or ``postgres://``)
    for PostgreSQL, ``sqlite:///path`` or a plain file path for SQLite. Created or migrated
    to the current schema on open. StoreError for an unknown scheme or an unreachable server;
    MissingExtra when PostgreSQL is asked for without psycopg (the ``fleet`` extra)."""
    if url.startswith(("postgresql://", "postgres://")):
        from fleet.store_postgres import PostgresStore

        return PostgresStore(url)
    if "://" in url and not url.startswith("sqlite://"):
        raise StoreError(f"store {describe_url(url)!r}: expected postgresql://..., sqlite:///PATH or a file path")
    from fleet.store_sqlite import SqliteStore

    return SqliteStore(url.removeprefix("sqlite://") if url.startswith("sqlite://") else url)


def describe_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for log lines and errors)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    auth, _, host = rest.partition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in auth else ''}@{host}"


def __getattr__(name: str) -> Any:
    # ``FleetStore(path)``: the SQLite store under the name of the first release.
    if name == "FleetStore":
        from fleet.store_sqlite import SqliteStore

        return SqliteStore
    raise AttributeError(f"module 'fleet.store' has no attribute {name!r}")
