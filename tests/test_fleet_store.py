"""The fleet store on both backends: a real SQLite file and a real PostgreSQL server started here
(Debian's binaries, a temp data directory, a free port; one fresh database per test).

What the consumer writes (results once by msg_id, status, telemetry, events) and what a
dashboard reads (devices, a device's results newest first, one result, a client's visits,
export rows) behave the same on both; migrations upgrade a first-release SQLite file in place;
two writers at once (two processes on one SQLite file, two connections to PostgreSQL) store
each record once.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres import Postgres
from sync_device import sample_fields

from device.contracts.config import ConfigError
from device.contracts.records import RecordFactory, dumps_record
from fleet.config import FleetConfig
from fleet.migrations import latest_version
from fleet.store import Store, StoreError, describe_url, open_store
from fleet.store_sqlite import SqliteStore

BOOT = "6f0c3b1e-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    with Postgres() as pg:
        yield pg


def fresh_database(server: Postgres) -> str:
    """The URL of a new, empty database on ``server``."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "fleet.sqlite")
    return fresh_database(request.getfixturevalue("server"))


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = open_store(url)
    yield s
    s.close()


def _record(device: str, seq: int, **session: str) -> dict[str, Any]:
    factory = RecordFactory(device, "b-2026.1", boot_id=BOOT)
    return factory.build(seq, captured_at=f"2026-0{seq % 9 + 1}-01T10:00:00Z", session=session, **sample_fields(seq))


def _store(store: Store, rec: dict[str, Any], by: str = "replica-0") -> tuple[str, Any]:
    return store.store_result(
        rec["device_id"],
        rec["seq"],
        rec["msg_id"],
        rec["boot_id"],
        rec["captured_at"],
        dumps_record(rec).decode(),
        rec["schema"],
        {k: rec[k] for k in ("client_id", "session_id", "site", "visit_date") if k in rec},
        rec["bundle_version"],
        by,
    )


def test_results_are_stored_once_by_msg_id_and_read_back(store: Store) -> None:
    # Seqs 1-5 of one scanner; seq 3 arrives twice (a redelivery), and seq 4 again under another
    # msg_id (a conflict: kept apart, never merged).
    recs = [_record("scanner-a", seq) for seq in range(1, 6)]
    assert [_store(store, r)[0] for r in recs] == ["new"] * 5
    assert _store(store, recs[2]) == ("duplicate", None)
    other = {**recs[3], "msg_id": str(uuid.uuid4())}
    outcome, held = _store(store, other)
    assert outcome == "conflict" and held == (recs[3]["msg_id"],)
    report = store.device_report("scanner-a")
    assert (report["deliveries"], report["duplicates"], report["conflicts"]) == (7, 1, 1)
    assert report["boots"] == {BOOT: {"records": 5, "first_seq": 1, "last_seq": 5}}
    # Newest first, two to a page; the next page starts below the last seq shown.
    page = store.device_results("scanner-a", limit=2)
    assert [r.seq for r in page] == [5, 4]
    assert [r.seq for r in store.device_results("scanner-a", limit=2, before_seq=page[-1].seq)] == [3, 2]
    one = store.result(recs[0]["msg_id"])
    assert one is not None and one.record() == recs[0] and one.stored_by == "replica-0"
    assert one.bundle_version == "b-2026.1" and store.result(str(uuid.uuid4())) is None
    (dev,) = store.devices()
    assert (dev.device_id, dev.results, dev.bundle_version, dev.state) == ("scanner-a", 5, "b-2026.1", None)
    assert store.load()["scanner-a"].held == [(1, 5)]


def test_a_clients_visits_and_the_export_rows(store: Store) -> None:
    # One client seen on two scanners over three visits, and a scan outside any session.
    visits = [("scanner-a", 1, "2026-03-01"), ("scanner-b", 1, "2026-01-01"), ("scanner-a", 2, "2026-02-01")]
    for device, seq, day in visits:
        rec = _record(device, seq, client_id="c-0042", session_id=f"s-{day}", site="crown", visit_date=day)
        rec["captured_at"] = f"{day}T09:00:00Z"
        assert _store(store, rec)[0] == "new"
    _store(store, _record("scanner-a", 3))
    trend = store.client_results("c-0042")
    assert [(r.visit_date, r.device_id) for r in trend] == [
        ("2026-01-01", "scanner-b"),
        ("2026-02-01", "scanner-a"),
        ("2026-03-01", "scanner-a"),
    ]
    assert store.client_results("nobody") == []
    rows = store.export_rows(client_id="c-0042")
    assert len(rows) == 3 and len({tuple(r) for r in rows}) == 1  # the same columns in every row
    assert rows[0]["metric.hair_count"] == trend[0].record()["metrics"]["hair_count"]["value"]
    assert rows[0]["condition.dandruff"] == "good" and rows[0]["site"] == "crown"
    assert len(store.export_rows()) == 4 and len(store.export_rows(device="scanner-b")) == 1


