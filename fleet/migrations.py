"""The fleet database's schema as a versioned list of migrations, applied in order on open.

Each ``Migration`` is a version, a one-line description and its steps: SQL statements written
once for both backends (``{INT}`` 64-bit integer, ``{REAL}`` double, ``{BLOB}`` bytes, filled
in per dialect) and ``AddColumn`` steps (SQLite has no ``ADD COLUMN IF NOT EXISTS``: its
backend looks the column up first). The versions applied are rows of ``schema_version``.

A SQLite file made before migrations existed has tables but no ``schema_version``: every step
is written to be a no-op on what is already there (``IF NOT EXISTS``, ``AddColumn``), so such a
file runs the whole list and comes out at the current version with its rows intact.

Never edit a released migration: append a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "AddColumn", "Migration", "latest_version"]


@dataclass(frozen=True)
class AddColumn:
    """``ALTER TABLE table ADD COLUMN name kind``, skipped when the column exists."""

    table: str
    name: str
    kind: str  # SQL type, may use {INT} / {REAL} / {BLOB}


Step = str | AddColumn


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    steps: tuple[Step, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "results once by msg_id, device counters, conflicts, rejected payloads, unrecoverable ranges, anomalies",
        (
            "CREATE TABLE IF NOT EXISTS results (msg_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, "
            "seq {INT} NOT NULL, boot_id TEXT NOT NULL, captured_at TEXT NOT NULL, received_at {REAL} NOT NULL, "
            "payload TEXT NOT NULL, UNIQUE (device_id, seq))",
            "CREATE TABLE IF NOT EXISTS devices (device_id TEXT PRIMARY KEY, "
            "deliveries {INT} NOT NULL DEFAULT 0, duplicates {INT} NOT NULL DEFAULT 0, "
            "known_last_seq {INT} NOT NULL DEFAULT 0, resend_requests {INT} NOT NULL DEFAULT 0)",
            "CREATE TABLE IF NOT EXISTS conflicts (msg_id TEXT NOT NULL, device_id TEXT NOT NULL, seq {INT} NOT NULL, "
            "stored_msg_id TEXT, received_at {REAL} NOT NULL, payload TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS rejected (received_at {REAL} NOT NULL, topic TEXT NOT NULL, "
            "reason TEXT NOT NULL, payload {BLOB} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS unavailable (device_id TEXT NOT NULL, from_seq {INT} NOT NULL, "
            "to_seq {INT} NOT NULL)",
            "CREATE TABLE IF NOT EXISTS anomalies (device_id TEXT NOT NULL, kind TEXT NOT NULL, "
            "from_seq {INT} NOT NULL, to_seq {INT} NOT NULL, first_seen {REAL} NOT NULL, last_seen {REAL} NOT NULL, "
            "UNIQUE (device_id, kind, from_seq))",
        ),
    ),
    Migration(
        2,
        "rejected payloads keep their size and SHA-256",
        (AddColumn("rejected", "payload_bytes", "{INT}"), AddColumn("rejected", "payload_sha256", "TEXT")),
    ),
    Migration(
        3,
        "result record version 2: the record's schema and session tags in their own columns",
        (
            AddColumn("results", "schema", "TEXT"),
            AddColumn("results", "client_id", "TEXT"),
            AddColumn("results", "session_id", "TEXT"),
            AddColumn("results", "site", "TEXT"),
            AddColumn("results", "visit_date", "TEXT"),
            "CREATE INDEX IF NOT EXISTS results_client ON results (client_id, session_id)",
        ),
    ),
    Migration(
        4,
        "the fleet service: device status, telemetry, events, results per bundle, indexes for dashboards",
        (
            AddColumn("results", "bundle_version", "TEXT"),
            AddColumn("results", "stored_by", "TEXT"),
            AddColumn("devices", "stored", "{INT} NOT NULL DEFAULT 0"),
            AddColumn("devices", "delivered_upto", "{INT}"),
            AddColumn("devices", "state", "TEXT"),
            AddColumn("devices", "status_reason", "TEXT"),
            AddColumn("devices", "boot_id", "TEXT"),
            AddColumn("devices", "status_at", "{REAL}"),
            AddColumn("devices", "last_seen", "{REAL}"),
            AddColumn("devices", "battery", "TEXT"),
            AddColumn("devices", "temperature_c", "{REAL}"),
            AddColumn("devices", "firmware", "TEXT"),
            AddColumn("devices", "bundle_version", "TEXT"),
            AddColumn("devices", "last_error", "TEXT"),
            AddColumn("devices", "last_error_at", "{REAL}"),
            AddColumn("devices", "resend_at", "{REAL}"),
            # Rows stored before the counter existed.
            "UPDATE devices SET stored = (SELECT count(*) FROM results WHERE results.device_id = devices.device_id)",
            "CREATE TABLE IF NOT EXISTS telemetry (device_id TEXT NOT NULL, boot_id TEXT NOT NULL, ts TEXT NOT NULL, "
            "received_at {REAL} NOT NULL, battery TEXT, temperature_c {REAL}, fps {REAL}, last_seq {INT}, "
            "delivered_upto {INT}, outbox TEXT, UNIQUE (device_id, boot_id, ts))",
            "CREATE INDEX IF NOT EXISTS telemetry_received ON telemetry (received_at)",
            "CREATE TABLE IF NOT EXISTS events (device_id TEXT NOT NULL, boot_id TEXT NOT NULL, event TEXT NOT NULL, "
            "severity TEXT, message TEXT, ts TEXT NOT NULL, received_at {REAL} NOT NULL, payload TEXT NOT NULL, "
            "payload_sha256 TEXT NOT NULL, UNIQUE (device_id, payload_sha256))",
            "CREATE INDEX IF NOT EXISTS events_device ON events (device_id, received_at)",
            "CREATE INDEX IF NOT EXISTS results_client_time ON results (client_id, captured_at)",
        ),
    ),
)


def latest_version() -> int:
    return MIGRATIONS[-1].version
