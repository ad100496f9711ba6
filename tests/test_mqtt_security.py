"""MQTT security with a real Mosquitto: per-device ACL with a password file, and TLS with
client certificates from a CA made in the test. Split from test_mqtt_sync.py; the generated
broker configuration (client ids bound to identities) is tested in test_broker_identity.py."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from mosquitto import Mosquitto
from sync_device import fleet_config, sample_fields, sync_config, wait_for
from test_mqtt_sync import _assert_exactly, _complete

from device.sync.config import SyncConfig
from device.sync.device_sync import DeviceSync
from fleet.broker_config import make_pki
from fleet.consumer import FleetConsumer


def _mosquitto_passwd(path: Path, users: dict[str, str]) -> None:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for i, (user, password) in enumerate(users.items()):
        subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password], check=True)


def test_acl_device_cannot_publish_under_another_device(tmp_path: Path) -> None:
    # Per-device credentials; the ACL lets a device write only below its own topic. The fleet
    # user reads everything. scanner-a is then configured, wrongly, as scanner-b: the broker
    # answers its PUBACKs with "Not authorized", so no row is marked delivered.
    pw, acl = tmp_path / "passwd", tmp_path / "acl"
    _mosquitto_passwd(pw, {"scanner-a": "pa", "scanner-b": "pb", "fleet": "pf"})
    acl.write_text("user fleet\ntopic readwrite scalpedge/v1/#\n\npattern readwrite scalpedge/v1/test/%u/#\n")
    broker = Mosquitto(tmp_path / "broker", extra=f"password_file {pw}\nacl_file {acl}")
    broker.start()
    base = sync_config(tmp_path, broker.port)
    fleet = FleetConsumer(_with(base, username="fleet", password="pf").mqtt, fleet_config(tmp_path))
    fleet.start()
    honest = DeviceSync.from_config(_with(base, username="scanner-a", password="pa"), bundle_version="b1")
    impostor = DeviceSync.from_config(
        _with(base, device_id="scanner-b", username="scanner-a", password="pa"), bundle_version="b1"
    )
    wrong_pw = DeviceSync.from_config(
        _with(base, device_id="scanner-c", username="scanner-a", password="nope"), bundle_version="b1"
    )
    try:
        for sync in (honest, impostor, wrong_pw):
            sync.start()
            for i in range(5):
                sync.submit(**sample_fields(i))
        assert wait_for(lambda: _complete(fleet, 5), 15)  # the honest device's records arrive
        assert wait_for(lambda: impostor.link.connects >= 1, 5)
        time.sleep(1.0)
        report = fleet.report()
        assert set(report["devices"]) == {"scanner-a"}  # nothing under scanner-b's topics
        st = impostor.outbox.stats()
        assert st.delivered == 0 and st.pending + st.inflight == 5  # refused, kept for later
        assert wrong_pw.link.connects == 0 and wrong_pw.outbox.stats().delivered == 0
    finally:
        for sync in (honest, impostor, wrong_pw):
            sync.close()
        fleet.stop()
        broker.stop()


def _with(cfg: SyncConfig, **mqtt: Any) -> SyncConfig:
    import dataclasses

    outbox = cfg.outbox
    if "device_id" in mqtt:
        outbox = dataclasses.replace(
            outbox, path=str(Path(outbox.path).with_name(f"outbox-{mqtt['device_id']}.sqlite"))
        )
    return dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, **mqtt), outbox=outbox)


def _make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and two client certificates, by
    ``fleet broker-config``'s ``make_pki``, as files under ``d``."""
    pems = make_pki("test", "127.0.0.1", ["scanner-a", "fleet"])
    names = {"ca": "ca.pem", "server_cert": "server.pem", "server_key": "server.key"}
    for cn in ("scanner-a", "fleet"):
        names |= {f"{cn}_cert": f"clients/{cn}.pem", f"{cn}_key": f"clients/{cn}.key"}
    out = {role: d / name.replace("/", "-") for role, name in names.items()}
    for role, name in names.items():
        out[role].write_bytes(pems[name])
    return out


def test_tls_with_client_certificates(tmp_path: Path) -> None:
    # Mosquitto requires a client certificate signed by the test CA and takes the username
    # from its CN. The device and the consumer present theirs; a device without one, and a
    # device speaking plain TCP to the TLS port, never get a connection.
    pki = _make_pki(tmp_path)
    broker = Mosquitto(
        tmp_path / "broker",
        extra=(
            f"cafile {pki['ca']}\ncertfile {pki['server_cert']}\nkeyfile {pki['server_key']}\n"
            "require_certificate true\nuse_identity_as_username true\n"
        ),
    )
    broker.start()
    base = _with(sync_config(tmp_path, broker.port), tls_ca=str(pki["ca"]))
    fleet = FleetConsumer(
        _with(base, tls_cert=str(pki["fleet_cert"]), tls_key=str(pki["fleet_key"])).mqtt, fleet_config(tmp_path)
    )
    device = DeviceSync.from_config(
        _with(base, tls_cert=str(pki["scanner-a_cert"]), tls_key=str(pki["scanner-a_key"])), bundle_version="b1"
    )
    no_cert = DeviceSync.from_config(_with(base, device_id="scanner-x"), bundle_version="b1")
    plain = DeviceSync.from_config(_with(base, device_id="scanner-y", tls_ca=""), bundle_version="b1")
    try:
        fleet.start()
        for sync in (device, no_cert, plain):
            sync.start()
            for i in range(10):
                sync.submit(**sample_fields(i))
        assert wait_for(lambda: _complete(fleet, 10), 20)
        _assert_exactly(fleet, 10)
        # The fleet can hold all ten before the device has read the broker's PUBACKs.
        assert wait_for(lambda: device.outbox.stats().delivered == 10, 10)
        assert no_cert.link.connects == 0 and plain.link.connects == 0
        assert no_cert.outbox.stats().pending == 10 and plain.outbox.stats().pending == 10
    finally:
        for sync in (device, no_cert, plain):
            sync.close()
        fleet.stop()
        broker.stop()
