"""Client sessions: the ``scalpedge session`` commands and their file, a separate ``device run``
process tagging each diagnosis with the site chosen meanwhile, and a session's records (version
2) synced to the fleet through a real Mosquitto beside an older scanner's version 1 record."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mosquitto import Mosquitto
from sync_device import fleet_config, sample_fields, sync_config, wait_for
from test_records import V1_PAYLOAD

from device.app.sessions import current_session_tags
from device.app.visits import load_records
from device.cli import main
from device.contracts.records import validate_record
from device.sync.device_sync import DeviceSync
from fleet.consumer import FleetConsumer
from fleet.store import FleetStore
from tests import test_mqtt_sync
from tests.test_mqtt_sync import Watcher

broker = test_mqtt_sync.broker  # the fixture: a Mosquitto of its own for each test


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$SCALPEDGE_HOME of this test (the session file lives there); child processes inherit it."""
    path = tmp_path / "home"
    monkeypatch.setenv("SCALPEDGE_HOME", str(path))
    return path


def _session(home: Path) -> dict[str, object]:
    return dict(json.loads((home / "session.json").read_text()))


@pytest.mark.parametrize("bad", ["John Smith", "jane@example.org", "", "-c42", "c" * 65, "Zoë"])
def test_a_client_id_that_is_not_a_pseudonymous_code_is_refused(
    bad: str, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["session", "start", f"--client={bad}"]) == 2
    err = capsys.readouterr().err
    assert "is not a pseudonymous code" in err and "never a name or an e-mail address" in err
    assert not (home / "session.json").exists()


