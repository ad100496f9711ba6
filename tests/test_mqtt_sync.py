"""Outbox + MQTT link + fleet consumer against a real Mosquitto started here on a free port.

Each test narrates its exchange. No mocks: the broker is killed with SIGKILL, device processes
are killed with SIGKILL, TLS uses a CA made in the test, the ACL is Mosquitto's own.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mosquitto import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from sync_device import fleet_config, sample_fields, sync_config, wait_for, write_toml

from device.contracts.config import MqttConfig
from device.sync.device_sync import DeviceSync
from device.sync.mqtt_link import MQTT_TRIGGER
from device.sync.outbox import OutboxFull
from fleet.consumer import FleetConsumer

REPO = Path(__file__).resolve().parents[1]
DEVICE_SCRIPT = REPO / "tests" / "sync_device.py"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@dataclass
class Stream:
    """A device (outbox + link) and a fleet consumer on one broker, both started."""

    mqtt: MqttConfig
    sync: DeviceSync
    consumer: FleetConsumer


@pytest.fixture
def stream(tmp_path: Path, broker: Mosquitto) -> Iterator[Stream]:
    """Started device and consumer; closed afterwards (the consumer the test holds by then)."""
    cfg = sync_config(tmp_path, broker.port)
    consumer = FleetConsumer(cfg.mqtt, fleet_config(tmp_path))
    s = Stream(cfg.mqtt, DeviceSync.from_config(cfg, bundle_version="b1"), consumer)
    s.sync.start()
    s.consumer.start()
    yield s
    s.sync.close()
    s.consumer.stop()


class Watcher:
    """A plain paho subscriber that records (topic, payload) of everything it receives."""

    def __init__(self, port: int, topics: str, *, username: str | None = None, password: str | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topics, qos=1)
        self.client.loop_start()
        if not subscribed.wait(5):
            self.close()
            raise RuntimeError(f"no SUBACK for {topics}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def json(self, suffix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _device(report: dict[str, Any], device: str = "scanner-a") -> dict[str, Any]:
    return dict(report["devices"].get(device, {"received": 0, "missing": [], "duplicates": 0, "conflicts": 0}))


def _complete(consumer: FleetConsumer, n: int, device: str = "scanner-a") -> bool:
    dev = _device(consumer.report(), device)
    return dev["received"] >= n and not dev["missing"]


def _assert_exactly(consumer: FleetConsumer, n: int, device: str = "scanner-a") -> dict[str, Any]:
    """Every seq 1..n stored once, no gap left, no seq under two msg_ids."""
    dev = _device(consumer.report(), device)
    assert (dev["received"], dev["max_seq"], dev["contiguous_upto"]) == (n, n, n), dev
    assert dev["missing"] == [] and dev["conflicts"] == 0 and dev["unrecoverable"] == []
    return dev


def test_offline_then_online_200_results_arrive_once(tmp_path: Path) -> None:
    # The device produces 200 results while the broker is down: the link keeps failing to
    # connect and every result waits in the outbox. Then the broker and the consumer start.
    broker = Mosquitto(tmp_path / "broker")
    cfg = sync_config(tmp_path, broker.port)
    sync = DeviceSync.from_config(cfg, bundle_version="b1")
    sync.start()
    consumer = FleetConsumer(cfg.mqtt, fleet_config(tmp_path))
    try:
        for i in range(200):
            sync.submit(**sample_fields(i))
        time.sleep(0.3)
        assert sync.link.connects == 0 and sync.outbox.stats().pending == 200
        broker.start()
        consumer.start()
        assert wait_for(lambda: _complete(consumer, 200), 30)
        assert wait_for(lambda: sync.outbox.stats().delivered == 200, 10)
        dev = _assert_exactly(consumer, 200)
        assert dev["duplicates"] == 0 and dev["deliveries"] == 200  # once each
        assert list(dev["boots"]) == [sync.boot_id]
    finally:
        sync.close()
        consumer.stop()
        broker.stop()


def test_consumer_restart_mid_stream_loses_nothing(tmp_path: Path, stream: Stream) -> None:
    # Consumer up, device streaming; the consumer stops after 50 results and comes back 50
    # results later with the same database (and client id: the broker kept its session).
    for i in range(150):
        if i == 50:
            assert wait_for(lambda c=stream.consumer: _complete(c, 50), 10)
            stream.consumer.stop()
        if i == 100:
            stream.consumer = FleetConsumer(stream.mqtt, fleet_config(tmp_path))
            stream.consumer.start()
        stream.sync.submit(**sample_fields(i))
        time.sleep(0.005)
    assert wait_for(lambda: _complete(stream.consumer, 150), 30)
    _assert_exactly(stream.consumer, 150)


def test_broker_sigkill_mid_stream_no_gap_after_resend(broker: Mosquitto, stream: Stream) -> None:
    # The broker is SIGKILLed twice while results flow (once for 0.5 s with the device still
    # producing). Whatever it had acknowledged but not forwarded is lost there; the consumer
    # sees the seq gap and asks the device to resend from its retention window.
    sync, consumer = stream.sync, stream.consumer
    assert wait_for(lambda: consumer.connected and sync.link.connects == 1, 10)
    for i in range(200):
        if i in (60, 140):
            broker.kill()
        if i in (80, 150):
            broker.start()
        sync.submit(**sample_fields(i))
        time.sleep(0.01)
    assert wait_for(lambda: _complete(consumer, 200), 40)
    _assert_exactly(consumer, 200)
    assert broker.kills == 2 and sync.link.connects >= 3 and consumer.connects >= 3


def _status(port: int, state: str, device: str = "scanner-a") -> dict[str, Any]:
    """The device's status once it reads ``state`` (the retained one, or the next published)."""
    w = Watcher(port, f"scalpedge/v1/test/{device}/status")
    try:
        assert wait_for(lambda: any(s["state"] == state for s in w.json("/status")), 10)
        return [s for s in w.json("/status") if s["state"] == state][-1]
    finally:
        w.close()


