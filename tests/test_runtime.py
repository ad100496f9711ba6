"""The device runtime end to end with real parts: the shipped bundle, the synthetic camera, the
MCU simulator on a pty, the SQLite outbox, a real Mosquitto, and real signals."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device.cli import main
from device.contracts.records import validate_record
from tests.mosquitto import Mosquitto, mosquitto_binary


def _records(db: Path) -> list[dict]:
    """The outbox's records in seq order; [] while the device has made the file but not yet its
    table (a test polling a starting device can look in between)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        table = next((t for t in tables if "outbox" in t or "record" in t), None)
        if table is None:
            return []
        cols = [r[1] for r in con.execute(f"pragma table_info({table})")]
        col = next(c for c in cols if c in ("payload", "body", "record"))
        return [json.loads(r[0]) for r in con.execute(f"select {col} from {table} order by seq")]


def _wait(predicate, timeout_s: float, step_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def test_demo_diagnoses_on_simulated_button_presses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The README demo: synthetic camera, shipped bundle, the MCU simulator's button pressed
    # every 0.3 s; three diagnoses, each stored in the outbox, saved as an overlay and acked.
    out = tmp_path / "demo"
    assert main(["device", "run", "--demo", "--out", str(out), "--press-every", "0.3"]) == 0
    text = capsys.readouterr().out
    assert text.count("button press") == 3 and "diagnosis median ms:" in text and "segment" in text
    records = _records(out / "outbox.sqlite")
    assert [r["seq"] for r in records] == [1, 2, 3]
    for r in records:
        validate_record(r)
        assert r["frame"]["source"].startswith("synthetic://")  # asked-for synthetic frames say so
        assert r["quality"]["accepted"] and r["metrics"]["hair_count"]["value"] > 0
        assert r["metrics"]["median_thickness"]["unit"] == "um" and r["timings_ms"]["total"] > 0
        # measured on the fused mask (M^ and M_AP fused by the shipped pixel refiner), and it says so
        assert r["mask_stage"] == "fused" and r["timings_ms"]["pixel_refiner"] > 0
    assert len(list(out.glob("*_seq*.png"))) == 3


def test_sigterm_stops_cleanly_and_seq_continues_after_restart(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "device.cli", "--log-json", "device", "run", "--source", "synthetic://?fps=10"]
    cmd += ["--out", str(out)]
    cmd += ["--preview", "headless", "--diagnose-every", "0.3"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        db = out / "outbox.sqlite"
        assert _wait(lambda: db.exists() and len(_records(db)) >= 2, 60), proc.stderr.read() if proc.poll() else ""
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()  # reap it and close its pipes: nothing left for the next test
    assert proc.returncode == 0, stderr
    assert "stopped: SIGTERM" in stdout
    logs = [json.loads(line) for line in stderr.splitlines() if line.strip()]  # structured: one object a line
    assert {"ts", "level", "logger", "msg"} <= set(logs[0]) and any(
        e["logger"] == "device.sync.device_sync" for e in logs
    )
    before = _records(db)
    assert [r["seq"] for r in before] == list(range(1, len(before) + 1))
    # A second boot continues the sequence: same device, new boot_id, nothing overwritten.
    assert main(["device", "run", "--source", "synthetic://", "--out", str(out), "--preview", "headless",
                 "--diagnose-every", "0.1", "--max-diagnoses", "1"]) == 0  # fmt: skip
    after = _records(db)
    assert after[: len(before)] == before and after[-1]["seq"] == len(before) + 1
    assert after[-1]["boot_id"] != before[-1]["boot_id"]


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is installed by .ci/setup")
def test_mqtt_diagnose_command_produces_a_published_result(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    config = tmp_path / "scanner.toml"
    config.write_text(
        f"""
[camera]
source = "synthetic://?fps=10"
[run]
out = "scans"
preview = "headless"
publish = true
max_diagnoses = 1
max_seconds = 60
stdin_trigger = false
[mqtt]
port = {broker.port}
fleet = "clinic"
device_id = "scanner-7"
[outbox]
path = "state/outbox.sqlite"
"""
    )
    received: list[tuple[str, bytes]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: received.append((m.topic, bytes(m.payload)))
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe("scalpedge/v1/clinic/scanner-7/#", qos=1)
    watcher.loop_start()
    cmd = [sys.executable, "-m", "device.cli", "device", "run", "--config", str(config)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The device announces itself (retained status "online"), then we ask for a diagnosis.
        online = lambda: any(t.endswith("/status") and b'"online"' in p for t, p in received)  # noqa: E731
        assert _wait(online, 60), proc.stderr.read() if proc.poll() is not None else "no status"
        watcher.publish("scalpedge/v1/clinic/scanner-7/cmd", json.dumps({"cmd": "diagnose"}), qos=1)
        results = lambda: [json.loads(p) for t, p in received if t.endswith("/result")]  # noqa: E731
        assert _wait(lambda: len(results()) == 1, 60)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        watcher.loop_stop()
        watcher.disconnect()
        broker.stop()
    assert proc.returncode == 0, stderr
    record = results()[0]
    validate_record(record)
    assert record["device_id"] == "scanner-7" and record["seq"] == 1
    assert " mqtt " in stdout  # the results table names the trigger
    assert (tmp_path / "state" / "outbox.sqlite").exists() and list((tmp_path / "scans").glob("*.png"))


def test_a_full_outbox_is_reported_and_the_loop_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The outbox holds one undelivered record at most (no broker here, so nothing is delivered):
    # the second and third diagnoses are refused with a clear reason, the first stays stored,
    # the loop keeps running to its limit, and the exit code says something was not stored.
    config = tmp_path / "scanner.toml"
    config.write_text(
        """
[camera]
source = "synthetic://"
[run]
out = "scans"
preview = "headless"
diagnose_every_s = 0.05
max_diagnoses = 3
stdin_trigger = false
[outbox]
path = "outbox.sqlite"
max_pending = 1
"""
    )
    assert main(["device", "run", "--config", str(config)]) == 1
    text = capsys.readouterr().out
    assert text.count("not stored:") == 2 and "outbox" in text.split("not stored:")[1].lower()
    records = _records(tmp_path / "outbox.sqlite")
    assert [r["seq"] for r in records] == [1]
