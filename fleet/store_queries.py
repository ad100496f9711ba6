"""The dashboard's reads, written once for both store backends: a mixin of ``SqlStore``
(``fleet.store_sql``) over the connection it runs statements on.

Each query is a single indexed lookup or range: devices by primary key, a device's results by
``(device_id, seq)`` (newest first, keyset pages), a client's by ``(client_id, captured_at)``,
events and telemetry by ``(device_id, received_at)``.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from fleet.store import DeviceStatus, StoredResult

__all__ = ["Cursor", "DashboardQueries"]

_RESULT_COLUMNS = (
    "msg_id, device_id, seq, boot_id, captured_at, received_at, stored_by, schema, bundle_version, "
    "client_id, session_id, site, visit_date, payload"
)
_DEVICE_COLUMNS = (
    "device_id, state, status_reason, boot_id, status_at, last_seen, battery, temperature_c, firmware, "
    "bundle_version, last_error, last_error_at, known_last_seq, delivered_upto, stored"
)


class Cursor(Protocol):
    """What a backend's statements return (a DB-API cursor)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class DashboardQueries:
    """``Store``'s dashboard reads; the class it is mixed into runs the statements (``_x``)."""

    @abstractmethod
    def _x(self, sql: str, *params: Any) -> Cursor:
        """Run one statement with ``?`` placeholders."""

    def devices(self) -> list[DeviceStatus]:
        return [_device(r) for r in self._x(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY device_id").fetchall()]

    def device(self, device: str) -> DeviceStatus | None:
        row = self._x(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?", device).fetchone()
        return None if row is None else _device(row)

    def device_results(self, device: str, limit: int | None = 50, before_seq: int | None = None) -> list[StoredResult]:
        sql = f"SELECT {_RESULT_COLUMNS} FROM results WHERE device_id = ?"
        params: list[Any] = [device]
        if before_seq is not None:
            sql += " AND seq < ?"
            params.append(before_seq)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be >= 1, got {limit}")
            sql += " LIMIT ?"
            params.append(limit)
        return [_result(r) for r in self._x(sql, *params).fetchall()]

    def result(self, msg_id: str) -> StoredResult | None:
        row = self._x(f"SELECT {_RESULT_COLUMNS} FROM results WHERE msg_id = ?", msg_id).fetchone()
        return None if row is None else _result(row)

    def client_results(self, client_id: str) -> list[StoredResult]:
        rows = self._x(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE client_id = ? ORDER BY captured_at, device_id, seq",
            client_id,
        ).fetchall()
        return [_result(r) for r in rows]

    def events(self, device: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._x(
            "SELECT event, severity, message, ts, received_at, payload FROM events WHERE device_id = ? "
            "ORDER BY received_at DESC LIMIT ?",
            device,
            limit,
        ).fetchall()
        keys = ("event", "severity", "message", "ts", "received_at")
        return [{**dict(zip(keys, r[:5], strict=True)), "body": json.loads(r[5])} for r in rows]

    def telemetry(self, device: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._x(
            "SELECT ts, received_at, battery, temperature_c, fps, last_seq, delivered_upto, outbox FROM telemetry "
            "WHERE device_id = ? ORDER BY received_at DESC LIMIT ?",
            device,
            limit,
        ).fetchall()
        out = []
        for ts, received, battery, temp, fps, last, upto, outbox in rows:
            out.append(
                {
                    "ts": ts,
                    "received_at": received,
                    "battery": None if battery is None else json.loads(battery),
                    "temperature_c": temp,
                    "fps": fps,
                    "last_seq": last,
                    "delivered_upto": upto,
                    "outbox": None if outbox is None else json.loads(outbox),
                }
            )
        return out

    def _export_results(self, device: str | None, client_id: str | None) -> list[StoredResult]:
        where, params = [], []
        for column, value in (("device_id", device), ("client_id", client_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = f"SELECT {_RESULT_COLUMNS} FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_result(r) for r in self._x(sql + " ORDER BY captured_at, device_id, seq", *params).fetchall()]


def _device(row: Sequence[Any]) -> DeviceStatus:
    (device, state, reason, boot, status_at, seen, battery, temp, firmware, bundle, error, error_at, last, upto, n) = (
        row
    )
    return DeviceStatus(
        device_id=device,
        state=state,
        status_reason=reason,
        boot_id=boot,
        status_at=status_at,
        last_seen=seen,
        battery=None if battery is None else json.loads(battery),
        temperature_c=temp,
        firmware=firmware,
        bundle_version=bundle,
        last_error=error,
        last_error_at=error_at,
        last_seq=int(last),
        delivered_upto=None if upto is None else int(upto),
        results=int(n),
    )


def _result(row: Sequence[Any]) -> StoredResult:
    msg_id, device, seq, boot, captured, received, by, schema, bundle, client, session, site, visit, payload = row
    return StoredResult(
        msg_id=msg_id,
        device_id=device,
        seq=int(seq),
        boot_id=boot,
        captured_at=captured,
        received_at=float(received),
        stored_by=by,
        schema=schema,
        bundle_version=bundle,
        client_id=client,
        session_id=session,
        site=site,
        visit_date=visit,
        payload=payload,
    )