def test_status_telemetry_and_events_make_the_device_list(store: Store) -> None:
    # Online with its seq marks, telemetry with a battery report, an error event; then the
    # broker publishes the last will. Redelivered telemetry and events are kept once.
    online = {"schema": "scalpedge.status/1", "state": "online", "device_id": "scanner-a", "boot_id": BOOT}
    store.record_status("scanner-a", {**online, "last_seq": 7, "delivered_upto": 5, "ts": "2026-01-01T10:00:00Z"})
    telemetry = {
        "device_id": "scanner-a",
        "boot_id": BOOT,
        "fps": 9.5,
        "battery": {"percent": 64, "charging": False},
        "temperature_c": 48.5,
        "last_seq": 9,
        "delivered_upto": 4,  # lower than the status said: marks never go down
        "outbox": {"pending": 4, "inflight": 0, "delivered_retained": 5, "undelivered_bytes": 900,
                   "oldest_undelivered_age_s": 3.0},
        "ts": "2026-01-01T10:00:10Z",
    }  # fmt: skip
    store.record_telemetry("scanner-a", telemetry)
    store.record_telemetry("scanner-a", telemetry)
    event = {"schema": "scalpedge.event/1", "device_id": "scanner-a", "boot_id": BOOT, "event": "outbox_full",
             "severity": "error", "message": "50000 records pending", "ts": "2026-01-01T10:00:11Z"}  # fmt: skip
    payload = json.dumps(event).encode()
    store.record_event("scanner-a", event, payload)
    store.record_event("scanner-a", event, payload)
    dev = store.device("scanner-a")
    assert dev is not None and dev.online and dev.battery == {"percent": 64, "charging": False}
    assert (dev.last_seq, dev.delivered_upto, dev.temperature_c) == (9, 5, 48.5)
    assert dev.last_error == "outbox_full: 50000 records pending"
    seen = dev.last_seen
    assert seen is not None and dev.last_error_at is not None
    assert len(store.telemetry("scanner-a")) == 1 and store.telemetry("scanner-a")[0]["outbox"]["pending"] == 4
    assert [e["event"] for e in store.events("scanner-a")] == ["outbox_full"]
    store.record_status(
        "scanner-a", {**online, "state": "offline", "reason": "connection lost", "ts": "2026-01-01T10:00:00Z"}
    )
    dev = store.device("scanner-a")
    assert dev is not None and not dev.online and dev.status_reason == "connection lost"
    assert dev.last_seen == seen  # the last will is the broker's message, not a sign of life
    assert store.prune_telemetry(before=dev.last_seen + 1) == 1 and store.telemetry("scanner-a") == []


def test_resend_claims_are_shared_by_every_connection(url: str) -> None:
    # Two replicas (two connections) see the same gap: one of them asks, once per interval.
    a, b = open_store(url), open_store(url)
    try:
        a.add_device("scanner-a")
        assert a.claim_resend("scanner-a", 60.0) is True
        assert b.claim_resend("scanner-a", 60.0) is False
        assert b.claim_resend("scanner-a", 0.0) is True  # the interval is over
        # What one replica stored, the other's refresh sees (above the floor it gives).
        for seq in (1, 2, 3, 5):
            _store(a, _record("scanner-a", seq))
        a.note_seqs("scanner-a", last_seq=6, delivered_upto=6)
        a.add_unavailable("scanner-a", 4, 4)
        fresh = b.refresh({"scanner-a": 1, "scanner-z": 0})
        assert (fresh["scanner-a"].held, fresh["scanner-a"].unavailable) == ([(2, 3), (5, 5)], [(4, 4)])
        assert (fresh["scanner-a"].known_last, fresh["scanner-a"].delivered_upto) == (6, 6)
        assert fresh["scanner-z"].held == [] and fresh["scanner-z"].known_last == 0
    finally:
        a.close()
        b.close()


def _write_all(path: str, records: list[dict[str, Any]], out: Any) -> None:
    store = SqliteStore(path)
    try:
        out.put([_store(store, r, by=f"pid-{multiprocessing.current_process().pid}")[0] for r in records])
    finally:
        store.close()


