"""The fleet consumer's SQLite database: results once by ``msg_id``, conflicts, rejected
payloads, unrecoverable ranges and anomalies, per-device counters.

Results of both record versions are stored; the columns ``schema``, ``client_id``,
``session_id``, ``site`` and ``visit_date`` (added on open to a database made before record
version 2) hold each record's version and session tags (NULL for a version 1 record), so a
client's visits can be queried without parsing payloads.

Not thread-safe by itself: the consumer serialises calls under its lock. Every seq set is
stored as ranges (``unavailable``, ``anomalies``) and loaded back as ranges (the held seqs
are grouped into runs by SQLite), so a restart costs O(ranges) memory.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fleet.ranges import Range, add

__all__ = ["REJECTED_KEEP_BYTES", "TAG_COLUMNS", "FleetStore", "StoredDevice"]

REJECTED_KEEP_BYTES = 1024  # of a rejected payload, only this prefix is kept (with its size and SHA-256)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    msg_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, boot_id TEXT NOT NULL,
    captured_at TEXT NOT NULL, received_at REAL NOT NULL, payload TEXT NOT NULL, UNIQUE (device_id, seq));
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, deliveries INTEGER NOT NULL DEFAULT 0, duplicates INTEGER NOT NULL DEFAULT 0,
    known_last_seq INTEGER NOT NULL DEFAULT 0, resend_requests INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS conflicts (
    msg_id TEXT NOT NULL, device_id TEXT NOT NULL, seq INTEGER NOT NULL, stored_msg_id TEXT,
    received_at REAL NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (received_at REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS unavailable (device_id TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS anomalies (device_id TEXT NOT NULL, kind TEXT NOT NULL, from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, UNIQUE (device_id, kind, from_seq));
"""
# Columns added since the first release; an older database gets them on open.
_ADDED = {
    "rejected": {"payload_bytes": "INTEGER", "payload_sha256": "TEXT"},
    "results": {"schema": "TEXT", "client_id": "TEXT", "session_id": "TEXT", "site": "TEXT", "visit_date": "TEXT"},
}
#: Session tags of a version 2 record, stored in their own columns.
TAG_COLUMNS = ("client_id", "session_id", "site", "visit_date")

Outcome = Literal["new", "duplicate", "conflict"]


@dataclass
class StoredDevice:
    """One device as the database holds it: the seqs as ranges."""

    known_last: int = 0
    held: list[Range] = field(default_factory=list)
    received: int = 0
    unavailable: list[Range] = field(default_factory=list)


