"""Storage faults: a damaged outbox file is quarantined and replaced, a torn WAL never makes a seq
go backwards, and the fleet records what was lost as unrecoverable.

The four faults are made for real on the files a device leaves behind: the database truncated
mid-page, its header overwritten with garbage, one page overwritten, and (for a SIGKILL's
leftovers: the database and WAL as they were while the writer was alive) the WAL cut mid-frame.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Mosquitto
from sync_device import fleet_config, sample_fields, sync_config, wait_for

from device.contracts.records import RecordFactory
from device.contracts.validation import validate
from device.sync.device_sync import DeviceSync
from device.sync.outbox import Outbox
from device.sync.seq_mark import SeqMark, mark_path
from fleet.consumer import FleetConsumer

STORED = 8  # records committed before the fault
PAGE = 4096
WAL_FRAME = 24 + PAGE  # frame header + page
FAULTS = ["truncated", "garbage_header", "overwritten_page", "torn_wal"]


def _damage(db: Path, fault: str) -> None:
    """Break ``db`` (or its WAL) the way the fault says."""
    size = db.stat().st_size
    if fault == "truncated":
        os.truncate(db, (size // PAGE // 2) * PAGE + PAGE // 2)
    elif fault == "garbage_header":
        with db.open("r+b") as f:
            f.write(bytes(range(7, 107)))
    elif fault == "overwritten_page":
        with db.open("r+b") as f:
            f.seek(PAGE * (size // PAGE // 2))
            f.write(bytes((i * 37 + 11) % 256 for i in range(PAGE)))
    else:
        wal = Path(f"{db}-wal")
        frames = (wal.stat().st_size - 32) // WAL_FRAME
        assert frames > 6, "the records must still be in the WAL"
        os.truncate(wal, 32 + (frames // 3) * WAL_FRAME + WAL_FRAME // 2)


def _leave_outbox(cfg_path: Path, fault: str, image: Path) -> Path:
    """Store STORED records (nobody is connected) and leave the outbox damaged at ``image``.

    torn_wal copies the files while the writer is alive, as a SIGKILL leaves them (WAL not
    checkpointed); the other faults damage the file a clean shutdown left.
    """
    factory = RecordFactory("scanner-a", "b1")
    box = Outbox(cfg_path, device_id="scanner-a")
    reader = sqlite3.connect(cfg_path)  # an open read keeps every commit in the WAL (no checkpoint)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM outbox").fetchall()
    for i in range(STORED):
        box.add(lambda seq, i=i: factory.build(seq, **sample_fields(i)))
    image.mkdir()
    names = [cfg_path.name, f"{cfg_path.name}-wal", mark_path(cfg_path).name]
    if fault == "torn_wal":
        for name in names:
            if (cfg_path.parent / name).exists():
                shutil.copy(cfg_path.parent / name, image / name)
    reader.close()
    box.close()
    if fault != "torn_wal":
        for name in names:
            if (cfg_path.parent / name).exists():
                shutil.copy(cfg_path.parent / name, image / name)
    _damage(image / cfg_path.name, fault)
    return image / cfg_path.name


def _event_doc(alarm: dict[str, Any]) -> dict[str, Any]:
    return {"schema": "scalpedge.event/1", "device_id": "scanner-a", "boot_id": str(uuid.uuid4()), **alarm}


@pytest.mark.parametrize("fault", ["truncated", "garbage_header", "overwritten_page"])
def test_damaged_file_is_quarantined_and_replaced(tmp_path: Path, fault: str) -> None:
    # Before: Outbox() raised OutboxError at every start (or ran on a broken file). Now the file
    # and its WAL are kept aside under a timestamped name, a fresh one continues the seqs, and
    # two events say what happened and which seqs the device no longer has.
    db = _leave_outbox(tmp_path / "o.sqlite", fault, tmp_path / "image")
    damaged = db.read_bytes()
    alarms: list[dict[str, Any]] = []
    factory = RecordFactory("scanner-a", "b1")
    with Outbox(db, device_id="scanner-a", on_alarm=alarms.append) as box:
        assert box.add(lambda seq: factory.build(seq, **sample_fields())).seq == STORED + 1
        assert box.stats().last_seq == STORED + 1 and box.stats().pending == 1
        assert box.requeue(1, STORED).unavailable == [(1, STORED)]
    kept = sorted(p.name for p in db.parent.iterdir() if ".quarantined-" in p.name)
    assert kept and kept[0].startswith("o.sqlite.quarantined-") and kept[0].endswith("Z")
    assert (db.parent / kept[0]).read_bytes() == damaged  # kept for forensics, untouched
    events = {a["event"]: a for a in alarms}
    assert events["outbox_quarantined"]["severity"] == "error" and kept[0] in events["outbox_quarantined"]["message"]
    assert events["seqs_lost"]["ranges"] == [[1, STORED]] and events["seqs_lost"]["reason"] == "quarantined"
    for alarm in alarms:
        validate("event", _event_doc(alarm))


def test_torn_wal_never_reuses_a_seq(tmp_path: Path) -> None:
    # Before: the lost commits' seqs were handed out again under new msg_ids. Now the next seq
    # follows the durable mark (``o.sqlite.seq``) and the seqs the WAL lost are reported.
    db = _leave_outbox(tmp_path / "o.sqlite", "torn_wal", tmp_path / "image")
    alarms: list[dict[str, Any]] = []
    factory = RecordFactory("scanner-a", "b1")
    with Outbox(db, device_id="scanner-a", on_alarm=alarms.append) as box:
        kept = [s for s in range(1, STORED + 1) if box.state_of(s) is not None]
        assert kept == list(range(1, len(kept) + 1)) and len(kept) < STORED  # the WAL lost some
        assert box.add(lambda seq: factory.build(seq, **sample_fields())).seq == STORED + 1
    lost = next(a for a in alarms if a["event"] == "seqs_lost")
    assert lost["ranges"] == [[len(kept) + 1, STORED]] and lost["reason"] == "lost_from_database"
    validate("event", _event_doc(lost))
    assert not any(p.name.startswith("o.sqlite.quarantined") for p in db.parent.iterdir())


def test_seq_mark_survives_a_torn_slot(tmp_path: Path) -> None:
    # The mark's two slots: a write torn half-way spoils one; the other still holds the value
    # before it, and a fully spoilt file is reported instead of read as 0 silently.
    path = tmp_path / "o.sqlite.seq"
    mark = SeqMark(path)
    for seq in (1, 2, 3):
        mark.advance(seq)
    mark.close()
    data = bytearray(path.read_bytes())
    data[0:8] = b"\xff" * 8  # slots alternate: 1 -> slot 0, 2 -> slot 1, 3 -> slot 0
    path.write_bytes(bytes(data))
    again = SeqMark(path)
    assert again.value == 2 and not again.unreadable
    again.close()
    path.write_bytes(b"\x01" * 64)
    spoilt = SeqMark(path)
    assert spoilt.unreadable and spoilt.value == 0
    spoilt.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_device_recovers_and_fleet_records_the_loss(tmp_path: Path, fault: str) -> None:
    # The device stored 8 results while offline, then its outbox was damaged. It starts (real
    # DeviceSync), stores and delivers new results with seqs after 8 over a real Mosquitto; the
    # fleet consumer gets every record still on the device, asks for the rest and records it as
    # unrecoverable; no seq arrives under two msg_ids.
    broker = Mosquitto(tmp_path / "broker")
    cfg = sync_config(tmp_path, broker.port)
    db = _leave_outbox(Path(cfg.outbox.path), fault, tmp_path / "image")
    cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, path=str(db)))
    broker.start()
    consumer = FleetConsumer(cfg.mqtt, fleet_config(tmp_path))
    consumer.start()
    sync = DeviceSync.from_config(cfg, bundle_version="b1")
    try:
        survived = [s for s in range(1, STORED + 1) if sync.outbox.state_of(s) is not None]
        sync.start()
        new = [sync.submit(**sample_fields(i)).seq for i in range(3)]
        assert new == [STORED + 1, STORED + 2, STORED + 3]

        def settled() -> bool:
            dev = consumer.report()["devices"].get("scanner-a", {})
            return bool(dev) and dev["received"] == len(survived) + 3 and not dev["missing"]

        assert wait_for(settled, 20), consumer.report()
        dev = consumer.report()["devices"]["scanner-a"]
        lost = [[len(survived) + 1, STORED]] if len(survived) < STORED else []
        assert dev["unrecoverable"] == lost and dev["conflicts"] == 0
        assert (dev["max_seq"], dev["contiguous_upto"]) == (STORED + 3, STORED + 3)
        assert wait_for(lambda: sync.outbox.stats().delivered == len(survived) + 3, 10)
    finally:
        sync.close()
        consumer.stop()
        broker.stop()


def test_device_run_exits_5_when_the_outbox_cannot_be_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Another device's outbox is not damage (nothing is quarantined): ``device run`` stops with
    # exit code 5 and says why, instead of an OutboxError traceback and exit 1.
    from device.cli import main

    Outbox(tmp_path / "outbox.sqlite", device_id="someone-else").close()
    assert main(["device", "run", "--demo", "--out", str(tmp_path)]) == 5
    err = capsys.readouterr().err
    assert "outbox unusable" in err and "someone-else" in err
    assert not any(".quarantined-" in p.name for p in tmp_path.iterdir())


def test_a_seq_reserved_but_never_committed_is_handed_out_again(tmp_path: Path) -> None:
    """A device killed after reserving seq N (durable mark) and before the commit returned stored
    and published nothing under N: the next start gives N to the next record and reports no loss
    (reporting it would show the fleet a gap that never held a record)."""
    db = tmp_path / "o.sqlite"
    factory = RecordFactory("scanner-a", "b1")
    with Outbox(db, device_id="scanner-a") as box:
        for _ in range(3):
            box.add(lambda seq: factory.build(seq, **sample_fields()))
    mark = SeqMark(mark_path(db))
    assert (mark.value, mark.committed) == (3, 3)
    mark.advance(4)  # what the killed process did before its commit of seq 4
    mark.close()
    alarms: list[dict[str, Any]] = []
    with Outbox(db, device_id="scanner-a", on_alarm=alarms.append) as box:
        assert box.add(lambda seq: factory.build(seq, **sample_fields())).seq == 4
    assert not [a for a in alarms if a["event"] == "seqs_lost"]
