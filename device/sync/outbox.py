"""The on-disk outbox: every result is committed to SQLite (WAL, fsync) before it is published.

Rows move ``pending -> inflight -> delivered``:

- ``add`` allocates the next per-device ``seq`` (a counter in the same database, so it survives
  restarts and never reuses a number, even after pruning) and commits the record as pending.
- ``claim`` moves pending rows to inflight just before they are handed to MQTT.
- ``mark_delivered`` is called on PUBACK for that row's own message id; ``release`` puts rows
  back to pending when a publish failed. On open, rows left inflight by a crash become pending.
- Delivered rows stay for a retention window (``retention_s``, ``retention_rows``) so a consumer
  that sees a seq gap can ask for a resend (``requeue``): a PUBACK only means the broker had it.

When full (``max_pending`` undelivered rows, ``max_pending_bytes`` undelivered payload, or the
file cap ``max_db_bytes`` reached) a new record is **refused**: ``add`` raises ``OutboxFull`` and
an ``outbox_full`` alarm is raised. Undelivered rows are never deleted. Under the file cap only,
the oldest *delivered* rows are evicted first (alarm ``outbox_retention_evicted``), since the
broker has acknowledged those. ``outbox_high`` fires at ``high_water`` of a limit and
``outbox_stale`` when the oldest undelivered row is older than ``alarm_age_s``. Alarms go to the
``on_alarm`` sink given at construction (the MQTT link publishes them), stamped with ``ts``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.contracts.messages import missing_ranges
from device.contracts.records import dumps_record, utc_timestamp
from device.sync.config import OutboxConfig

__all__ = ["Outbox", "OutboxRow", "OutboxStats", "ResendResult", "OutboxFull", "OutboxError", "AlarmCallback"]

log = logging.getLogger(__name__)

AlarmCallback = Callable[[dict[str, Any]], None]
ALARM_REPEAT_S = 60.0  # one alarm of a kind per this many seconds; refusals are counted between
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'inflight', 'delivered')),
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    delivered_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, seq, size);
"""


class OutboxError(RuntimeError):
    """The outbox database failed (I/O error, corruption, wrong device)."""


class OutboxFull(OutboxError):
    """A new record was refused because a limit is reached; nothing stored was touched."""


@dataclass(frozen=True)
class OutboxRow:
    """One stored record: its seq, msg_id and the exact JSON payload bytes to publish."""

    seq: int
    msg_id: str
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    """Counts by state; bytes of undelivered payload; age in seconds of the oldest undelivered row;
    the last allocated seq and ``delivered_upto``: every seq up to it has been acknowledged."""

    pending: int
    inflight: int
    delivered: int
    undelivered_bytes: int
    oldest_undelivered_age_s: float | None
    last_seq: int
    delivered_upto: int


@dataclass(frozen=True)
class ResendResult:
    """Outcome of ``requeue``: rows put back to pending, and seq ranges no longer stored."""

    requeued: int
    unavailable: list[tuple[int, int]]