def test_two_processes_write_one_sqlite_file_without_loss_or_duplicates(tmp_path: Path) -> None:
    # Two replicas on one machine share the embedded store: both store the same 150 records at
    # once (what a broker redelivering after a replica restart does). Writes take the file's
    # write lock in turn (BEGIN IMMEDIATE, busy timeout): no "database is locked", one row each.
    path = str(tmp_path / "fleet.sqlite")
    SqliteStore(path).close()  # migrated once
    records = [_record(f"scanner-{i % 3}", i // 3 + 1) for i in range(150)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_write_all, args=(path, records, out)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert all({x, y} == {"new", "duplicate"} for x, y in zip(*outcomes, strict=True))  # each stored once
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*), count(DISTINCT msg_id) FROM results").fetchone() == (150, 150)
    assert db.execute("SELECT sum(duplicates), sum(stored) FROM devices").fetchone() == (150, 150)
    db.close()


def test_two_postgres_connections_store_the_same_records_at_once(server: Postgres) -> None:
    # The old store looked, then inserted: two replicas doing that at once on PostgreSQL both
    # find nothing and the second INSERT fails on the unique key. Now ON CONFLICT DO NOTHING
    # waits for the other's transaction: every record once, the other one counted a duplicate.
    url = fresh_database(server)
    open_store(url).close()
    records = [_record(f"scanner-{i % 4}", i // 4 + 1) for i in range(200)]
    outcomes: list[list[str]] = []
    errors: list[BaseException] = []

    def write() -> None:
        s = open_store(url)
        try:
            outcomes.append([_store(s, r)[0] for r in records])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(outcomes) == 2
    assert all({x, y} == {"new", "duplicate"} for x, y in zip(*outcomes, strict=True))
    s = open_store(url)
    try:
        assert sum(d.results for d in s.devices()) == 200
        assert sum(s.device_report(f"scanner-{i}")["duplicates"] for i in range(4)) == 200
    finally:
        s.close()


FIRST_RELEASE = """
CREATE TABLE results (msg_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, boot_id TEXT NOT NULL,
    captured_at TEXT NOT NULL, received_at REAL NOT NULL, payload TEXT NOT NULL, UNIQUE (device_id, seq));
CREATE TABLE devices (device_id TEXT PRIMARY KEY, deliveries INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0, known_last_seq INTEGER NOT NULL DEFAULT 0,
    resend_requests INTEGER NOT NULL DEFAULT 0);
CREATE TABLE conflicts (msg_id TEXT NOT NULL, device_id TEXT NOT NULL, seq INTEGER NOT NULL, stored_msg_id TEXT,
    received_at REAL NOT NULL, payload TEXT NOT NULL);
CREATE TABLE rejected (received_at REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE unavailable (device_id TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER NOT NULL);
CREATE TABLE anomalies (device_id TEXT NOT NULL, kind TEXT NOT NULL, from_seq INTEGER NOT NULL,
    to_seq INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, UNIQUE (device_id, kind, from_seq));
INSERT INTO results VALUES ('m1', 'scanner-0001', 1, 'b', '2024-01-01T00:00:00Z', 0, '{}');
INSERT INTO results VALUES ('m2', 'scanner-0001', 2, 'b', '2024-01-01T00:00:01Z', 0, '{}');
INSERT INTO devices (device_id, deliveries, known_last_seq) VALUES ('scanner-0001', 3, 2);
INSERT INTO rejected VALUES (0, 't', 'bad', x'00');
"""


def test_a_first_release_sqlite_file_migrates_itself_keeping_its_rows(tmp_path: Path) -> None:
    # A database the first consumer wrote (no schema_version table, none of the later columns).
    path = tmp_path / "fleet.sqlite"
    db = sqlite3.connect(path)
    db.executescript(FIRST_RELEASE)
    db.close()
    store = open_store(str(path))
    try:
        assert store.schema_version() == latest_version()
        (dev,) = store.devices()
        assert (dev.device_id, dev.results, dev.last_seq, dev.state) == ("scanner-0001", 2, 2, None)
        assert [r.msg_id for r in store.device_results("scanner-0001")] == ["m2", "m1"]
        assert store.rejected_count() == 1 and store.load()["scanner-0001"].held == [(1, 2)]
    finally:
        store.close()
    db = sqlite3.connect(path)
    versions = [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY version")]
    db.close()
    assert versions == list(range(1, latest_version() + 1))
    again = open_store(str(path))  # opening a current database changes nothing
    assert again.schema_version() == latest_version()
    again.close()


def test_a_database_from_a_newer_scalpedge_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.sqlite")
    open_store(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (latest_version() + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {latest_version() + 1}, newer .* upgrade scalpedge"):
        open_store(path)


def test_store_urls_say_what_is_wrong_and_never_print_a_password(server: Postgres) -> None:
    with pytest.raises(StoreError, match="expected postgresql://"):
        open_store("mysql://fleet@127.0.0.1/fleet")
    closed = f"postgresql://fleet:s3cret@127.0.0.1:{server.port + 1}/fleet"  # nothing listens there
    with pytest.raises(StoreError, match="cannot connect to postgresql://fleet:\\*\\*\\*@127.0.0.1") as info:
        open_store(closed)
    assert "s3cret" not in str(info.value)
    assert describe_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert FleetConfig(store=server.url).store_url == server.url
    assert FleetConfig(db="/x/fleet.sqlite").store_url == "/x/fleet.sqlite"
    with pytest.raises(ConfigError, match=r"\[fleet\] store must be a postgresql:// URL"):
        FleetConfig(store="sqlite:///x")
    with pytest.raises(ConfigError, match=r"\[fleet\] share_group must match"):
        FleetConfig(share_group="a/b")
    assert FleetConfig().resolved_session_expiry_s == 3600
    assert FleetConfig(share_group="g").resolved_session_expiry_s == 0
    assert FleetConfig(share_group="g", session_expiry_s=30).resolved_session_expiry_s == 30
