"""Broker identity: ``scalpedge fleet broker-config`` on a real Mosquitto.

A client holding valid credentials of its own must not take over another scanner's session by
connecting with that scanner's (predictable) client id, nor publish on its topics; the real
DeviceSync and FleetConsumer must work with the generated configuration, with passwords and
with client certificates."""

from __future__ import annotations

import base64
import dataclasses
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Mosquitto, free_port
from sync_device import fleet_config, sample_fields, wait_for
from test_mqtt_sync import _assert_exactly, _complete

from device.cli import main
from device.contracts.config import MqttConfig
from device.contracts.messages import topic
from device.contracts.mqtt import make_client
from device.sync.config import SyncConfig, load_sync_config
from device.sync.device_sync import DeviceSync
from fleet.broker_config import BrokerPlan, mosquitto_password_hash, write_broker_config
from fleet.config import load_fleet_config
from fleet.consumer import FleetConsumer

DEVICES = ("scanner-0001", "scanner-0002", "scanner-0003")
FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "telemetry_interval_s": 0.5, "max_inflight": 10}


def _generate(tmp: Path, tls: bool) -> dict[str, Path]:
    """The files ``fleet broker-config`` writes for fleet "test", listening on a free port."""
    plan = BrokerPlan(fleet="test", devices=DEVICES, host="127.0.0.1", port=free_port(), bind="127.0.0.1", tls=tls)
    return write_broker_config(plan, tmp / "generated")


def _broker(tmp: Path, paths: dict[str, Path]) -> Mosquitto:
    """A broker started from the generated configuration, as it is."""
    port = load_sync_config(paths["device:scanner-0001"]).mqtt.port
    broker = Mosquitto(tmp / "broker", port=port, config=paths["conf"].read_text())
    broker.start()
    return broker


def _device(paths: dict[str, Path], creds: str, device_id: str | None = None, port: int | None = None) -> DeviceSync:
    """A DeviceSync from the generated ``[mqtt]`` of ``creds``, optionally (mis)configured as another
    device id or pointed at another port."""
    cfg = load_sync_config(paths[f"device:{creds}"])
    over: dict[str, Any] = dict(FAST, device_id=device_id or creds)
    if port is not None:
        over["port"] = port
    outbox = dataclasses.replace(cfg.outbox, path=str(paths["conf"].parents[1] / f"outbox-{creds}-as-{device_id}.db"))
    return DeviceSync.from_config(
        SyncConfig(mqtt=dataclasses.replace(cfg.mqtt, **over), outbox=outbox), bundle_version="b1"
    )


def _consumer(paths: dict[str, Path], tmp: Path) -> FleetConsumer:
    cfg = load_fleet_config(paths["fleet"])
    fleet = dataclasses.replace(fleet_config(tmp), client_id=cfg.fleet.client_id)
    return FleetConsumer(
        dataclasses.replace(cfg.mqtt, **{k: FAST[k] for k in ("reconnect_min_s", "reconnect_max_s")}), fleet
    )


def _attack(
    cfg: MqttConfig, client_id: str, victim: str, during: Callable[[], None] = lambda: None, hold_s: float = 1.5
) -> dict[str, Any]:
    """Connect with ``cfg``'s credentials under ``client_id``, subscribe to ``victim``'s results
    and commands, call ``during()`` once subscribed and stay ``hold_s`` seconds. The CONNACK,
    the messages received, and whether the broker closed this connection."""
    seen: dict[str, Any] = {"dropped": False, "messages": []}
    client = make_client(cfg, client_id)
    client.on_connect = lambda c, u, f, rc, p: seen.setdefault("connack", rc)
    client.on_subscribe = lambda c, u, mid, rcs, p: seen.setdefault("suback", rcs)
    client.on_message = lambda c, u, msg: seen["messages"].append(msg.topic)
    client.on_disconnect = lambda c, u, f, rc, p: seen.update(dropped=True)
    client.connect(cfg.host, cfg.port, keepalive=30)
    deadline = time.monotonic() + hold_s
    subscribed = called = False
    while time.monotonic() < deadline and not seen["dropped"]:
        client.loop(0.05)
        if "connack" in seen and not subscribed and not seen["connack"].is_failure:
            client.subscribe([(topic(cfg.fleet, victim, kind), 1) for kind in ("result", "cmd")])
            subscribed = True
        if "suback" in seen and not called:
            during()
            called = True
    result = dict(seen)  # before our own DISCONNECT, which calls on_disconnect too
    client.disconnect()
    return result


def _submit(sync: DeviceSync, n: int) -> None:
    for i in range(n):
        sync.submit(**sample_fields(i))


def _mqtt(paths: dict[str, Path], creds: str, port: int | None = None) -> MqttConfig:
    cfg = load_sync_config(paths[f"device:{creds}"]).mqtt
    return cfg if port is None else dataclasses.replace(cfg, port=port)


def test_takeover_with_own_credentials_kicks_a_scanner_off_a_broker_without_identity_binding(tmp_path: Path) -> None:
    # The attack, shown on a broker configured like the old test ACL (password file, topics per
    # %u, no client-id binding): scanner-0003's own valid credentials under scanner-0002's
    # client id close scanner-0002's connection ("session taken over"); it has to reconnect.
    paths = _generate(tmp_path, tls=False)
    broker_dir = paths["conf"].parent
    broker = Mosquitto(
        tmp_path / "legacy", extra=f"password_file {broker_dir / 'passwd'}\nacl_file {broker_dir / 'acl'}"
    )
    victim = _device(paths, "scanner-0002", port=broker.port)
    try:
        broker.start()
        victim.start()
        assert wait_for(lambda: victim.link.connects == 1, 10)
        seen = _attack(_mqtt(paths, "scanner-0003", broker.port), "scalpedge-scanner-0002", "scanner-0002")
        assert not seen["connack"].is_failure
        assert wait_for(lambda: victim.link.connects >= 2, 5)  # it was kicked off and came back
        assert "already connected, closing old connection" in broker.log_tail(20000)
    finally:
        victim.close()
        broker.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["password", "tls"])