class FleetStore:
    """The consumer's database at ``path`` (WAL, fsync on commit), created or upgraded on open."""

    def __init__(self, path: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for table, columns in _ADDED.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        self._db.execute("CREATE INDEX IF NOT EXISTS results_client ON results (client_id, session_id)")

    def close(self) -> None:
        self._db.close()

    # ----------------------------------------------------------------- writes
    def add_device(self, device: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO devices (device_id) VALUES (?)", (device,))

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
    ) -> tuple[Outcome, Any]:
        """Store a validated result once: ``("new", None)``, ``("duplicate", None)`` (same
        ``msg_id`` again, counted) or ``("conflict", what is stored)`` (kept apart, never merged).
        ``schema``: the record's version; ``tags``: its session tags (``TAG_COLUMNS``)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("UPDATE devices SET deliveries = deliveries + 1 WHERE device_id = ?", (device,))
            held = db.execute("SELECT msg_id FROM results WHERE device_id = ? AND seq = ?", (device, seq)).fetchone()
            same_id = db.execute("SELECT device_id, seq FROM results WHERE msg_id = ?", (msg_id,)).fetchone()
            outcome: tuple[Outcome, Any]
            if held is None and same_id is None:
                tag = [(tags or {}).get(k) for k in TAG_COLUMNS]
                db.execute(
                    "INSERT INTO results (msg_id, device_id, seq, boot_id, captured_at, received_at, payload, schema, "
                    f"{', '.join(TAG_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (msg_id, device, seq, boot_id, captured_at, time.time(), payload, schema, *tag),
                )
                outcome = ("new", None)
            elif held is not None and held[0] == msg_id:
                db.execute("UPDATE devices SET duplicates = duplicates + 1 WHERE device_id = ?", (device,))
                outcome = ("duplicate", None)
            else:
                db.execute(
                    "INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?)",
                    (msg_id, device, seq, held[0] if held else None, time.time(), payload),
                )
                outcome = ("conflict", held or same_id)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return outcome

    def reject(self, topic: str, reason: str, payload: bytes) -> None:
        """Keep a rejected payload once: its first ``REJECTED_KEEP_BYTES`` bytes, size and SHA-256."""
        self._db.execute(
            "INSERT INTO rejected (received_at, topic, reason, payload, payload_bytes, payload_sha256) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                time.time(),
                topic,
                reason,
                payload[:REJECTED_KEEP_BYTES],
                len(payload),
                hashlib.sha256(payload).hexdigest(),
            ),
        )

    def add_unavailable(self, device: str, lo: int, hi: int) -> None:
        self._db.execute("INSERT INTO unavailable VALUES (?, ?, ?)", (device, lo, hi))

    def flag(self, device: str, kind: str, lo: int, hi: int) -> None:
        """Record anomaly ``kind`` over seqs ``lo..hi``; the same ``(kind, lo)`` again extends it."""
        now = time.time()
        self._db.execute(
            "INSERT INTO anomalies VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, kind, from_seq) "
            "DO UPDATE SET to_seq = max(to_seq, excluded.to_seq), last_seen = excluded.last_seen",
            (device, kind, lo, hi, now, now),
        )

    def set_known_last(self, device: str, last_seq: int) -> None:
        self._db.execute("UPDATE devices SET known_last_seq = ? WHERE device_id = ?", (last_seq, device))

    def count_resend_requests(self, device: str, n: int) -> None:
        self._db.execute("UPDATE devices SET resend_requests = resend_requests + ? WHERE device_id = ?", (n, device))

    # ----------------------------------------------------------------- reads
    def load(self) -> dict[str, StoredDevice]:
        """Every device with its seqs held (grouped into runs by SQLite) and unrecoverable."""
        out = {
            d: StoredDevice(known_last=int(k))
            for d, k in self._db.execute("SELECT device_id, known_last_seq FROM devices")
        }
        runs = self._db.execute(
            "SELECT device_id, min(seq), max(seq), count(*) FROM (SELECT device_id, seq, "
            "seq - row_number() OVER (PARTITION BY device_id ORDER BY seq) AS run FROM results) "
            "GROUP BY device_id, run ORDER BY device_id, min(seq)"
        )
        for device, lo, hi, n in runs:
            dev = out.setdefault(device, StoredDevice())
            dev.held.append((int(lo), int(hi)))
            dev.received += int(n)
        for device, lo, hi in self._db.execute("SELECT device_id, from_seq, to_seq FROM unavailable"):
            add(out.setdefault(device, StoredDevice()).unavailable, int(lo), int(hi))
        return out

    def device_report(self, device: str) -> dict[str, Any]:
        """Counters, conflicts and records per boot of one device."""
        row = self._db.execute(
            "SELECT deliveries, duplicates, resend_requests FROM devices WHERE device_id = ?", (device,)
        ).fetchone() or (0, 0, 0)
        boots = {
            b: {"records": n, "first_seq": lo, "last_seq": hi}
            for b, n, lo, hi in self._db.execute(
                "SELECT boot_id, count(*), min(seq), max(seq) FROM results WHERE device_id = ? "
                "GROUP BY boot_id ORDER BY min(seq)",
                (device,),
            )
        }
        conflicts = self._db.execute("SELECT count(*) FROM conflicts WHERE device_id = ?", (device,)).fetchone()[0]
        return {
            "deliveries": row[0],
            "duplicates": row[1],
            "conflicts": conflicts,
            "resend_requests": row[2],
            "boots": boots,
        }

    def rejected_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM rejected").fetchone()[0])