def test_the_help_says_what_a_client_id_may_be(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["session", "start", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "pseudonymous code" in help_text and "never a name or an e-mail address" in help_text


def test_start_site_show_end(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Nothing active: show says so, a site cannot be set and nothing can be ended.
    assert main(["session", "show", "--json"]) == 0 and capsys.readouterr().out.strip() == "null"
    assert main(["session", "site", "top"]) == 2
    assert "no active session" in capsys.readouterr().err
    # A visit of c-0042, started at the top of the head.
    assert main(["session", "start", "--client", "c-0042", "--visit-date", "2024-06-01", "--site", "top"]) == 0
    started = _session(home)
    assert {k: started[k] for k in ("schema", "client_id", "visit_date", "site")} == {
        "schema": "scalpedge.session/1",
        "client_id": "c-0042",
        "visit_date": "2024-06-01",
        "site": "top",
    }
    session_id = str(started["session_id"])
    assert session_id.startswith("20240601-") and session_id in capsys.readouterr().out
    # One session at a time: a second start is refused and the first is kept.
    assert main(["session", "start", "--client", "c-0043"]) == 2
    assert f"session {session_id} of client c-0042 is still active" in capsys.readouterr().err
    assert main(["session", "site", "crown"]) == 0 and _session(home)["site"] == "crown"
    assert current_session_tags() == {
        "client_id": "c-0042",
        "session_id": session_id,
        "visit_date": "2024-06-01",
        "site": "crown",
    }
    capsys.readouterr()
    assert main(["session", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == _session(home)
    with pytest.raises(SystemExit) as bad_site:  # argparse: not one of the six sites
        main(["session", "site", "nape"])
    assert bad_site.value.code == 2 and "invalid choice: 'nape'" in capsys.readouterr().err
    assert main(["session", "end"]) == 0
    assert f"scalpedge report --session {session_id}" in capsys.readouterr().out
    assert not (home / "session.json").exists() and current_session_tags() == {}
    assert main(["session", "end"]) == 2


@pytest.mark.parametrize("day", ["2024-13-01", "01/06/2024", "2024-6-1"])
def test_a_visit_date_must_be_a_date(day: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["session", "start", "--client", "c-1", "--visit-date", day]) == 2
    assert f"visit date {day!r} is not a date YYYY-MM-DD" in capsys.readouterr().err


def test_a_damaged_session_file_is_reported_and_diagnoses_stay_untagged(
    home: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    home.mkdir()
    (home / "session.json").write_text('{"schema": "scalpedge.session/1", "client_id": "c-1"')  # cut short
    with caplog.at_level(logging.ERROR, logger="device.app.sessions"):
        assert current_session_tags() == {}  # the diagnosis is still stored, untagged
    assert "diagnosis not tagged with a session" in caplog.text and "is damaged" in caplog.text
    assert main(["session", "show"]) == 2 and "is damaged" in capsys.readouterr().err
    assert main(["session", "start", "--client", "c-1"]) == 0  # a new session replaces it
    assert _session(home)["client_id"] == "c-1"


def _labels(records: list[dict[str, object]]) -> list[object]:
    """The site of each record in seq order, consecutive repeats collapsed (None: no session)."""
    out: list[object] = []
    for r in records:
        label = r.get("site") if r.get("session_id") else None
        if not out or out[-1] != label:
            out.append(label)
    return out


def test_a_separate_device_run_tags_each_diagnosis_with_the_site_set_meanwhile(tmp_path: Path, home: Path) -> None:
    # The operator starts a session at the top of the head; the scanner runtime runs in its own
    # process (diagnosing every 0.3 s). Once it has stored a diagnosis at the top, the operator
    # moves to the left side, then ends the session: the records, in seq order, are tagged top,
    # then left, then not at all, never out of turn.
    assert main(["session", "start", "--client", "c-0042", "--site", "top"]) == 0
    session_id = _session(home)["session_id"]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "device.cli", "device", "run", "--source", "synthetic://", "--out", str(out)]
    cmd += ["--preview", "headless", "--diagnose-every", "0.3"]
    log_file = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file, env=os.environ)
    db = out / "outbox.sqlite"

    def stored(label: object) -> bool:
        """Whether the last record stored so far is tagged ``label``."""
        try:
            return _labels(load_records(db))[-1:] == [label]
        except (FileNotFoundError, ValueError):  # the runtime is still creating its outbox
            return False

    try:
        assert wait_for(lambda: stored("top"), 90), (tmp_path / "stderr.txt").read_text()[-2000:]
        assert main(["session", "site", "left"]) == 0
        assert wait_for(lambda: stored("left"), 60), (tmp_path / "stderr.txt").read_text()[-2000:]
        assert main(["session", "end"]) == 0
        assert wait_for(lambda: stored(None), 60), (tmp_path / "stderr.txt").read_text()[-2000:]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log_file.close()
    records = load_records(db)
    assert _labels(records) == ["top", "left", None]
    for r in records:
        validate_record(r)
        assert r["schema"] == "scalpedge.result/2" and "name" not in r
        if r.get("session_id"):
            assert (r["client_id"], r["session_id"]) == ("c-0042", session_id)


def test_the_fleet_stores_both_record_versions_with_the_session_tags(tmp_path: Path, broker: Mosquitto) -> None:
    # A scanner in a session publishes a version 2 record; an older scanner still publishes
    # version 1. The consumer stores both (nothing rejected), the session tags in their columns.
    cfg = sync_config(tmp_path, broker.port)
    consumer = FleetConsumer(cfg.mqtt, fleet_config(tmp_path))
    consumer.start()
    sync = DeviceSync.from_config(cfg, bundle_version="b1")
    old_scanner = Watcher(broker.port, "scalpedge/v1/test/scanner-0001/cmd")
    tags = {"client_id": "c-0042", "session_id": "20240601-3fa2c1", "site": "crown", "visit_date": "2024-06-01"}
    try:
        assert wait_for(lambda: consumer.connected, 10)
        time.sleep(0.2)  # SUBACK
        sync.submit(session=tags, **sample_fields())
        sync.start()
        old_scanner.client.publish("scalpedge/v1/test/scanner-0001/result", V1_PAYLOAD, qos=1).wait_for_publish(20)
        assert wait_for(lambda: sum(d["received"] for d in consumer.report()["devices"].values()) == 2, 20)
        assert consumer.report()["rejected"] == 0
    finally:
        old_scanner.close()
        sync.close()
        consumer.stop()
    db = sqlite3.connect(fleet_config(tmp_path).db)
    try:
        rows = db.execute(
            "SELECT device_id, schema, client_id, session_id, site, visit_date FROM results ORDER BY device_id"
        ).fetchall()
    finally:
        db.close()
    assert rows == [
        ("scanner-0001", "scalpedge.result/1", None, None, None, None),
        ("scanner-a", "scalpedge.result/2", "c-0042", "20240601-3fa2c1", "crown", "2024-06-01"),
    ]


def test_a_fleet_database_made_before_version_2_gains_the_tag_columns(tmp_path: Path) -> None:
    # The results table as the first release created it (no version, no tags) with one record.
    path = tmp_path / "fleet.sqlite"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE results (msg_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, "
        "boot_id TEXT NOT NULL, captured_at TEXT NOT NULL, received_at REAL NOT NULL, payload TEXT NOT NULL, "
        "UNIQUE (device_id, seq))"
    )
    db.execute("INSERT INTO results VALUES ('m1', 'scanner-0001', 1, 'b', 't', 0, '{}')")
    db.commit()
    db.close()
    store = FleetStore(str(path))
    try:
        tags = {"client_id": "c-1", "session_id": "s-1", "site": "top"}
        assert store.store_result("scanner-a", 1, "m2", "b", "t", "{}", "scalpedge.result/2", tags) == ("new", None)
    finally:
        store.close()
    db = sqlite3.connect(path)
    rows = db.execute("SELECT msg_id, schema, client_id, site FROM results ORDER BY msg_id").fetchall()
    db.close()
    assert rows == [("m1", None, None, None), ("m2", "scalpedge.result/2", "c-1", "top")]
