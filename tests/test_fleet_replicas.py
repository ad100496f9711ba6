"""Consumer replicas sharing the load through MQTT 5 shared subscriptions, with a real Mosquitto
and a real PostgreSQL started here, and real scanners (outbox + MQTT link).

Before, one consumer process wrote one SQLite file: a second consumer would have received every
message again, and nothing told it that another one was storing them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mosquitto import Mosquitto
from postgres import Postgres
from sync_device import sample_fields, sync_config, wait_for
from test_mqtt_sync import Watcher

from device.contracts.config import MqttConfig
from device.contracts.records import new_boot_id
from device.sync.device_sync import DeviceSync
from fleet.config import FleetConfig
from fleet.consumer import FleetConsumer
from fleet.store import Store, open_store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with Postgres() as pg:
        yield pg


def _replica(tmp_path: Path, i: int, port: int, store: str) -> subprocess.Popen[bytes]:
    """``python -m fleet listen`` as replica ``i`` of share group "g", fast gap checks."""
    config = tmp_path / f"replica-{i}.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nfleet = "test"\nreconnect_min_s = 0.05\n'
        f'[fleet]\nstore = "{store}"\nclient_id = "replica-{i}"\nshare_group = "g"\n'
        "gap_grace_s = 0.5\nresend_interval_s = 1.0\n"
    )
    with open(tmp_path / f"replica-{i}.log", "wb") as log:  # the child holds its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "fleet", "listen", "--config", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _rows(store: Store, devices: list[str]) -> list[tuple[str, int, str, str | None, float]]:
    return [
        (r.device_id, r.seq, r.msg_id, r.stored_by, r.received_at)
        for d in devices
        for r in store.device_results(d, limit=None)
    ]


def test_two_replicas_share_the_stream_and_a_sigkilled_one_loses_nothing(
    tmp_path: Path, broker: Mosquitto, postgres: Postgres
) -> None:
    # Three scanners submit 60 results each while two replicas (share group "g") write to one
    # PostgreSQL. When a third is stored, replica 0 hangs (SIGSTOP): the broker keeps handing
    # it its share, unacknowledged; then it is SIGKILLed. Mosquitto drops what the dead replica
    # held (it does not pass a dead member's messages on); the scanners' delivered_upto covers
    # those seqs, so replica 1 finds them missing in the store and asks for them again. End:
    # every record stored exactly once, both replicas did part of the work, only replica 1
    # after the kill, and the resend path did the recovering.
    store = open_store(postgres.url)
    devices = [f"scanner-{c}" for c in "abc"]
    replicas = [_replica(tmp_path, i, broker.port, postgres.url) for i in range(2)]
    syncs: list[DeviceSync] = []
    try:
        time.sleep(1.5)  # both replicas connected and subscribed
        syncs = [
            DeviceSync.from_config(sync_config(tmp_path, broker.port, device_id=d), bundle_version="b1")
            for d in devices
        ]
        for s in syncs:
            s.start()
        stopped_at, killed_at = None, None
        for i in range(60):
            for s in syncs:
                s.submit(**sample_fields(i))
            time.sleep(0.02)
            if stopped_at is None and sum(d.results for d in store.devices()) >= 60:
                os.kill(replicas[0].pid, signal.SIGSTOP)
                stopped_at = i
            elif stopped_at is not None and killed_at is None and i >= stopped_at + 10:
                os.kill(replicas[0].pid, signal.SIGKILL)
                replicas[0].wait()
                killed_at = time.time()
        assert killed_at is not None, "the stream ended before a third was stored"
        assert wait_for(lambda: sum(d.results for d in store.devices()) >= 180, 40), _logs(tmp_path)
        time.sleep(1.0)  # anything late would show as a duplicate row now
        rows = _rows(store, devices)
        resends = sum(store.device_report(d)["resend_requests"] for d in devices)
    finally:
        for s in syncs:
            s.close()
        for p in replicas:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        store.close()
    assert len(rows) == 180 and len({m for _, _, m, _, _ in rows}) == 180  # no loss, no duplicate row
    for d in devices:
        assert sorted(seq for dev, seq, *_ in rows if dev == d) == list(range(1, 61))
    by = {b for *_, b, _ in rows}
    assert by == {"replica-0", "replica-1"}, by  # the broker split the stream between them
    assert {b for *_, b, at in rows if at > killed_at + 0.5} == {"replica-1"}
    assert resends > 0  # what the killed replica held came back through a resend


def test_every_replica_gets_the_retained_status_and_the_shares_split_results(tmp_path: Path, broker: Mosquitto) -> None:
    # A scanner's retained status is on the broker before any replica starts. A shared
    # subscription is never sent retained messages, so status stays a plain subscription:
    # both replicas learn last_seq / delivered_upto and store the scanner as online. Results
    # are shared: 40 results reach the two replicas once in all, not twice each.
    peer = Watcher(broker.port, "scalpedge/v1/test/scanner-a/cmd")
    boot = new_boot_id()
    status = {"schema": "scalpedge.status/1", "state": "online", "device_id": "scanner-a", "boot_id": boot,
              "last_seq": 40, "delivered_upto": 0, "ts": "2026-01-01T00:00:00Z"}  # fmt: skip
    peer.client.publish("scalpedge/v1/test/scanner-a/status", json.dumps(status), qos=1, retain=True).wait_for_publish(
        10
    )
    mqtt = MqttConfig(host="127.0.0.1", port=broker.port, fleet="test", reconnect_min_s=0.05)
    db = str(tmp_path / "fleet.sqlite")  # two replicas on one SQLite file: the embedded case
    consumers = [
        FleetConsumer(mqtt, FleetConfig(db=db, client_id=f"replica-{i}", share_group="g", gap_grace_s=30))
        for i in range(2)
    ]
    assert consumers[0].subscriptions() == [
        "$share/g/scalpedge/v1/test/+/result",
        "$share/g/scalpedge/v1/test/+/telemetry",
        "$share/g/scalpedge/v1/test/+/event",
        "scalpedge/v1/test/+/status",
    ]
    try:
        for c in consumers:
            c.start()
        assert wait_for(lambda: all(c.tracks.get("scanner-a") is not None for c in consumers), 10)
        assert [c.tracks["scanner-a"].known_last for c in consumers] == [40, 40]
        sync = DeviceSync.from_config(sync_config(tmp_path, broker.port), bundle_version="b1")
        sync.start()
        try:
            for i in range(40):
                sync.submit(**sample_fields(i))
            assert wait_for(lambda: sum(c.tracks["scanner-a"].received for c in consumers) >= 40, 20)
            time.sleep(0.5)
            shares = [c.tracks["scanner-a"].received for c in consumers]
        finally:
            sync.close()
        assert sum(shares) == 40 and min(shares) > 0, shares  # each result to one replica
        store = open_store(db)  # a reader of its own, like a dashboard
        try:
            assert wait_for(lambda: store.devices()[0].state == "offline", 10)  # the scanner closed
            (dev,) = store.devices()
        finally:
            store.close()
        assert dev.results == 40 and dev.last_seq == 40
    finally:
        for c in consumers:
            c.stop()
        peer.close()


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-1500:] for p in sorted(tmp_path.glob("replica-*.log")))