def test_device_process_sigkill_restart_seq_continues(tmp_path: Path, broker: Mosquitto) -> None:
    # The consumer here is the CLI (`scalpedge fleet listen`). A device process is SIGKILLed
    # after committing >= 40 results; its last will marks it offline. A new process (new
    # boot_id) resumes at the next seq, and the consumer ends up with every seq once.
    cfg = sync_config(tmp_path, broker.port)
    config = write_toml(cfg, tmp_path / "sync.toml", fleet_config(tmp_path))
    report_path = tmp_path / "report.json"
    listen = subprocess.Popen(
        [sys.executable, "-m", "device.cli", "fleet", "listen", "--config", str(config), "--report", str(report_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert listen.stderr is not None
    for line in listen.stderr:  # wait for "INFO fleet.consumer: fleet: connected ..."
        if "fleet: connected" in line:
            break
    args = [sys.executable, str(DEVICE_SCRIPT), str(config), "--count", "120", "--rate", "150"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    second = None
    try:
        assert first.stdout is not None
        committed = [int(line.split()[1]) for line, _ in zip(first.stdout, range(40), strict=False)]
        first.send_signal(signal.SIGKILL)
        first.wait()
        first.stdout.close()
        status = _status(broker.port, "offline")
        assert status["reason"] == "connection lost"  # the last will
        second = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert second.stdout is not None
        resumed = int(second.stdout.readline().split()[1])
        assert resumed > max(committed)
        online = _status(broker.port, "online")
        assert online["boot_id"] != status["boot_id"]
        for line in second.stdout:  # the device prints "seq N msg_id" per committed result
            if int(line.split()[1]) >= 120:
                break
        assert wait_for(lambda: _stored(tmp_path) == 120, 20)  # the consumer catches up, resends included
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
        assert _status(broker.port, "offline")["reason"] == "shutdown"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if second is not None and second.stdout is not None:
            second.stdout.close()
        listen.send_signal(signal.SIGTERM)
        _, err = listen.communicate(timeout=20)
    assert listen.returncode == 0, err
    dev = json.loads(report_path.read_text())["devices"]["scanner-a"]
    assert (dev["received"], dev["contiguous_upto"], dev["missing"], dev["conflicts"]) == (120, 120, [], 0)
    (b1, r1), (b2, r2) = sorted(dev["boots"].items(), key=lambda kv: kv[1]["first_seq"])
    assert r1["first_seq"] == 1 and r2["first_seq"] == r1["last_seq"] + 1 and r2["last_seq"] == 120
    assert b2 == online["boot_id"]


def _stored(tmp_path: Path) -> int:
    """Results in the consumer's database, read while the consumer process runs (WAL)."""
    db = sqlite3.connect(fleet_config(tmp_path).db)
    try:
        return int(db.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def test_commands_malformed_payloads_are_logged_and_the_device_keeps_running(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    # A fleet tool publishes garbage and then valid commands on the device's cmd topic; every
    # bad one is answered with a cmd_rejected event naming the reason, and is logged.
    cfg = sync_config(tmp_path, broker.port)
    triggers: queue.SimpleQueue[str] = queue.SimpleQueue()  # the runtime's trigger queue, made first
    configs: list[dict[str, Any]] = []

    def on_config(values: dict[str, Any]) -> None:
        if "exposure_ms" not in values:
            raise ValueError(f"unsupported config {sorted(values)}")
        configs.append(values)

    sync = DeviceSync.from_config(cfg, bundle_version="b1", triggers=triggers, on_config=on_config)
    watcher = Watcher(broker.port, "scalpedge/v1/test/scanner-a/event")
    caplog.set_level(logging.WARNING, logger="device.sync.mqtt_link")
    sync.start()
    try:
        for i in range(3):
            sync.submit(**sample_fields(i))
        assert wait_for(lambda: sync.outbox.stats().delivered == 3, 10)
        bad = [b"\xff\xfe", b"{not json", b"[1]", b'{"cmd": "reboot"}', b'{"cmd": "resend", "from_seq": -1}']
        cmd_topic = "scalpedge/v1/test/scanner-a/cmd"
        for payload in bad:
            watcher.client.publish(cmd_topic, payload, qos=1)
        assert wait_for(lambda: len(watcher.json("/event")) >= len(bad), 10)
        reasons = [e["reason"] for e in watcher.json("/event") if e["event"] == "cmd_rejected"]
        assert len(reasons) == 5
        for needle in ("not UTF-8", "not JSON", "object", "'reboot'", "from_seq"):  # each reason names its fault
            assert any(needle in r for r in reasons), needle
            assert any(needle in r.getMessage() for r in caplog.records), needle
        # The link is alive and answers valid commands.
        good = [
            {"cmd": "diagnose", "request_id": "r1"},
            {"cmd": "config", "set": {"telemetry_interval_s": 30, "exposure_ms": 8}},
            {"cmd": "config", "set": {"gain": 2}},
            {"cmd": "resend", "from_seq": 2, "request_id": "r2"},
        ]
        for body in good:
            watcher.client.publish(cmd_topic, json.dumps(body).encode(), qos=1)
        assert wait_for(lambda: len(watcher.json("/event")) >= len(bad) + len(good), 10)
        events = {e.get("request_id") or e["event"]: e for e in watcher.json("/event")[len(bad) :]}
        assert events["r1"]["event"] == "diagnose_accepted"
        assert triggers.get_nowait() == MQTT_TRIGGER and triggers.empty()  # one diagnosis requested
        assert configs == [{"exposure_ms": 8}] and sync.link.telemetry_interval_s == 30.0
        assert "unsupported config ['gain']" in events["cmd_rejected"]["reason"]
        assert events["r2"] == {**events["r2"], "event": "resend", "requeued": 2}
        assert wait_for(lambda: sync.outbox.stats().delivered == 3, 10)  # re-published and acked again
        assert sync.link._thread is not None and sync.link._thread.is_alive()
    finally:
        watcher.close()
        sync.close()


def test_full_outbox_refuses_with_alarm_event_and_keeps_stored_rows(tmp_path: Path) -> None:
    # Broker down; the outbox holds at most 5 undelivered results. The 6th is refused with a
    # clear error; the alarm event reaches the fleet once the broker is back, and the 5 stored
    # results are all delivered.
    broker = Mosquitto(tmp_path / "broker")
    cfg = sync_config(tmp_path, broker.port, outbox={"max_pending": 5})
    sync = DeviceSync.from_config(cfg, bundle_version="b1")
    try:
        for i in range(5):
            sync.submit(**sample_fields(i))
        with pytest.raises(OutboxFull, match=r"outbox full, record refused: 5 undelivered records"):
            sync.submit(**sample_fields(5))
        broker.start()
        watcher = Watcher(broker.port, "scalpedge/v1/test/scanner-a/#")
        # (subscribed, SUBACK received, before the link connects and sends its queued alarm)
        sync.start()
        try:
            assert wait_for(lambda: sync.outbox.stats().delivered == 5, 15)
            assert wait_for(lambda: any(e["event"] == "outbox_full" for e in watcher.json("/event")), 10)
            alarm = next(e for e in watcher.json("/event") if e["event"] == "outbox_full")
            assert alarm["severity"] == "error" and alarm["boot_id"] == sync.boot_id
            assert sync.submit(**sample_fields(6)).seq == 6  # room again
        finally:
            watcher.close()
    finally:
        sync.close()
        broker.stop()


def test_status_and_telemetry(tmp_path: Path, broker: Mosquitto) -> None:
    # Retained status "online" with the boot id on connect; telemetry carries fps and battery
    # from the caller, the hottest thermal zone, the outbox depth and the last seq.
    thermal = tmp_path / "thermal"
    for zone, milli in (("thermal_zone0", "45000"), ("thermal_zone1", "51500\n"), ("thermal_zone2", "junk")):
        (thermal / zone).mkdir(parents=True)
        (thermal / zone / "temp").write_text(milli)
    sync = DeviceSync.from_config(sync_config(tmp_path, broker.port), bundle_version="b1", thermal_root=thermal)
    sync.update_telemetry(fps=12.5, battery={"percent": 80, "charging": False})
    sync.submit(**sample_fields())
    sync.start()
    assert wait_for(lambda: sync.outbox.stats().delivered == 1, 10)  # connected, status published
    watcher = Watcher(broker.port, "scalpedge/v1/test/scanner-a/#")  # subscribes after: gets it retained
    try:
        assert wait_for(lambda: len(watcher.json("/telemetry")) >= 1, 10)
        tele = watcher.json("/telemetry")[-1]
        assert tele["fps"] == 12.5 and tele["battery"] == {"percent": 80, "charging": False}
        assert tele["temperature_c"] == 51.5 and tele["last_seq"] == 1 and tele["boot_id"] == sync.boot_id
        assert set(tele["outbox"]) == {
            "pending",
            "inflight",
            "delivered_retained",
            "undelivered_bytes",
            "oldest_undelivered_age_s",
        }
        status = [(t, p, r) for t, p, r in watcher.messages if t.endswith("/status")]
        assert status and status[0][2] is True  # retained
        assert json.loads(status[0][1]) | {"ts": None} == {
            "schema": "scalpedge.status/1",
            "state": "online",
            "device_id": "scanner-a",
            "boot_id": sync.boot_id,
            "last_seq": 1,
            "delivered_upto": 0,
            "ts": None,
        }
    finally:
        watcher.close()
        sync.close()


def test_small_soak() -> None:
    """The fault soak of benchmarks/soak_sync.py, small: 150 results, 3 broker kills, 1 device kill."""
    spec = importlib.util.spec_from_file_location("soak_sync", REPO / "benchmarks" / "soak_sync.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    report = soak.run_soak(count=150, broker_kills=3, device_kills=1, rate=100.0, seed=1, timeout_s=60)
    assert report["converged"] and report["lost"] == 0 and report["seq_conflicts"] == 0
    assert report["seq_gaps_at_end"] == 0 and report["received"] == 150
    assert report["broker_kills"] == 3 and report["device_kills"] == 1 and report["device_boots"] == 2
