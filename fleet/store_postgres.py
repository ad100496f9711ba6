"""The fleet store on PostgreSQL (psycopg 3, the ``fleet`` extra): one server that several
consumer replicas write to at once.

Each replica holds one connection in autocommit mode; multi-statement writes run in a
transaction (READ COMMITTED). Two replicas storing the same record at once meet at the unique
keys: ``INSERT ... ON CONFLICT DO NOTHING`` waits for the other's transaction and then does
nothing, so one row is stored and the second replica counts a duplicate. Migrations take a
transaction-scoped advisory lock, so replicas starting together migrate once.

A broken connection (the server restarted, a network cut) is reopened on the next call; the
call that met the break raises, and the consumer logs it (the record comes back through the
resend path). Passwords: in the URL, or better in ``~/.pgpass`` / ``PGPASSFILE`` (libpq).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from device.contracts.errors import MissingExtra
from fleet.store import StoreError, describe_url
from fleet.store_sql import Cursor, Dialect, SqlStore

try:
    import psycopg
except ImportError:  # pragma: no cover - the core install has no psycopg
    psycopg = None  # type: ignore[assignment]

__all__ = ["CONNECT_TIMEOUT_S", "MIGRATION_LOCK", "PostgresStore"]

CONNECT_TIMEOUT_S = 10
MIGRATION_LOCK = 0x5CA1_ED6E  # the advisory lock key migrations hold (any constant, the same in every replica)


class PostgresStore(SqlStore):
    """The store in the PostgreSQL database at ``url`` (``postgresql://user[:pw]@host:port/db``)."""

    dialect = Dialect("postgresql", "%s", "BIGINT", "DOUBLE PRECISION", "BYTEA", "GREATEST")

    def __init__(self, url: str) -> None:
        if psycopg is None:
            raise MissingExtra("a PostgreSQL store needs the fleet extra (psycopg): pip install 'scalpedge[fleet]'")
        self.url = url
        self._conn = self._connect()
        super().__init__()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="scalpedge-fleet"
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {describe_url(self.url)}: {str(exc).strip()}") from exc

    def _live(self) -> psycopg.Connection[Any]:
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        return self._live().execute(sql, tuple(params))

    def _transaction(self) -> AbstractContextManager[None]:
        return self._tx()

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._live().transaction():
            yield

    def _has_column(self, table: str, column: str) -> bool:
        row = self._run(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s AND column_name = %s",
            (table, column),
        ).fetchone()
        return row is not None

    def _lock_for_migrations(self) -> None:
        self._run("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def close(self) -> None:
        self._conn.close()
