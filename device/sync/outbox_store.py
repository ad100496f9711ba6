"""The outbox's SQLite file: opening it (WAL, fsync, ``PRAGMA quick_check``), quarantining a
damaged one, transactions, and telling SQLite's error codes apart.

A file that SQLite cannot read as a healthy database (``SQLITE_NOTADB``, ``SQLITE_CORRUPT``,
or ``quick_check`` not ``ok``: a truncated file, a garbage header, an overwritten page) is
*damaged*: ``open_database`` renames it and its ``-wal``/``-shm`` to
``<name>.quarantined-<UTC time>`` (kept for forensics; ``sqlite3`` opens the copy with its WAL)
and creates a fresh one. Other errors (permissions, I/O, a full disk) are not damage and are
raised as they are.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

__all__ = [
    "OutboxError",
    "OutboxFull",
    "Txn",
    "open_database",
    "quarantine",
    "evict_oldest",
    "fill_reserve",
    "give_back_space",
    "is_full",
    "is_damage",
    "runs",
]

log = logging.getLogger(__name__)

RESERVE_BYTES = 64 * 1024  # ``<outbox>.reserve``: space given back to SQLite when the disk is full
WAL_CHECKPOINT_BYTES = 32 * 1024  # the WAL is checkpointed past this, so a checkpoint fits the reserve

SCHEMA = """
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
    """The outbox database failed (I/O error, wrong device, no WAL) and could not be repaired."""


class OutboxFull(OutboxError):
    """A new record was refused because a limit is reached; nothing stored was touched."""


class _Damaged(Exception):
    """The file is not a healthy SQLite database (the reason says why)."""


def is_full(exc: BaseException) -> bool:
    """SQLITE_FULL: the disk is full or ``max_page_count`` (``max_db_bytes``) is reached."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL


def is_damage(exc: BaseException) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file's content is broken."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def open_database(path: Path, max_db_bytes: int = 0) -> tuple[sqlite3.Connection, Path | None, str]:
    """Open (or create) the outbox file with the schema. Returns ``(connection, quarantined,
    reason)``: where a damaged file was moved (None when it was healthy) and what was wrong.

    Raises OutboxError for errors that are not damage (permissions, I/O, no WAL) and when the
    fresh file cannot be opened either.
    """
    try:
        return _connect(path, max_db_bytes), None, ""
    except _Damaged as exc:
        reason = str(exc)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
    moved = quarantine(path)
    log.error("outbox %s is damaged (%s): moved to %s, starting a fresh one", path, reason, moved)
    try:
        return _connect(path, max_db_bytes), moved, reason
    except (_Damaged, sqlite3.Error) as exc:
        raise OutboxError(f"outbox {path}: cannot open a fresh database: {exc}") from exc


def quarantine(path: Path, when: datetime | None = None) -> Path:
    """Rename ``path`` and its ``-wal``/``-shm`` to ``<name>.quarantined-<YYYYmmddTHHMMSSZ>[-n]``;
    returns the new database path."""
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.quarantined-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}.quarantined-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{target}{suffix}")
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def evict_oldest(db: sqlite3.Connection, where: str, n: int | None) -> list[int]:
    """Delete the oldest rows matching ``where`` (SQL over the outbox's columns): ``n`` of them,
    or when None a tenth of them and at least 100. Returns their seqs, ascending. Call inside a
    transaction."""
    if n is None:
        total = int(db.execute(f"SELECT count(*) FROM outbox WHERE {where}").fetchone()[0])
        n = min(total, max(100, total // 10))
    seqs = [int(r[0]) for r in db.execute(f"SELECT seq FROM outbox WHERE {where} ORDER BY seq LIMIT ?", (n,))]
    db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
    return seqs


def give_back_space(db: sqlite3.Connection) -> None:
    """Checkpoint and truncate the WAL, hand free pages back to the filesystem (files created
    with ``auto_vacuum=INCREMENTAL``), checkpoint again. Errors are logged: on a full disk each
    step is worth trying."""
    for sql in ("PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA incremental_vacuum", "PRAGMA wal_checkpoint(TRUNCATE)"):
        try:
            db.execute(sql).fetchall()
        except sqlite3.Error as exc:
            log.warning("outbox: %s failed: %s", sql, exc)


def fill_reserve(path: Path) -> bool:
    """Create the reserve file (RESERVE_BYTES written, fsync'd) unless it is there; False (and
    no file) when the filesystem has no room for it. Deleting it lets a checkpoint and a delete
    run on a full disk, where they would otherwise fail for want of the very space they free."""
    if path.exists() and path.stat().st_size >= RESERVE_BYTES:
        return True
    try:
        with path.open("wb") as f:
            f.write(bytes(RESERVE_BYTES))
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        path.unlink(missing_ok=True)
        return False


def _connect(path: Path, max_db_bytes: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"outbox {path}: WAL journal not available (got {mode})")
        db.execute("PRAGMA synchronous=FULL")
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
        db.execute(f"PRAGMA wal_autocheckpoint={max(1, WAL_CHECKPOINT_BYTES // page)}")
        problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise _Damaged("quick_check: " + "; ".join(problems))
        if max_db_bytes:
            db.execute(f"PRAGMA max_page_count={max(16, max_db_bytes // page)}")
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes on a new file: evicted pages can go back
        db.executescript(SCHEMA)
        return db
    except sqlite3.DatabaseError as exc:
        db.close()
        if is_damage(exc):
            raise _Damaged(f"{exc.sqlite_errorname}: {exc}") from exc
        raise
    except BaseException:
        db.close()
        raise


class Txn:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception while a transaction is
    still open. A failed COMMIT (SQLITE_FULL, I/O) that SQLite has already rolled back is
    raised as it is, never hidden behind "cannot rollback - no transaction is active"."""

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
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error as exc:  # the first error is the one to report
                log.warning("outbox: rollback failed: %s", exc)


def runs(seqs: list[int]) -> list[list[int]]:
    """Sorted distinct integers as inclusive ``[lo, hi]`` runs."""
    groups = itertools.groupby(enumerate(seqs), key=lambda t: t[1] - t[0])
    return [[run[0][1], run[-1][1]] for run in (list(g) for _, g in groups)]
