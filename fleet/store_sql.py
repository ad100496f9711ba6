"""The SQL shared by both store backends: every query written once, with ``?`` placeholders and
``{INT}`` / ``{REAL}`` / ``{BLOB}`` / ``{GREATEST}`` filled in per dialect.

A backend (``fleet.store_sqlite``, ``fleet.store_postgres``) supplies the connection: how to
run one statement, how to open a write transaction, whether a column exists, and how to keep
two processes from migrating at once. Idempotence is the database's: ``INSERT ... ON CONFLICT
DO NOTHING`` on the unique keys, then a look at what is stored to tell a duplicate from a
conflict, so two replicas storing the same record at once end with one row and one of them
counting a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from fleet.migrations import MIGRATIONS, AddColumn, latest_version
from fleet.ranges import add
from fleet.store import REJECTED_KEEP_BYTES, TAG_COLUMNS, Outcome, Store, StoredDevice, StoreError
from fleet.store_queries import Cursor, DashboardQueries

__all__ = ["Cursor", "Dialect", "SqlStore"]

_RUNS = (
    "SELECT device_id, min(seq), max(seq), count(*) FROM (SELECT r.device_id, r.seq, "
    "r.seq - row_number() OVER (PARTITION BY r.device_id ORDER BY r.seq) AS run FROM results r{where}) AS numbered "
    "GROUP BY device_id, run ORDER BY device_id, min(seq)"
)
_REFRESH_BATCH = 500  # devices per refresh query (two parameters each)
_MAX_TEXT = 512  # a status reason or an event's message kept in a column is cut here


@dataclass(frozen=True)
class Dialect:
    """How one database spells what differs."""

    name: str  # "sqlite" | "postgresql"
    param: str  # the driver's placeholder: "?" or "%s"
    int_type: str  # a 64-bit integer column
    real_type: str  # a double column
    blob_type: str  # a bytes column
    greatest: str  # the two-argument maximum: "max" or "GREATEST"


class SqlStore(DashboardQueries, Store):
    """``Store`` over a DB-API connection that a subclass opens; migrates on open."""

    dialect: Dialect

    def __init__(self) -> None:
        self._sql_cache: dict[str, str] = {}
        self.backend = self.dialect.name
        self._migrate()

    # ----------------------------------------------------------------- backend hooks
    @abstractmethod
    def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        """Run one statement (already in the driver's dialect)."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[None]:
        """A write transaction: committed on exit, rolled back on an exception."""

    @abstractmethod
    def _has_column(self, table: str, column: str) -> bool: ...

    @abstractmethod
    def _lock_for_migrations(self) -> None:
        """Inside the migration transaction: keep other processes from migrating at once."""

    # ----------------------------------------------------------------- plumbing
    def _q(self, sql: str) -> str:
        """``sql`` in this dialect: types filled in, placeholders the driver's."""
        out = self._sql_cache.get(sql)
        if out is None:
            d = self.dialect
            out = sql.format(INT=d.int_type, REAL=d.real_type, BLOB=d.blob_type, GREATEST=d.greatest)
            if d.param != "?":
                out = out.replace("?", d.param)
            self._sql_cache[sql] = out
        return out

    def _x(self, sql: str, *params: Any) -> Cursor:
        return self._run(self._q(sql), params)

    def _migrate(self) -> None:
        with self._transaction():
            self._lock_for_migrations()
            self._x(
                "CREATE TABLE IF NOT EXISTS schema_version (version {INT} PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at {REAL} NOT NULL)"
            )
            current = int(self._x("SELECT COALESCE(max(version), 0) FROM schema_version").fetchone()[0])
            if current > latest_version():
                raise StoreError(
                    f"the database is at schema version {current}, newer than this scalpedge knows "
                    f"({latest_version()}): upgrade scalpedge"
                )
            for migration in MIGRATIONS:
                if migration.version <= current:
                    continue
                for step in migration.steps:
                    if isinstance(step, AddColumn):
                        if not self._has_column(step.table, step.name):
                            self._x(f"ALTER TABLE {step.table} ADD COLUMN {step.name} {step.kind}")
                    else:
                        self._x(step)
                self._x(
                    "INSERT INTO schema_version VALUES (?, ?, ?)", migration.version, migration.description, time.time()
                )

    def schema_version(self) -> int:
        return int(self._x("SELECT COALESCE(max(version), 0) FROM schema_version").fetchone()[0])

    def _ensure_device(self, device: str) -> None:
        self._x("INSERT INTO devices (device_id) VALUES (?) ON CONFLICT DO NOTHING", device)

    # ----------------------------------------------------------------- writes
    def add_device(self, device: str) -> None:
        self._ensure_device(device)

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
        now = time.time()
        with self._transaction():
            self._x(
                "INSERT INTO devices (device_id, deliveries, last_seen) VALUES (?, 1, ?) ON CONFLICT (device_id) "
                "DO UPDATE SET deliveries = devices.deliveries + 1, "
                "last_seen = {GREATEST}(COALESCE(devices.last_seen, 0), excluded.last_seen)",
                device,
                now,
            )
            tag = [(tags or {}).get(k) for k in TAG_COLUMNS]
            inserted = self._x(
                "INSERT INTO results (msg_id, device_id, seq, boot_id, captured_at, received_at, payload, schema, "
                f"bundle_version, stored_by, {', '.join(TAG_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                msg_id,
                device,
                seq,
                boot_id,
                captured_at,
                now,
                payload,
                schema,
                bundle_version,
                stored_by,
                *tag,
            ).rowcount
            if inserted == 1:
                # The newest record (no higher seq stored) says which bundle the device runs.
                self._x(
                    "UPDATE devices SET stored = stored + 1, bundle_version = CASE WHEN NOT EXISTS "
                    "(SELECT 1 FROM results WHERE device_id = ? AND seq > ?) THEN COALESCE(?, bundle_version) "
                    "ELSE bundle_version END WHERE device_id = ?",
                    device,
                    seq,
                    bundle_version,
                    device,
                )
                return ("new", None)
            held = self._x("SELECT msg_id FROM results WHERE device_id = ? AND seq = ?", device, seq).fetchone()
            if held is not None and held[0] == msg_id:
                self._x("UPDATE devices SET duplicates = duplicates + 1 WHERE device_id = ?", device)
                return ("duplicate", None)
            same_id = self._x("SELECT device_id, seq FROM results WHERE msg_id = ?", msg_id).fetchone()
            self._x(
                "INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?)",
                msg_id,
                device,
                seq,
                held[0] if held else None,
                now,
                payload,
            )
            return ("conflict", tuple(held or same_id))

    def reject(self, topic: str, reason: str, payload: bytes) -> None:
        self._x(
            "INSERT INTO rejected (received_at, topic, reason, payload, payload_bytes, payload_sha256) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            time.time(),
            topic,
            reason,
            payload[:REJECTED_KEEP_BYTES],
            len(payload),
            hashlib.sha256(payload).hexdigest(),
        )

    def add_unavailable(self, device: str, lo: int, hi: int) -> None:
        self._x("INSERT INTO unavailable VALUES (?, ?, ?)", device, lo, hi)

    def flag(self, device: str, kind: str, lo: int, hi: int) -> None:
        now = time.time()
        self._x(
            "INSERT INTO anomalies VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, kind, from_seq) DO UPDATE "
            "SET to_seq = {GREATEST}(anomalies.to_seq, excluded.to_seq), last_seen = excluded.last_seen",
            device,
            kind,
            lo,
            hi,
            now,
            now,
        )

    def note_seqs(self, device: str, last_seq: int | None = None, delivered_upto: int | None = None) -> None:
        sets, params = [], []
        if last_seq is not None:
            sets.append("known_last_seq = {GREATEST}(known_last_seq, ?)")
            params.append(last_seq)
        if delivered_upto is not None:
            sets.append("delivered_upto = {GREATEST}(COALESCE(delivered_upto, 0), ?)")
            params.append(delivered_upto)
        if sets:
            self._x(f"UPDATE devices SET {', '.join(sets)} WHERE device_id = ?", *params, device)

    def record_status(self, device: str, status: Mapping[str, Any]) -> None:
        now = time.time()
        # Only the device itself is "seen": an offline status may be its last will, sent by the broker.
        seen = ", last_seen = {GREATEST}(COALESCE(last_seen, 0), ?)" if status["state"] == "online" else ""
        with self._transaction():
            self._ensure_device(device)
            self._x(
                "UPDATE devices SET state = ?, status_reason = ?, boot_id = ?, status_at = ?, "
                f"firmware = COALESCE(?, firmware), bundle_version = COALESCE(?, bundle_version){seen} "
                "WHERE device_id = ?",
                status["state"],
                _text(status.get("reason")),
                status["boot_id"],
                now,
                _text(status.get("firmware")),
                _text(status.get("bundle_version")),
                *([now] if seen else []),
                device,
            )
            self.note_seqs(device, status.get("last_seq"), status.get("delivered_upto"))

    def record_telemetry(self, device: str, telemetry: Mapping[str, Any]) -> None:
        now = time.time()
        battery = json.dumps(telemetry.get("battery"), separators=(",", ":"))
        with self._transaction():
            self._ensure_device(device)
            self._x(
                "INSERT INTO telemetry (device_id, boot_id, ts, received_at, battery, temperature_c, fps, last_seq, "
                "delivered_upto, outbox) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                device,
                telemetry["boot_id"],
                telemetry["ts"],
                now,
                battery,
                telemetry.get("temperature_c"),
                telemetry.get("fps"),
                telemetry.get("last_seq"),
                telemetry.get("delivered_upto"),
                json.dumps(telemetry.get("outbox"), separators=(",", ":")),
            )
            self._x(
                "UPDATE devices SET battery = ?, temperature_c = ?, last_seen = {GREATEST}(COALESCE(last_seen, 0), ?), "
                "firmware = COALESCE(?, firmware), bundle_version = COALESCE(?, bundle_version) WHERE device_id = ?",
                battery,
                telemetry.get("temperature_c"),
                now,
                _text(telemetry.get("firmware")),
                _text(telemetry.get("bundle_version")),
                device,
            )
            self.note_seqs(device, telemetry.get("last_seq"), telemetry.get("delivered_upto"))

    def record_event(self, device: str, event: Mapping[str, Any], payload: bytes) -> None:
        now = time.time()
        message = _text(event.get("message") or event.get("reason"))
        with self._transaction():
            self._ensure_device(device)
            self._x(
                "INSERT INTO events (device_id, boot_id, event, severity, message, ts, received_at, payload, "
                "payload_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                device,
                event["boot_id"],
                event["event"],
                event.get("severity"),
                message,
                event["ts"],
                now,
                payload.decode("utf-8"),
                hashlib.sha256(payload).hexdigest(),
            )
            self._x(
                "UPDATE devices SET last_seen = {GREATEST}(COALESCE(last_seen, 0), ?) WHERE device_id = ?", now, device
            )
            if event.get("severity") == "error":
                self._x(
                    "UPDATE devices SET last_error = ?, last_error_at = ? WHERE device_id = ?",
                    f"{event['event']}: {message}" if message else event["event"],
                    now,
                    device,
                )

    def count_resend_requests(self, device: str, n: int) -> None:
        self._x("UPDATE devices SET resend_requests = resend_requests + ? WHERE device_id = ?", n, device)

    def claim_resend(self, device: str, interval_s: float) -> bool:
        now = time.time()
        self._ensure_device(device)
        claimed = self._x(
            "UPDATE devices SET resend_at = ? WHERE device_id = ? AND (resend_at IS NULL OR resend_at <= ?)",
            now,
            device,
            now - interval_s,
        ).rowcount
        return claimed == 1

    def prune_telemetry(self, before: float) -> int:
        return int(self._x("DELETE FROM telemetry WHERE received_at < ?", before).rowcount)

    # ----------------------------------------------------------------- reads: the consumer
    def load(self) -> dict[str, StoredDevice]:
        out = {
            d: StoredDevice(known_last=int(k), delivered_upto=None if u is None else int(u))
            for d, k, u in self._x("SELECT device_id, known_last_seq, delivered_upto FROM devices").fetchall()
        }
        for device, lo, hi, n in self._x(_RUNS.format(where="")).fetchall():
            dev = out.setdefault(device, StoredDevice())
            dev.held.append((int(lo), int(hi)))
            dev.received += int(n)
        for device, lo, hi in self._x("SELECT device_id, from_seq, to_seq FROM unavailable").fetchall():
            add(out.setdefault(device, StoredDevice()).unavailable, int(lo), int(hi))
        return out

    def refresh(self, floors: Mapping[str, int]) -> dict[str, StoredDevice]:
        out = {device: StoredDevice() for device in floors}
        items = list(floors.items())
        for i in range(0, len(items), _REFRESH_BATCH):
            batch = items[i : i + _REFRESH_BATCH]
            wanted = "WITH wanted (device_id, above) AS (VALUES " + ", ".join(["(?, ?)"] * len(batch)) + ") "
            params = [v for pair in batch for v in pair]
            marks = self._x(
                wanted + "SELECT d.device_id, d.known_last_seq, d.delivered_upto FROM devices d "
                "JOIN wanted w ON d.device_id = w.device_id",
                *params,
            ).fetchall()
            for device, last, upto in marks:
                out[device].known_last = int(last)
                out[device].delivered_upto = None if upto is None else int(upto)
            runs = self._x(
                wanted + _RUNS.format(where=" JOIN wanted w ON r.device_id = w.device_id AND r.seq > w.above"),
                *params,
            ).fetchall()
            for device, lo, hi, n in runs:
                out[device].held.append((int(lo), int(hi)))
                out[device].received += int(n)
            gone = self._x(
                wanted + "SELECT u.device_id, u.from_seq, u.to_seq FROM unavailable u "
                "JOIN wanted w ON u.device_id = w.device_id",
                *params,
            ).fetchall()
            for device, lo, hi in gone:
                add(out[device].unavailable, int(lo), int(hi))
        return out

    def device_report(self, device: str) -> dict[str, Any]:
        row = self._x(
            "SELECT deliveries, duplicates, resend_requests FROM devices WHERE device_id = ?", device
        ).fetchone() or (0, 0, 0)
        boots = {
            b: {"records": int(n), "first_seq": int(lo), "last_seq": int(hi)}
            for b, n, lo, hi in self._x(
                "SELECT boot_id, count(*), min(seq), max(seq) FROM results WHERE device_id = ? "
                "GROUP BY boot_id ORDER BY min(seq)",
                device,
            ).fetchall()
        }
        conflicts = self._x("SELECT count(*) FROM conflicts WHERE device_id = ?", device).fetchone()[0]
        return {
            "deliveries": int(row[0]),
            "duplicates": int(row[1]),
            "conflicts": int(conflicts),
            "resend_requests": int(row[2]),
            "boots": boots,
        }

    def rejected_count(self) -> int:
        return int(self._x("SELECT count(*) FROM rejected").fetchone()[0])


def _text(value: Any) -> str | None:
    """A value for a short text column: None stays None, the rest is cut to ``_MAX_TEXT``."""
    return None if value is None else str(value)[:_MAX_TEXT]