class Outbox:
    """SQLite outbox for one device. Thread-safe (one lock); one writer process per file."""

    def __init__(
        self,
        path: str | Path,
        config: OutboxConfig | None = None,
        *,
        device_id: str | None = None,
        on_alarm: AlarmCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.config = config or OutboxConfig(path=str(path))
        self.on_alarm = on_alarm
        self._clock = clock
        self._lock = threading.RLock()
        self._last_alarm: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: WAL journal not available (got {mode})")
            self._db.execute("PRAGMA synchronous=FULL")
            if self.config.max_db_bytes:
                page = int(self._db.execute("PRAGMA page_size").fetchone()[0])
                self._db.execute(f"PRAGMA max_page_count={max(16, self.config.max_db_bytes // page)}")
            self._db.executescript(_SCHEMA)
            with self._txn():
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', '1'), ('last_seq', '0')")
                if device_id is not None:
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('device_id', ?)", (device_id,))
                    stored = self._meta("device_id")
                    if stored != device_id:
                        raise OutboxError(f"outbox {self.path} belongs to device {stored!r}, not {device_id!r}")
                reset = self._db.execute("UPDATE outbox SET state = 'pending' WHERE state = 'inflight'").rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        if reset:
            log.info("outbox: %d rows left in flight by the last run are pending again", reset)

    # ----------------------------------------------------------------- writing records
    def add(self, build: Callable[[int], Mapping[str, Any]]) -> OutboxRow:
        """Allocate the next seq, call ``build(seq)`` for the record, and commit it as pending.

        The record must carry that ``seq`` and a ``msg_id``. Raises OutboxFull (and raises an
        alarm) when a limit refuses it; the seq is then not consumed.
        """
        with self._lock:
            try:
                return self._add(build)
            except sqlite3.OperationalError as exc:
                if not _is_full(exc):
                    raise self._fail(exc) from exc
            evicted = self._evict_delivered()
            if evicted:
                self._alarm(
                    "outbox_retention_evicted", "warning", f"file cap reached: evicted {evicted} delivered rows early"
                )
                try:
                    return self._add(build)
                except sqlite3.OperationalError as exc:
                    if not _is_full(exc):
                        raise self._fail(exc) from exc
            raise self._refuse(f"database file cap reached ({self.config.max_db_bytes} bytes) or disk full")

    def _add(self, build: Callable[[int], Mapping[str, Any]]) -> OutboxRow:
        cfg = self.config
        with self._txn():
            count, size = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE state != 'delivered'"
            ).fetchone()
            if cfg.max_pending and count >= cfg.max_pending:
                raise self._refuse(f"{count} undelivered records (max_pending {cfg.max_pending})")
            seq = int(self._meta("last_seq")) + 1
            record = build(seq)
            if record.get("seq") != seq or not record.get("msg_id"):
                raise ValueError(f"record built for seq {seq} carries seq {record.get('seq')!r} / no msg_id")
            payload = dumps_record(record)
            if cfg.max_pending_bytes and size + len(payload) > cfg.max_pending_bytes:
                raise self._refuse(
                    f"{size} undelivered bytes + {len(payload)} (max_pending_bytes {cfg.max_pending_bytes})"
                )
            self._db.execute(
                "INSERT INTO outbox (seq, msg_id, state, payload, size, created_at) VALUES (?, ?, 'pending', ?, ?, ?)",
                (seq, str(record["msg_id"]), payload, len(payload), self._clock()),
            )
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(seq),))
        self._check_high_water(count + 1, size + len(payload))
        return OutboxRow(seq, str(record["msg_id"]), payload)

    # ----------------------------------------------------------------- delivery states
    def claim(self, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` pending rows, oldest seq first, now marked inflight."""
        if limit <= 0:
            return []
        with self._lock, self._txn():
            rows = self._db.execute(
                "SELECT seq, msg_id, payload FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
            if rows:
                self._db.executemany(
                    "UPDATE outbox SET state = 'inflight', attempts = attempts + 1 WHERE seq = ?",
                    [(r[0],) for r in rows],
                )
        return [OutboxRow(int(s), str(m), bytes(p)) for s, m, p in rows]

    def mark_delivered(self, seqs: list[int]) -> int:
        """Inflight rows acknowledged by the broker become delivered; returns how many changed."""
        if not seqs:
            return 0
        now = self._clock()
        with self._lock, self._txn():
            cur = self._db.executemany(
                "UPDATE outbox SET state = 'delivered', delivered_at = ? WHERE seq = ? AND state = 'inflight'",
                [(now, s) for s in seqs],
            )
            return int(cur.rowcount)

    def release(self, seqs: list[int]) -> int:
        """Inflight rows whose publish failed go back to pending."""
        if not seqs:
            return 0
        with self._lock, self._txn():
            cur = self._db.executemany(
                "UPDATE outbox SET state = 'pending' WHERE seq = ? AND state = 'inflight'", [(s,) for s in seqs]
            )
            return int(cur.rowcount)

    def requeue(self, from_seq: int, to_seq: int | None = None) -> ResendResult:
        """End-to-end resend: delivered rows with ``from_seq <= seq <= to_seq`` become pending again.

        Pending and inflight rows are left as they are (they are on their way). Seqs in the range
        (clipped to the last allocated seq) that were already pruned are returned as ranges.
        """
        with self._lock, self._txn():
            last = int(self._meta("last_seq"))
            hi = last if to_seq is None else min(to_seq, last)
            if from_seq < 1 or hi < from_seq:
                return ResendResult(0, [])
            cur = self._db.execute(
                "UPDATE outbox SET state = 'pending' WHERE state = 'delivered' AND seq BETWEEN ? AND ?", (from_seq, hi)
            )
            requeued = int(cur.rowcount)
            present = [
                r[0] for r in self._db.execute("SELECT seq FROM outbox WHERE seq BETWEEN ? AND ?", (from_seq, hi))
            ]
        return ResendResult(requeued, missing_ranges(present, from_seq, hi))

    # ----------------------------------------------------------------- upkeep
    def prune(self) -> int:
        """Delete delivered rows past the retention window (age or count); returns how many."""
        cfg = self.config
        with self._lock, self._txn():
            n = self._db.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND delivered_at < ?", (self._clock() - cfg.retention_s,)
            ).rowcount
            n += self._db.execute(
                "DELETE FROM outbox WHERE state = 'delivered' AND seq <= (SELECT seq FROM outbox WHERE state = "
                "'delivered' ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (cfg.retention_rows,),
            ).rowcount
        return int(n)

    def stats(self) -> OutboxStats:
        with self._lock:
            counts = dict(self._db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall())
            size, oldest, first_undelivered = self._db.execute(
                "SELECT coalesce(sum(size), 0), min(created_at), min(seq) FROM outbox WHERE state != 'delivered'"
            ).fetchone()
            last = int(self._meta("last_seq"))
        age = None if oldest is None else max(0.0, self._clock() - float(oldest))
        upto = last if first_undelivered is None else int(first_undelivered) - 1
        return OutboxStats(
            counts.get("pending", 0), counts.get("inflight", 0), counts.get("delivered", 0), int(size), age, last, upto
        )

    def check_alarms(self) -> None:
        """Raise ``outbox_stale`` when the oldest undelivered row is older than ``alarm_age_s``."""
        st = self.stats()
        age_limit = self.config.alarm_age_s
        if age_limit and st.oldest_undelivered_age_s is not None and st.oldest_undelivered_age_s > age_limit:
            self._alarm(
                "outbox_stale",
                "warning",
                f"oldest undelivered record is {st.oldest_undelivered_age_s:.0f} s old (alarm_age_s {age_limit:.0f})",
            )

    def state_of(self, seq: int) -> str | None:
        """The state of one row, or None when that seq is not stored."""
        with self._lock:
            row = self._db.execute("SELECT state FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else str(row[0])

    def db_mode(self) -> tuple[str, int]:
        """``(journal_mode, synchronous)`` in force: ``("wal", 2)`` means WAL with fsync (FULL)."""
        with self._lock:
            mode = str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            return mode, int(self._db.execute("PRAGMA synchronous").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _txn(self) -> _Txn:
        return _Txn(self._db)

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return "" if row is None else str(row[0])

    def _evict_delivered(self) -> int:
        try:
            with self._txn():
                total = self._db.execute("SELECT count(*) FROM outbox WHERE state = 'delivered'").fetchone()[0]
                n = max(1, min(int(total), max(100, int(total) // 10)))
                return int(
                    self._db.execute(
                        "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE state = 'delivered' "
                        "ORDER BY seq LIMIT ?)",
                        (n,),
                    ).rowcount
                )
        except sqlite3.Error as exc:
            log.error("outbox: could not evict delivered rows: %s", exc)
            return 0

    def _check_high_water(self, count: int, size: int) -> None:
        cfg = self.config
        hw = cfg.high_water
        if (cfg.max_pending and count >= hw * cfg.max_pending) or (
            cfg.max_pending_bytes and size >= hw * cfg.max_pending_bytes
        ):
            self._alarm("outbox_high", "warning", f"{count} undelivered records, {size} bytes (high water {hw:.0%})")

    def _refuse(self, reason: str) -> OutboxFull:
        self._alarm("outbox_full", "error", f"new record refused: {reason}; stored records are kept")
        return OutboxFull(f"outbox full, record refused: {reason} (stored records are kept)")

    def _fail(self, exc: sqlite3.Error) -> OutboxError:
        self._alarm("outbox_error", "error", f"outbox write failed: {exc}")
        return OutboxError(f"outbox {self.path}: write failed: {exc}")

    def _alarm(self, kind: str, severity: str, message: str) -> None:
        now = time.monotonic()
        last = self._last_alarm.get(kind)
        if last is not None and now - last < ALARM_REPEAT_S:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            log.debug("outbox alarm %s (repeat suppressed): %s", kind, message)
            return
        self._last_alarm[kind] = now
        repeats = self._suppressed.pop(kind, 0)
        log.log(logging.ERROR if severity == "error" else logging.WARNING, "outbox alarm %s: %s", kind, message)
        event = {"event": kind, "severity": severity, "message": message, "repeats_suppressed": repeats}
        event["ts"] = utc_timestamp()  # when raised, however late the sink publishes it
        if self.on_alarm is not None:
            try:
                self.on_alarm(event)
            except Exception:  # an alarm sink must never break storing records
                log.exception("outbox: alarm callback failed for %s", kind)


class _Txn:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self.db.execute("ROLLBACK")
                raise
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")


def _is_full(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == getattr(sqlite3, "SQLITE_FULL", 13) or "full" in str(exc).lower()
