"""Hostile payloads to the fleet consumer, through a real Mosquitto started here.

A publisher with the broker's blessing sends what no honest scanner would: NaN, 200k-deep
nesting, seq = 2^63, a 16 MiB field, a record with seq 10^15, an unrecoverable range of two
million seqs. Each is a rejection (a row in ``rejected``, one short log line, never a
traceback) or a bounded piece of state, and the consumer keeps serving honest traffic.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import sqlite3
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Mosquitto
from sync_device import fleet_config, sample_fields, sync_config, wait_for

from device.contracts.records import RecordFactory, new_boot_id, utc_timestamp
from fleet import ranges
from fleet.consumer import FleetConsumer
from fleet.gaps import plan_resend
from tests import test_mqtt_sync
from tests.test_mqtt_sync import Watcher

DEVICE = "scanner-h"
BASE = f"scalpedge/v1/test/{DEVICE}"
broker = test_mqtt_sync.broker  # the fixture: a Mosquitto of its own for each test


@pytest.fixture
def peer(broker: Mosquitto) -> Iterator[Watcher]:
    """The hostile publisher; it also sees every command the consumer sends to the device."""
    w = Watcher(broker.port, f"{BASE}/cmd")
    yield w
    w.close()


@pytest.fixture
def consumer(tmp_path: Path, broker: Mosquitto) -> Iterator[FleetConsumer]:
    c = FleetConsumer(sync_config(tmp_path, broker.port).mqtt, fleet_config(tmp_path))
    c.start()
    assert wait_for(lambda: c.connected, 10)
    time.sleep(0.2)  # SUBACK
    yield c
    c.stop()


_FACTORY = RecordFactory(DEVICE, "b1")


def _record(seq: int) -> dict[str, Any]:
    return _FACTORY.build(seq, **sample_fields(seq))


def _send(peer: Watcher, kind: str, payload: bytes) -> None:
    peer.client.publish(f"{BASE}/{kind}", payload, qos=1).wait_for_publish(20)


def _rejected(tmp_path: Path) -> list[tuple[str, int, int | None]]:
    """(reason, stored payload length, original payload size) of each ``rejected`` row."""
    db = sqlite3.connect(fleet_config(tmp_path).db)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(rejected)")}
        size = "payload_bytes" if "payload_bytes" in columns else "NULL"
        rows = db.execute(f"SELECT reason, length(payload), {size} FROM rejected ORDER BY rowid").fetchall()
    finally:
        db.close()
    return [(str(r), int(n), s) for r, n, s in rows]


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r.getMessage()[:200] for r in caplog.records if r.exc_info is not None]
    assert bad == [], bad


def _cmds(peer: Watcher) -> list[dict[str, Any]]:
    return [c for c in peer.json("/cmd") if c["cmd"] == "resend"]


def test_nan_and_infinity_are_rejected_not_stored(
    tmp_path: Path, peer: Watcher, consumer: FleetConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    # Python's json reads NaN, Infinity and -Infinity (and 1e999 as inf); none of them is JSON.
    # Each record is otherwise valid, and before this fix all four were stored as results.
    caplog.set_level(logging.INFO, logger="fleet")
    texts = []
    for seq, (field, value) in enumerate(
        [
            ('"value":180.0', '"value":NaN'),
            ('"total":64.0', '"total":Infinity'),
            ('"focus":210.0', '"focus":-Infinity'),
        ],
        start=1,
    ):
        text = json.dumps(_record(seq), separators=(",", ":"))
        texts.append(text.replace(field, value, 1))
        assert value in texts[-1]
    texts.append(json.dumps(_record(4), separators=(",", ":")).replace('"exposure":0.46', '"exposure":1e999'))
    for text in texts:
        _send(peer, "result", text.encode())
    assert wait_for(lambda: consumer.report()["rejected"] == 4, 10)
    assert DEVICE not in consumer.report()["devices"]  # nothing stored, no device track
    reasons = [r for r, _, _ in _rejected(tmp_path)]
    for needle, reason in zip(("NaN", "Infinity", "-Infinity", "1e999"), reasons, strict=True):
        assert f"{needle} is not valid JSON" in reason, reason
    _no_tracebacks(caplog)


def test_deep_nesting_and_oversized_payloads_are_rejections_not_tracebacks(
    tmp_path: Path, peer: Watcher, consumer: FleetConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    # Telemetry whose battery report nests 200,000 arrays deep (400 kB: too large), then one
    # nesting 100 objects deep (a few hundred bytes: too deep), then an honest record.
    caplog.set_level(logging.INFO, logger="fleet")
    telemetry = {
        "device_id": DEVICE,
        "boot_id": new_boot_id(),
        "fps": None,
        "temperature_c": None,
        "last_seq": 1,
        "delivered_upto": 1,
        "outbox": {
            "pending": 0,
            "inflight": 0,
            "delivered_retained": 1,
            "undelivered_bytes": 0,
            "oldest_undelivered_age_s": None,
        },
        "ts": utc_timestamp(),
    }
    deep_arrays = json.dumps({**telemetry, "battery": 0}).replace(
        '"battery": 0', '"battery": ' + "[" * 200_000 + "]" * 200_000
    )
    deep_objects = json.dumps({**telemetry, "battery": 0}).replace(
        '"battery": 0', '"battery": ' + '{"a":' * 100 + "1" + "}" * 100
    )
    _send(peer, "telemetry", deep_arrays.encode())
    _send(peer, "telemetry", deep_objects.encode())
    _send(peer, "result", json.dumps(_record(1)).encode())
    assert wait_for(lambda: consumer.report()["devices"].get(DEVICE, {}).get("received") == 1, 10)
    assert consumer.report()["rejected"] == 2
    (too_big, stored_big, size_big), (too_deep, _, _) = _rejected(tmp_path)
    assert too_big.startswith(f"payload of {len(deep_arrays)} bytes exceeds the limit of 262144")
    assert size_big == len(deep_arrays) and stored_big <= 1024  # kept truncated, its size noted
    assert too_deep == "payload nests deeper than 32 levels"
    _no_tracebacks(caplog)


def test_seq_beyond_2_53_is_a_rejection_not_a_traceback(
    tmp_path: Path, peer: Watcher, consumer: FleetConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    # seq = 2^63 does not fit SQLite's INTEGER; 2^53 is past the schema's bound (the largest
    # integer every JSON reader holds exactly). A status claiming last_seq = 2^63 likewise.
    caplog.set_level(logging.INFO, logger="fleet")
    for seq in (2**63, 2**53):
        _send(peer, "result", json.dumps(_record(1) | {"seq": seq}).encode())
    status = {
        "schema": "scalpedge.status/1",
        "state": "online",
        "device_id": DEVICE,
        "boot_id": new_boot_id(),
        "last_seq": 2**63,
        "delivered_upto": 0,
        "ts": utc_timestamp(),
    }
    _send(peer, "status", json.dumps(status).encode())
    assert wait_for(lambda: consumer.report()["rejected"] == 3, 10)
    reasons = [r for r, _, _ in _rejected(tmp_path)]
    assert reasons[0] == f"result: seq: {2**63} is greater than the maximum of {2**53 - 1}"
    assert reasons[1] == f"result: seq: {2**53} is greater than the maximum of {2**53 - 1}"
    assert reasons[2] == f"status: last_seq: {2**63} is greater than the maximum of {2**53 - 1}"
    assert DEVICE not in consumer.report()["devices"]
    _no_tracebacks(caplog)


def test_a_huge_bad_field_gives_one_short_log_line_and_one_truncated_row(
    tmp_path: Path, peer: Watcher, consumer: FleetConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    # A 16 MiB bundle_version (refused by size before parsing) and a 200 kB one (under the size
    # limit: refused by the schema). Each is one log line of at most a few hundred characters
    # and one rejected row holding at most 1 KiB of the payload, with its size.
    caplog.set_level(logging.INFO, logger="fleet")
    payloads = [json.dumps(_record(1) | {"bundle_version": "x" * n}).encode() for n in (16 * 2**20, 200_000)]
    for payload in payloads:
        _send(peer, "result", payload)
    assert wait_for(lambda: consumer.report()["rejected"] == 2, 30)
    rows = _rejected(tmp_path)
    assert [(n <= 1024, size) for _, n, size in rows] == [(True, len(p)) for p in payloads]
    assert "is too long" in rows[1][0] and len(rows[1][0]) <= 300
    lines = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(lines) == 2 and max(map(len, lines)) <= 400, [len(m) for m in lines]
    _no_tracebacks(caplog)


def test_a_seq_jump_is_flagged_once_and_never_requested(tmp_path: Path, peer: Watcher, consumer: FleetConsumer) -> None:
    # Seq 1, then seq 10^15: a gap of 10^15 - 2 seqs, far more than max_gap (100,000). The
    # consumer flags it as a seq_jump for the operator and asks for none of it, interval after
    # interval (resend_interval_s is 1 s here); a later one-seq gap above it is still asked for.
    _send(peer, "result", json.dumps(_record(1)).encode())
    _send(peer, "result", json.dumps(_record(10**15)).encode())
    assert wait_for(lambda: bool(consumer.report()["devices"].get(DEVICE, {}).get("seq_jumps")), 10)
    time.sleep(2.5)  # several gap checks and resend intervals
    assert _cmds(peer) == []
    dev = consumer.report()["devices"][DEVICE]
    assert dev["seq_jumps"] == [[2, 10**15 - 1]] and dev["resend_requests"] == 0
    _send(peer, "result", json.dumps(_record(10**15 + 2)).encode())
    assert wait_for(lambda: len(_cmds(peer)) >= 1, 10)
    assert [(c["from_seq"], c["to_seq"]) for c in _cmds(peer)][:1] == [(10**15 + 1, 10**15 + 1)]
    db = sqlite3.connect(fleet_config(tmp_path).db)
    rows = db.execute("SELECT kind, from_seq, to_seq FROM anomalies WHERE device_id = ?", (DEVICE,)).fetchall()
    db.close()
    assert rows == [("seq_jump", 2, 10**15 - 1)]  # stored once, not once per interval


def test_resend_requests_are_chunked_and_capped_per_interval(
    tmp_path: Path, peer: Watcher, consumer: FleetConsumer
) -> None:
    # Seq 1, then seq 30,000: a gap of 29,998 seqs (under max_gap) that nobody answers. Each
    # interval asks for at most 16 commands of at most 1,000 seqs, lowest seqs first.
    _send(peer, "result", json.dumps(_record(1)).encode())
    _send(peer, "result", json.dumps(_record(30_000)).encode())
    assert wait_for(lambda: len(_cmds(peer)) >= 1, 10)
    time.sleep(0.5)  # the rest of this interval's commands (the next interval is 1 s later)
    first = _cmds(peer)
    assert 1 <= len(first) <= 16
    assert [(c["from_seq"], c["to_seq"]) for c in first] == [(2 + 1000 * i, 1001 + 1000 * i) for i in range(len(first))]
    assert consumer.report()["devices"][DEVICE]["missing"] == [[2, 29_999]]


def test_an_unrecoverable_range_of_two_million_seqs_costs_o_of_ranges(
    tmp_path: Path, broker: Mosquitto, peer: Watcher
) -> None:
    # The device reports seqs 1..2,000,000 as pruned. The consumer, stepped by hand here, keeps
    # one range: memory and gap-check time stay flat (before: a 2M-element set, about 125 MB,
    # sorted and re-unioned on every gap check), and so does a restart on the same database.
    cfg = sync_config(tmp_path, broker.port).mqtt
    consumer = FleetConsumer(cfg, fleet_config(tmp_path))
    try:
        assert wait_for(lambda: consumer.connected, 10, step=consumer.step)
        for _ in range(10):
            consumer.step(0.02)  # SUBACK
        event = {
            "schema": "scalpedge.event/1",
            "device_id": DEVICE,
            "boot_id": new_boot_id(),
            "event": "resend_unavailable",
            "cmd": "resend",
            "ranges": [[1, 2_000_000]],
            "ts": utc_timestamp(),
        }
        tracemalloc.start()
        _send(peer, "event", json.dumps(event).encode())
        assert wait_for(lambda: DEVICE in consumer.tracks, 10, step=consumer.step)
        started = time.perf_counter()
        for _ in range(50):
            consumer.check_gaps()
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 4 * 2**20, peak  # bytes; a set of 2M ints is over 100 MB
        assert elapsed < 1.0, elapsed  # 50 checks; before: about 0.3 s each
        dev = consumer.report()["devices"][DEVICE]
        assert (dev["unrecoverable"], dev["contiguous_upto"], dev["missing"]) == ([[1, 2_000_000]], 2_000_000, [])
    finally:
        consumer.stop()
    tracemalloc.start()
    reopened = FleetConsumer(cfg, fleet_config(tmp_path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    try:
        assert peak < 4 * 2**20, peak
        assert reopened.report()["devices"][DEVICE]["unrecoverable"] == [[1, 2_000_000]]
    finally:
        reopened.stop()


def _seqs(ranges: list[tuple[int, int]]) -> set[int]:
    return {s for lo, hi in ranges for s in range(lo, hi + 1)}


def test_range_arithmetic_agrees_with_sets_of_seqs() -> None:
    # The consumer's seq sets are ranges; 2,000 random cases against plain Python sets.
    rng = random.Random(20)
    for _ in range(2000):
        held: list[tuple[int, int]] = []
        truth: set[int] = set()
        for _ in range(rng.randint(0, 8)):
            lo = rng.randint(1, 40)
            hi = lo + rng.randint(0, 6)
            assert ranges.add(held, lo, hi) == len(set(range(lo, hi + 1)) - truth)
            truth |= set(range(lo, hi + 1))
        assert _seqs(held) == truth and all(a[1] + 1 < b[0] for a, b in itertools.pairwise(held))
        other = [(a, a + rng.randint(0, 4)) for a in sorted(rng.sample(range(1, 40), 3))]
        assert _seqs(ranges.union(held, other)) == truth | _seqs(other)
        lo, hi = rng.randint(1, 50), rng.randint(0, 60)
        assert _seqs(ranges.gaps(held, lo, hi)) == set(range(lo, hi + 1)) - truth
        assert ranges.overlaps(held, lo, hi) == bool(set(range(lo, hi + 1)) & truth)


def test_resend_plan_chunks_caps_and_flags() -> None:
    # Requestable gaps 2..29,999 and 40,000..40,002 beside a flagged jump 50,000..10^15.
    plan = plan_resend([(2, 29_999), (40_000, 40_002), (50_000, 10**15)], [], 100_000, 1000, 16)
    assert plan.jumps == [(50_000, 10**15)] and plan.wanted == [(2, 29_999), (40_000, 40_002)]
    assert plan.commands == [(2 + 1000 * i, 1001 + 1000 * i) for i in range(16)]
    plan = plan_resend([(29_000, 29_999), (40_000, 40_002), (60_000, 60_001)], [(50_000, 60_000)], 100_000, 1000, 16)
    assert plan.commands == [(29_000, 29_999), (40_000, 40_002)] and plan.jumps == [(60_000, 60_001)]
