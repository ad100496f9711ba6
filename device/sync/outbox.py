"""The on-disk outbox: every result is committed to SQLite (WAL, fsync) before it is published.

Rows move ``pending -> inflight -> delivered``:

- ``add`` allocates the next per-device ``seq`` and commits the record as pending. The seq is
  made durable *outside* the database first (``<outbox>.seq``, ``device.sync.seq_mark``), so a
  torn WAL or a damaged file that loses committed rows never makes a seq go back or be reused.
- ``claim`` moves pending rows to inflight just before they are handed to MQTT.
- ``mark_delivered`` is called on PUBACK for that row's own message id; ``release`` puts rows
  back to pending when a publish failed. On open, rows left inflight by a crash become pending.
- Delivered rows stay for a retention window (``retention_s``, ``retention_rows``) so a consumer
  that sees a seq gap can ask for a resend (``requeue``): a PUBACK only means the broker had it.

Opening checks the file (``PRAGMA quick_check``); a damaged one is quarantined and replaced by a
fresh one (``device.sync.outbox_store``; alarm ``outbox_quarantined``). Seqs handed out that the
database no longer holds (damage, a torn WAL) are reported in a ``seqs_lost`` event and answer a
resend as unavailable, so the fleet records them as unrecoverable.

Limits: ``max_pending`` undelivered rows and ``max_pending_bytes`` undelivered payload **refuse**
a new record (``OutboxFull``, alarm ``outbox_full``; nothing stored is touched). Storage full
(SQLITE_FULL: the disk, or the file cap ``max_db_bytes``) raises ``outbox_full`` and makes room:
the oldest *delivered* rows first (alarm ``outbox_retention_evicted``), then the oldest
undelivered ones (event ``seqs_lost`` with their seqs); only when nothing is left to evict is the
record refused. Storing resumes by itself when space returns. ``outbox_high`` fires at
``high_water`` of a limit and ``outbox_stale`` when the oldest undelivered row is older than
``alarm_age_s``. Alarms go to the ``on_alarm`` sink given at construction (the MQTT link
publishes them), stamped with ``ts``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.contracts.messages import missing_ranges
from device.contracts.records import dumps_record
from device.sync import outbox_store as store
from device.sync.config import OutboxConfig
from device.sync.outbox_alarms import AlarmCallback, Alarms
from device.sync.outbox_store import OutboxError, OutboxFull
from device.sync.seq_mark import SeqMark, mark_path

__all__ = ["Outbox", "OutboxRow", "OutboxStats", "ResendResult", "OutboxFull", "OutboxError", "AlarmCallback"]

log = logging.getLogger(__name__)

MAX_EVICTION_BATCH = 256  # undelivered rows evicted at most per round when storage is full


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
        self._alarm = Alarms(on_alarm).raise_
        self._clock = clock
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._mark = SeqMark(mark_path(self.path))
        except OSError as exc:
            raise OutboxError(f"cannot open the seq mark of outbox {self.path}: {exc}") from exc
        try:
            self._db, quarantined, damage = store.open_database(self.path, self.config.max_db_bytes)
        except OutboxError:
            self._mark.close()
            raise
        try:
            with self._txn():
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', '1'), ('last_seq', '0')")
                if device_id is not None:
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('device_id', ?)", (device_id,))
                    stored = self._meta("device_id")
                    if stored != device_id:
                        raise OutboxError(f"outbox {self.path} belongs to device {stored!r}, not {device_id!r}")
                reset = self._db.execute("UPDATE outbox SET state = 'pending' WHERE state = 'inflight'").rowcount
            if quarantined is not None:
                self._alarm("outbox_quarantined", "error", f"outbox was damaged ({damage}); kept as {quarantined.name}")
            self._continue_seqs("quarantined" if quarantined is not None else "lost_from_database")
            self._reserve = self.path.with_name(self.path.name + ".reserve")
            self._reserved = store.fill_reserve(self._reserve)
        except OutboxError:
            self.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        if reset:
            log.info("outbox: %d rows left in flight by the last run are pending again", reset)

    # ----------------------------------------------------------------- writing records
    def add(self, build: Callable[[int], Mapping[str, Any]]) -> OutboxRow:
        """Allocate the next seq, call ``build(seq)`` for the record, and commit it as pending.

        The record must carry that ``seq`` and a ``msg_id``. Raises OutboxFull (and raises an
        alarm) when a limit refuses it; the seq is then not consumed. Storage full: evicts
        delivered rows, then the oldest undelivered (``seqs_lost``), and tries again.
        """
        with self._lock:
            remedies = self._make_room()
            while True:
                try:
                    row = self._add(build)
                    self._reserved = self._reserved or store.fill_reserve(self._reserve)
                    return row
                except sqlite3.Error as exc:
                    if not store.is_full(exc):
                        raise self._fail(exc) from exc
                    full = exc
                except OSError as exc:  # the seq mark could not be written
                    raise self._fail(exc) from exc
                self._alarm("outbox_full", "error", f"storage full ({full}): making room")
                if next(remedies, None) is None:
                    raise self._refuse(f"storage full ({full}) with nothing left to evict", kept=False)

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
            self._mark.advance(seq)  # durable before the commit: a lost commit never frees its seq
            self._db.execute(
                "INSERT INTO outbox (seq, msg_id, state, payload, size, created_at) VALUES (?, ?, 'pending', ?, ?, ?)",
                (seq, str(record["msg_id"]), payload, len(payload), self._clock()),
            )
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(seq),))
        self._mark.confirm(seq)
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
            self._mark.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _txn(self) -> store.Txn:
        return store.Txn(self._db)

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return "" if row is None else str(row[0])

    def _make_room(self) -> Iterator[str]:
        """One step per SQLITE_FULL: give the reserve file back (so a checkpoint and a delete fit
        on a full disk), evict delivered rows, else the oldest undelivered (1, 2, 4 ... rows a
        round), hand the freed pages to the filesystem; a step ends once the reserve is back."""
        batch = 1
        while True:
            self._reserve.unlink(missing_ok=True)
            self._reserved = False
            store.give_back_space(self._db)
            if self._evict_delivered():
                step = "delivered"
            elif self._evict_undelivered(batch):
                step, batch = "undelivered", min(batch * 2, MAX_EVICTION_BATCH)
            else:
                return
            store.give_back_space(self._db)
            self._reserved = store.fill_reserve(self._reserve)
            if self._reserved:
                yield step

    def _evict_delivered(self) -> int:
        """Delete the oldest delivered rows (a tenth of them, 100 at least); returns how many."""
        try:
            with self._txn():
                n = len(store.evict_oldest(self._db, "state = 'delivered'", None))
        except sqlite3.Error as exc:
            log.error("outbox: could not evict delivered rows: %s", exc)
            return 0
        if n:
            self._alarm("outbox_retention_evicted", "warning", f"storage full: evicted {n} delivered rows early")
        return n

    def _evict_undelivered(self, n: int) -> int:
        """Delete the ``n`` oldest undelivered rows and report their seqs (``seqs_lost``)."""
        try:
            with self._txn():
                seqs = store.evict_oldest(self._db, "state != 'delivered'", n)
        except sqlite3.Error as exc:
            log.error("outbox: could not evict undelivered rows: %s", exc)
            return 0
        if seqs:
            self._lost(store.runs(seqs), "outbox_full", f"storage full: {len(seqs)} undelivered records evicted")
        return len(seqs)

    def _continue_seqs(self, reason: str) -> None:
        """Reconcile the database's last seq with the durable mark: seqs committed (or, after a
        quarantine, handed out) beyond the database's last are gone and reported lost."""
        last, mark = int(self._meta("last_seq")), self._mark.value
        if self._mark.unreadable:
            self._alarm("outbox_error", "error", f"seq mark {self._mark.path.name} unreadable; continuing at {last}")
        if mark > last and self._mark.committed <= last and reason != "quarantined":
            # Reserved, never committed (killed before the commit returned): nothing was stored
            # or published under those seqs, and the database is whole up to its last commit.
            return
        if mark > last:
            with self._txn():
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (str(mark),))
            self._lost([[last + 1, mark]], reason, "records no longer in the outbox database")
        else:
            self._mark.advance(last)
            self._mark.confirm(last)

    def _lost(self, ranges: list[list[int]], reason: str, message: str) -> None:
        """Report seqs handed out that the outbox no longer holds; never rate limited."""
        text = ", ".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in ranges)
        self._alarm("seqs_lost", "error", f"{message}: seqs {text}", throttle=False, reason=reason, ranges=ranges)

    def _check_high_water(self, count: int, size: int) -> None:
        cfg = self.config
        hw = cfg.high_water
        if (cfg.max_pending and count >= hw * cfg.max_pending) or (
            cfg.max_pending_bytes and size >= hw * cfg.max_pending_bytes
        ):
            self._alarm("outbox_high", "warning", f"{count} undelivered records, {size} bytes (high water {hw:.0%})")

    def _refuse(self, reason: str, kept: bool = True) -> OutboxFull:
        tail = "stored records are kept" if kept else "see the seqs_lost events"
        self._alarm("outbox_full", "error", f"new record refused: {reason}; {tail}")
        return OutboxFull(f"outbox full, record refused: {reason} ({tail})")

    def _fail(self, exc: sqlite3.Error | OSError) -> OutboxError:
        self._alarm("outbox_error", "error", f"outbox write failed: {exc}")
        return OutboxError(f"outbox {self.path}: write failed: {exc}")
