"""Signed model rollouts: the fleet stages and serves a bundle, devices verify, self-test and switch
(the device's updater on its own: ``test_rollout_updater``).

Real parts only: a Mosquitto on a free port, the fleet's HTTP bundle server, each simulated
scanner's outbox + MQTT link (``DeviceSync``) with its ``BundleUpdater``, bundles signed here
with a test key the devices trust, ONNX Runtime running the self-test on the shipped sample
frames. Each test narrates its exchange.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mosquitto import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from release_support import NEW, TamperingServer, flip_byte, make_keys, serve_release, slim_release
from sync_device import sample_fields, sync_config, wait_for

from device.assets import default_bundle_path
from device.contracts.config import MqttConfig
from device.contracts.messages import parse_command, rollback_bundle_command, update_bundle_command
from device.models.bundle import Bundle, BundleError, RollbackGuard, sha256_file
from device.sync.bundle_pointer import bundles_root, open_active_bundle, read_pointer
from device.sync.bundle_update import BundleUpdater
from device.sync.device_sync import DeviceSync
from fleet.bundle_server import BundleServer, StagedBundle, bundle_url, stage_bundle
from fleet.rollout import RolloutClient, RolloutConfig, RolloutSettings, in_stage, select_devices

DEVICES = ("scanner-1", "scanner-2", "scanner-3")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return make_keys(tmp_path)


@pytest.fixture
def served(tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[tuple[TamperingServer, StagedBundle]]:
    yield from serve_release(tmp_path, keys[0])


class Results:
    """A plain subscriber keeping the result records of the fleet ``test``."""

    def __init__(self, port: int) -> None:
        self.records: list[dict[str, Any]] = []
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, msg: self.records.append(json.loads(msg.payload))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("scalpedge/v1/test/+/result", qos=1)
        self.client.loop_start()
        assert subscribed.wait(5)

    def versions(self, seq_from: int) -> dict[str, str]:
        """device -> bundle_version of its records with seq >= seq_from."""
        return {r["device_id"]: r["bundle_version"] for r in list(self.records) if r["seq"] >= seq_from}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


def _settings(tmp_path: Path, port: int) -> RolloutSettings:
    mqtt_cfg = MqttConfig(host="127.0.0.1", port=port, fleet="test")
    cfg = RolloutConfig(serve_root=str(tmp_path / "served"), state=str(tmp_path / "rollouts.json"))
    return RolloutSettings(mqtt_cfg, cfg, {"clinic": DEVICES})


def test_rollout_two_switch_one_refuses_a_tampered_bundle_then_rollback(
    tmp_path: Path, broker: Mosquitto, keys: tuple[Path, Path]
) -> None:
    # Three scanners run the shipped bundle. The fleet stages release NEW (signed with a key the
    # scanners trust) and publishes update_bundle to the group "clinic" at 100 %. scanner-1 and
    # -2 download it over HTTP, verify it, self-test it on the sample frames and switch;
    # scanner-3 is served segmenter.onnx with one flipped byte: it refuses at "verify", naming
    # the file, and keeps the shipped bundle. Every record published afterwards names the
    # bundle that measured it. A rollback then returns the two that switched to the shipped
    # bundle; scanner-3, which never ran NEW, answers bundle_unchanged.
    private, trusted = keys
    factory = Bundle.open(default_bundle_path())
    old = factory.version
    staged = stage_bundle(slim_release(tmp_path, private), tmp_path / "served")
    assert staged.version == NEW and staged.manifest_sha256 == sha256_file(staged.folder / "manifest.json")
    bad = tmp_path / "tampered-segmenter.onnx"
    shutil.copyfile(staged.folder / "segmenter.onnx", bad)
    flip_byte(bad)
    server = TamperingServer(tmp_path / "served", "scanner-3", {"segmenter.onnx": bad}).start()
    results = Results(broker.port)
    devices: dict[str, tuple[DeviceSync, BundleUpdater]] = {}
    client = RolloutClient(_settings(tmp_path, broker.port))
    try:
        for device in DEVICES:
            home = tmp_path / device
            sync = DeviceSync.from_config(sync_config(tmp_path, broker.port, device), bundle_version=old)
            updater = BundleUpdater(
                device, factory, home=home, trusted_keys=[trusted], guard_path=home / "bundle-state.json"
            )
            sync.attach_bundles(updater)
            sync.start()
            devices[device] = (sync, updater)
        for sync, _ in devices.values():
            sync.submit(**sample_fields(1))
        assert wait_for(lambda: len(results.versions(1)) == 3, 20)
        assert results.versions(1) == dict.fromkeys(DEVICES, old)

        client.connect()
        url = bundle_url(server.url, NEW)
        record = client.start(staged, url, "clinic", DEVICES, percent=100)
        assert record["rollout_id"] == f"clinic@{NEW}" and set(record["devices"]) == set(DEVICES)
        record = client.wait(record["rollout_id"], 120)
        states = {d: e["state"] for d, e in record["devices"].items()}
        assert states == {"scanner-1": "switched", "scanner-2": "switched", "scanner-3": "refused"}, record
        for device in ("scanner-1", "scanner-2"):
            entry = record["devices"][device]
            assert (entry["active_bundle_version"], entry["previous_bundle_version"]) == (NEW, old)
            assert devices[device][1].active.version == NEW
            pointer = read_pointer(bundles_root(tmp_path / device))
            assert pointer is not None and pointer.active.version == NEW and pointer.previous.version == old
            assert RollbackGuard(tmp_path / device / "bundle-state.json").highest() == NEW
        refused = record["devices"]["scanner-3"]
        assert refused["stage"] == "verify" and refused["active_bundle_version"] == old
        assert "segmenter.onnx" in refused["reason"] and "altered" in refused["reason"]
        assert devices["scanner-3"][1].active.version == old
        root3 = bundles_root(tmp_path / "scanner-3")
        assert read_pointer(root3) is None and list(root3.iterdir()) == []  # nothing of NEW kept
        assert not (tmp_path / "scanner-3" / "bundle-state.json").exists()  # the guard never saw NEW
        assert record["summary"] == {"reached": 3, "states": {"switched": 2, "refused": 1}, "on_version": 2}
        assert not client.ok(record["rollout_id"])
        # the tampered copy went to scanner-3 only, and the others fetched every file once
        assert ("scanner-3", "segmenter.onnx") in server.fetched
        assert sorted(n for d, n in server.fetched if d == "scanner-1") == sorted(
            ["manifest.json", "signature.json", *staged.files]
        )

        for sync, _ in devices.values():
            sync.submit(**sample_fields(2))
        assert wait_for(lambda: len(results.versions(2)) == 3, 20)
        assert results.versions(2) == {"scanner-1": NEW, "scanner-2": NEW, "scanner-3": old}

        record = client.wait(client.rollback(f"clinic@{NEW}")["rollout_id"], 60)
        states = {d: e["state"] for d, e in record["devices"].items()}
        assert states == {"scanner-1": "rolled_back", "scanner-2": "rolled_back", "scanner-3": "rollback_unchanged"}
        assert {e["active_bundle_version"] for e in record["devices"].values()} == {old}
        assert client.ok(record["rollout_id"])
        assert all(updater.active.version == old for _, updater in devices.values())
        for sync, _ in devices.values():
            sync.submit(**sample_fields(3))
        assert wait_for(lambda: len(results.versions(3)) == 3, 20)
        assert results.versions(3) == dict.fromkeys(DEVICES, old)
        saved = json.loads((tmp_path / "rollouts.json").read_text())
        assert saved["rollouts"][f"clinic@{NEW}"]["devices"]["scanner-1"]["state"] == "rolled_back"
    finally:
        client.close()
        for sync, _ in devices.values():
            sync.close()
        results.close()
        server.stop()

    # Boot after the rollback: the pointer names the shipped bundle, older than the guard's
    # record (NEW); it loads because a rollback wrote the pointer, while the same bundle opened
    # with the plain guard is refused as a downgrade.
    home = tmp_path / "scanner-1"
    state = home / "bundle-state.json"
    booted = open_active_bundle(default_bundle_path(), [trusted], state, home=home)
    assert booted.version == old
    with pytest.raises(BundleError, match="older than"):
        Bundle.open(default_bundle_path(), [trusted], RollbackGuard(state))


def test_stages_are_deterministic_and_widening_only_adds_devices() -> None:
    ids = [f"scanner-{i:04d}" for i in range(2000)]
    ten, fifty = select_devices(ids, "clinic@1.2", 10), select_devices(ids, "clinic@1.2", 50)
    assert set(ten) < set(fifty) < set(ids)
    assert abs(len(ten) - 200) < 60 and abs(len(fifty) - 1000) < 100
    assert ten == select_devices(ids, "clinic@1.2", 10)  # the same stage every time
    assert set(ten) != set(select_devices(ids, "clinic@1.3", 10))  # another release, another first 10 %
    assert all(in_stage(d, "clinic@1.2", 100) for d in ids)
    with pytest.raises(ValueError, match="percent"):
        select_devices(ids, "clinic@1.2", 0)


def test_the_runtime_swaps_its_pipeline_between_frames_and_records_follow_it(
    tmp_path: Path, keys: tuple[Path, Path], served: tuple[TamperingServer, StagedBundle]
) -> None:
    # The scanner runtime diagnoses the clip every 0.2 s while an update arrives. Its activate
    # step asks the frame loop to build a pipeline on the new bundle (on the loop's own thread)
    # and to stamp later records with its version, in the same step: the outbox holds records
    # of the shipped bundle, then only records of NEW, never one interleaved.
    from device.app.pipeline import ScanPipeline
    from device.app.runtime import ScannerRuntime
    from device.capture.sources import open_source

    server, staged = served
    factory = Bundle.open(default_bundle_path())
    sync = DeviceSync.from_config(sync_config(tmp_path, port=1), bundle_version=factory.version)
    runtime = ScannerRuntime(
        ScanPipeline(factory, threads=1),
        open_source(str(default_bundle_path().parent / "samples" / "clip"), fps=10, loop=True, stills=False),
        tmp_path / "out",
        sync=sync,
        save_overlays=False,
        diagnose_every_s=0.2,
    )

    def pipeline_for(bundle: Bundle) -> ScanPipeline:
        pipeline = ScanPipeline(bundle, threads=1)
        sync.set_bundle_version(bundle.version)
        return pipeline

    def activate(bundle: Bundle) -> None:
        runtime.swap_pipeline(lambda: pipeline_for(bundle)).result(timeout=60)

    home = tmp_path / "device"
    updater = BundleUpdater(
        "scanner-a", factory, home=home, trusted_keys=[keys[1]], guard_path=home / "state.json", activate=activate
    )
    loop = threading.Thread(target=runtime.run, kwargs={"max_seconds": 120})
    loop.start()
    try:
        assert wait_for(lambda: sync.outbox.stats().last_seq >= 2, 60)
        url = bundle_url(server.url, NEW)
        event = updater.handle(parse_command(update_bundle_command(NEW, staged.manifest_sha256, url)))
        assert event["event"] == "bundle_switched", event
        assert runtime.pipeline.bundle.version == NEW
        switched_at = sync.outbox.stats().last_seq
        assert wait_for(lambda: sync.outbox.stats().last_seq >= switched_at + 2, 60)
    finally:
        runtime.stop()
        loop.join(30)
        rows = sync.outbox.claim(1000)
        sync.close(timeout_s=0.5)
    versions = [json.loads(row.payload)["bundle_version"] for row in rows]
    first_new = versions.index(NEW)
    assert first_new >= 2 and set(versions[:first_new]) == {factory.version} and set(versions[first_new:]) == {NEW}


def test_cli_start_status_rollback_and_bad_input(
    tmp_path: Path, broker: Mosquitto, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # `scalpedge fleet rollout start` stages the release into serve_root, where the bundle server
    # serves it, sends it to the one scanner of group "lab" and waits for its answer; `status`
    # prints the same record; `rollback` brings the scanner back. A group the config does not
    # define, or a folder that is not a bundle, is bad input (exit 2).
    from device.cli import main

    server = BundleServer(tmp_path / "served", "127.0.0.1", 0).start()
    factory = Bundle.open(default_bundle_path())
    home = tmp_path / "scanner-1"
    sync = DeviceSync.from_config(sync_config(tmp_path, broker.port, "scanner-1"), bundle_version=factory.version)
    sync.attach_bundles(
        BundleUpdater("scanner-1", factory, home=home, trusted_keys=[keys[1]], guard_path=home / "state.json")
    )
    sync.start()
    sync.submit(**sample_fields(1))  # acknowledged: connected, and subscribed to cmd before that
    assert wait_for(lambda: sync.outbox.stats().delivered_upto >= 1, 20)
    config = tmp_path / "fleet.toml"
    config.write_text(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nfleet = "test"\n'
        f'[rollout]\nserve_root = "served"\nbase_url = "{server.url}"\nstate = "rollouts.json"\n'
        '[rollout.groups]\nlab = ["scanner-1"]\n'
    )
    release = slim_release(tmp_path, keys[0])
    try:
        capsys.readouterr()
        args = ["fleet", "rollout", "start", "--config", str(config), "--bundle", str(release), "--group", "lab"]
        assert main([*args, "--wait", "60"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["devices"]["scanner-1"]["state"] == "switched" and sync.bundle_version == NEW
        assert main(["fleet", "rollout", "status", "--config", str(config)]) == 0
        assert json.loads(capsys.readouterr().out)[f"lab@{NEW}"]["summary"]["on_version"] == 1
        assert main(["fleet", "rollout", "rollback", "--config", str(config), "--rollout", f"lab@{NEW}"]) == 0
        record = json.loads(capsys.readouterr().out)
        assert record["devices"]["scanner-1"]["state"] == "rolled_back" and sync.bundle_version == factory.version
        assert main([*args[:-1], "nowhere"]) == 2
        assert "no group 'nowhere'" in capsys.readouterr().err
        assert main([*args[:6], str(tmp_path), *args[7:]]) == 2
        assert "not a signed bundle" in capsys.readouterr().err
    finally:
        sync.close()
        server.stop()


def test_a_scanner_without_rollouts_rejects_bundle_commands(tmp_path: Path, broker: Mosquitto) -> None:
    # A link with no updater attached answers cmd_rejected (with the request id), never silence.
    sync = DeviceSync.from_config(sync_config(tmp_path, broker.port, "scanner-x"), bundle_version="1")
    events: list[dict[str, Any]] = []
    watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, msg: events.append(json.loads(msg.payload))
    subscribed = threading.Event()
    watcher.on_subscribe = lambda *args: subscribed.set()
    watcher.connect("127.0.0.1", broker.port)
    watcher.subscribe([("scalpedge/v1/test/scanner-x/event", 1), ("scalpedge/v1/test/scanner-x/status", 1)])
    watcher.loop_start()
    try:
        assert subscribed.wait(5)
        sync.start()
        # the device subscribes to its cmd topic before it publishes "online": once that is seen, commands arrive
        assert wait_for(lambda: any(e.get("state") == "online" for e in events), 10)
        payload = rollback_bundle_command("1", "lab@2", "r7")
        watcher.publish("scalpedge/v1/test/scanner-x/cmd", payload, qos=1)
        assert wait_for(lambda: any(e.get("event") == "cmd_rejected" for e in events), 10), events
        (rejected,) = [e for e in events if e.get("event") == "cmd_rejected"]
        assert rejected["request_id"] == "r7" and "not enabled" in rejected["reason"]
    finally:
        sync.close()
        watcher.loop_stop()
        watcher.disconnect()
