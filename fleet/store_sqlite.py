"""The embedded store: one SQLite file (WAL, fsync on commit), nothing to set up.

Several processes may write the same file (two consumer replicas on one machine): every write
transaction starts with ``BEGIN IMMEDIATE`` (the file's one write lock, taken up front, so a
reader never has to upgrade and fail), a writer that finds the lock taken waits up to
``BUSY_TIMEOUT_S`` for it, and WAL lets readers (a dashboard) go on meanwhile. The writes are
serialised, not parallel: replicas add resilience here, not throughput; for that, PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from fleet.store_sql import Cursor, Dialect, SqlStore

__all__ = ["BUSY_TIMEOUT_S", "SqliteStore"]

BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another process's write lock


class SqliteStore(SqlStore):
    """The store in the SQLite file at ``path`` (created with its folder, or migrated, on open)."""

    dialect = Dialect("sqlite", "?", "INTEGER", "REAL", "BLOB", "max")

    def __init__(self, path: str) -> None:
        if not path:
            raise ValueError("the SQLite store needs a file path")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        super().__init__()

    def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        return self._db.execute(sql, tuple(params))

    def _transaction(self) -> AbstractContextManager[None]:
        return self._immediate()

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _has_column(self, table: str, column: str) -> bool:
        return any(row[1] == column for row in self._db.execute(f"PRAGMA table_info({table})"))

    def _lock_for_migrations(self) -> None:
        pass  # BEGIN IMMEDIATE holds the file's write lock already

    def close(self) -> None:
        self._db.close()
