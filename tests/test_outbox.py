"""The SQLite outbox: seq allocation, delivery states, retention, limits, and surviving SIGKILL."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sync_device import sample_fields

from device.contracts.records import RecordError, RecordFactory
from device.sync.config import OutboxConfig
from device.sync.outbox import Outbox, OutboxError, OutboxFull

REPO = Path(__file__).resolve().parents[1]


def _add(box: Outbox, factory: RecordFactory, n: int = 1) -> list[int]:
    return [box.add(lambda seq: factory.build(seq, **sample_fields())).seq for _ in range(n)]


@pytest.fixture
def factory() -> RecordFactory:
    return RecordFactory("scanner-a", "bundle-1")


def test_seq_is_allocated_and_survives_reopen(tmp_path: Path, factory: RecordFactory) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, device_id="scanner-a") as box:
        assert _add(box, factory, 3) == [1, 2, 3]
        assert box.db_mode() == ("wal", 2)  # journal_mode, synchronous=FULL
    with Outbox(path, device_id="scanner-a") as box:
        assert _add(box, factory, 2) == [4, 5]
        payload = json.loads(box.claim(1)[0].payload)
        assert payload["seq"] == 1 and payload["device_id"] == "scanner-a"


def test_outbox_refuses_another_devices_file(tmp_path: Path) -> None:
    Outbox(tmp_path / "o.sqlite", device_id="scanner-a").close()
    with pytest.raises(OutboxError, match="belongs to device 'scanner-a', not 'scanner-b'"):
        Outbox(tmp_path / "o.sqlite", device_id="scanner-b")


def test_invalid_record_consumes_no_seq(tmp_path: Path, factory: RecordFactory) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        bad = dict(sample_fields(), quality={"accepted": "yes"})
        with pytest.raises(RecordError, match="quality/accepted"):
            box.add(lambda seq: factory.build(seq, **bad))
        assert _add(box, factory) == [1]
        with pytest.raises(ValueError, match="carries seq 5"):
            box.add(lambda seq: factory.build(5, **sample_fields()))
        assert box.stats().last_seq == 1


def test_states_claim_deliver_release(tmp_path: Path, factory: RecordFactory) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        _add(box, factory, 5)
        assert [r.seq for r in box.claim(3)] == [1, 2, 3]
        assert [r.seq for r in box.claim(10)] == [4, 5]
        assert box.mark_delivered([1, 2]) == 2
        assert box.mark_delivered([1]) == 0  # already delivered: a stale PUBACK changes nothing
        assert box.release([3]) == 1
        st = box.stats()
        assert (st.pending, st.inflight, st.delivered) == (1, 2, 2)
    with Outbox(path) as box:  # a crash left 4 and 5 in flight: they are pending again
        st = box.stats()
        assert (st.pending, st.inflight, st.delivered) == (3, 0, 2)
        assert [r.seq for r in box.claim(10)] == [3, 4, 5]


def test_requeue_and_retention(tmp_path: Path, factory: RecordFactory) -> None:
    now = [1000.0]
    cfg = OutboxConfig(path=str(tmp_path / "o.sqlite"), retention_s=100.0, retention_rows=5)
    with Outbox(cfg.path, cfg, clock=lambda: now[0]) as box:
        _add(box, factory, 10)
        box.mark_delivered([r.seq for r in box.claim(8)])
        # resend 3..9: delivered 3..8 become pending; 9 was still pending; nothing was pruned yet
        res = box.requeue(3, 9)
        assert (res.requeued, res.unavailable) == (6, [])
        assert box.state_of(3) == "pending" and box.state_of(2) == "delivered"
        box.mark_delivered([r.seq for r in box.claim(10)])  # 3..10 delivered (at t=1000)
        assert box.prune() == 5  # count limit keeps the newest 5 delivered rows: 6..10
        assert [box.state_of(s) for s in (5, 6)] == [None, "delivered"]
        assert box.requeue(1, 20).unavailable == [(1, 5)]  # clipped to the last seq, 10
        box.mark_delivered([r.seq for r in box.claim(10)])
        now[0] += 101.0
        assert box.prune() == 5  # age limit
        assert box.stats().delivered == 0 and box.stats().last_seq == 10
        assert _add(box, factory) == [11]  # pruning never lets a seq be reused


def test_full_outbox_refuses_with_alarm_and_keeps_rows(tmp_path: Path, factory: RecordFactory) -> None:
    alarms: list[dict[str, Any]] = []
    cfg = OutboxConfig(path=str(tmp_path / "o.sqlite"), max_pending=5)
    with Outbox(cfg.path, cfg, on_alarm=alarms.append) as box:
        _add(box, factory, 5)
        assert [a["event"] for a in alarms] == ["outbox_high"]  # 4 of 5 crossed the 80 % mark
        with pytest.raises(OutboxFull, match=r"5 undelivered records \(max_pending 5\).*stored records are kept"):
            _add(box, factory)
        assert alarms[-1]["event"] == "outbox_full" and alarms[-1]["severity"] == "error"
        with pytest.raises(OutboxFull):
            _add(box, factory)
        assert [a["event"] for a in alarms].count("outbox_full") == 1  # repeats are rate limited
        st = box.stats()
        assert (st.pending, st.last_seq) == (5, 5)
        box.mark_delivered([r.seq for r in box.claim(2)])
        assert _add(box, factory, 2) == [6, 7]  # room again once records are delivered


def test_byte_limit(tmp_path: Path, factory: RecordFactory) -> None:
    cfg = OutboxConfig(path=str(tmp_path / "o.sqlite"), max_pending_bytes=4000)
    with Outbox(cfg.path, cfg) as box:
        with pytest.raises(OutboxFull, match="max_pending_bytes 4000"):
            _add(box, factory, 10)
        assert 1 <= box.stats().pending < 10
        assert box.stats().undelivered_bytes <= 4000


def test_file_cap_evicts_delivered_first_then_oldest_undelivered(tmp_path: Path, factory: RecordFactory) -> None:
    """``max_db_bytes`` caps the file (SQLITE_FULL, the same error as a full disk): delivered rows
    are evicted first, then the oldest undelivered, each evicted seq reported in ``seqs_lost``."""
    alarms: list[dict[str, Any]] = []
    cfg = OutboxConfig(path=str(tmp_path / "o.sqlite"), max_db_bytes=65536, retention_rows=10_000)
    with Outbox(cfg.path, cfg, on_alarm=alarms.append) as box:
        stored = _add(box, factory, 10)
        delivered = [r.seq for r in box.claim(5)]
        box.mark_delivered(delivered)
        while "seqs_lost" not in [a["event"] for a in alarms]:
            stored += _add(box, factory)
            assert len(stored) < 2000
        kinds = [a["event"] for a in alarms]
        assert kinds.index("outbox_full") < kinds.index("outbox_retention_evicted") < kinds.index("seqs_lost")
        assert len(stored) > 20 and all(box.state_of(s) is None for s in delivered)  # all delivered rows went first
        lost = [s for a in alarms if a["event"] == "seqs_lost" for lo, hi in a["ranges"] for s in range(lo, hi + 1)]
        assert lost[0] == delivered[-1] + 1 and all(box.state_of(s) is None for s in lost)
        st = box.stats()
        assert st.pending == len(stored) - len(delivered) - len(lost)  # every other record kept
        assert st.last_seq == len(stored) == stored[-1]
    db = sqlite3.connect(cfg.path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()


WRITER = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [sys.argv[2], sys.argv[3]]
    from device.sync.outbox import Outbox
    from device.contracts.records import RecordFactory
    from sync_device import sample_fields
    box = Outbox(sys.argv[1], device_id="scanner-a")
    factory = RecordFactory("scanner-a", "bundle-1")
    while True:
        row = box.add(lambda seq: factory.build(seq, **sample_fields()))
        if row.seq % 3 == 0:
            box.mark_delivered([r.seq for r in box.claim(2)])
        print(row.seq, row.msg_id, flush=True)
    """
)


def test_outbox_survives_sigkill(tmp_path: Path, factory: RecordFactory) -> None:
    """A writer process is SIGKILLed mid-stream: every record it reported stored is there."""
    path = tmp_path / "o.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(REPO), str(REPO / "tests")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged: dict[int, str] = {}
    for line in proc.stdout:
        seq, msg_id = line.split()
        acknowledged[int(seq)] = msg_id
        if len(acknowledged) >= 150:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = dict(db.execute("SELECT seq, msg_id FROM outbox"))
    db.close()
    assert all(rows.get(seq) == msg_id for seq, msg_id in acknowledged.items())
    with Outbox(path, device_id="scanner-a") as box:
        last = box.stats().last_seq
        assert last >= max(acknowledged) and box.stats().inflight == 0
        assert _add(box, factory) == [last + 1]