def test_generated_config_binds_identity_end_to_end(tmp_path: Path, tls: bool) -> None:
    # Real devices and the real consumer with the generated files only. Then scanner-0003's
    # valid credentials try scanner-0002's client ids (the default and the broker-assigned one):
    # the connection is accepted as scanner-0003, scanner-0002 stays connected, and 0003's
    # subscriptions to 0002's topics deliver nothing; a DeviceSync with 0003's credentials
    # configured as 0002 gets every result refused: the consumer sees 0002's records only.
    paths = _generate(tmp_path, tls)
    broker = _broker(tmp_path, paths)
    fleet = _consumer(paths, tmp_path)
    honest = {d: _device(paths, d) for d in DEVICES[:2]}
    impostor = _device(paths, "scanner-0003", device_id="scanner-0002")
    try:
        fleet.start()
        for sync in honest.values():
            sync.start()
            _submit(sync, 10)
        assert wait_for(lambda: all(_complete(fleet, 10, d) for d in honest), 20)
        victim = honest["scanner-0002"]
        assert victim.link.connects == 1
        for client_id in ("scalpedge-scanner-0002", "scanner-0002"):
            seen = _attack(_mqtt(paths, "scanner-0003"), client_id, "scanner-0002", during=lambda: _submit(victim, 3))
            assert not seen["connack"].is_failure and not seen["dropped"]  # in, as scanner-0003
            assert seen["messages"] == []  # 0002's results (read by the consumer) never reach 0003
        impostor.start()
        _submit(impostor, 5)
        assert wait_for(lambda: impostor.link.connects >= 1, 10)
        _submit(victim, 5)
        assert wait_for(lambda: _complete(fleet, 21, "scanner-0002"), 20)
        time.sleep(1.0)
        assert victim.link.connects == 1  # never kicked off
        _assert_exactly(fleet, 21, "scanner-0002")  # no impostor record, no conflict
        _assert_exactly(fleet, 10, "scanner-0001")
        assert set(fleet.report()["devices"]) == set(honest)
        st = impostor.outbox.stats()
        assert st.delivered == 0 and st.pending + st.inflight == 5  # refused, kept
        log = broker.log_tail(1_000_000)
        assert "as scanner-0003 (" in log and "scalpedge-scanner" not in log  # ids replaced by identities
    finally:
        for sync in (*honest.values(), impostor):
            sync.close()
        fleet.stop()
        broker.stop()


def test_password_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    # Same salt and iterations as a line mosquitto_passwd wrote: the same $7$ (PBKDF2-SHA512) hash.
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    pw = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(pw), "u1", "s3cret-é"], check=True)
    user, stored = pw.read_text().strip().split(":", 1)
    _, kind, iterations, salt, _ = stored.split("$")
    ours = mosquitto_password_hash("s3cret-é", base64.b64decode(salt), int(iterations))
    assert (user, kind, ours) == ("u1", "7", stored)
    assert mosquitto_password_hash("s3cret-é") != stored  # a fresh salt each time


def test_cli_writes_secrets_0600_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tls"
    args = ["fleet", "broker-config", "--fleet", "clinic", "--devices", "scanner-0001,scanner-0002", "--out"]
    assert main([*args, str(out), "--tls", "--host", "broker.example"]) == 0
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    secrets = {k for k, m in modes.items() if m == 0o600}
    assert secrets == {"ca/ca.key", "broker/server.key", "fleet/client.key"} | {
        f"devices/scanner-000{i}/client.key" for i in (1, 2)
    }
    assert all(m == 0o644 for k, m in modes.items() if k not in secrets)
    conf = (out / "broker" / "mosquitto.conf").read_text()
    for line in ("allow_anonymous false", "use_username_as_clientid true", "require_certificate true", "listener 8883"):
        assert line in conf.splitlines()
    acl = (out / "broker" / "acl").read_text().splitlines()
    assert "pattern write scalpedge/v1/clinic/%u/result" in acl and "pattern read scalpedge/v1/clinic/%u/cmd" in acl
    assert "topic readwrite" not in "\n".join(acl) and "#" not in "".join(a for a in acl if not a.startswith("#"))
    pw_out = tmp_path / "pw"
    assert main([*args, str(pw_out)]) == 0
    assert stat.S_IMODE((pw_out / "broker" / "passwd").stat().st_mode) == 0o600
    assert stat.S_IMODE((pw_out / "devices" / "scanner-0001" / "password").stat().st_mode) == 0o600
    capsys.readouterr()
    assert main([*args, str(out)]) == 2  # never overwrites credentials
    assert "not empty" in capsys.readouterr().err
    bad = [
        ["--devices", "scanner-0001,scanner-0001"],
        ["--devices", "scanner/0001"],
        ["--devices", "scalpedge-fleet"],  # the consumer's identity
        ["--fleet", "a+b"],
    ]
    for i, over in enumerate(bad):
        argv = [
            "fleet",
            "broker-config",
            "--fleet",
            "clinic",
            "--devices",
            "scanner-0001",
            "--out",
            str(tmp_path / f"b{i}"),
        ]
        for j in range(0, len(over), 2):
            argv[argv.index(over[j]) + 1] = over[j + 1]
        assert main(argv) == 2, over
        assert not (tmp_path / f"b{i}").exists()
