"""Signed model rollouts: the fleet stages and serves a bundle, devices verify, self-test and switch.

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

import numpy as np
import onnx
import paho.mqtt.client as mqtt
import pytest
from mosquitto import Mosquitto
from onnx import TensorProto, helper
from paho.mqtt.enums import CallbackAPIVersion
from sync_device import sample_fields, sync_config, wait_for

from device.assets import default_bundle_path
from device.contracts.config import MqttConfig
from device.contracts.messages import parse_command, rollback_bundle_command, update_bundle_command
from device.models.bundle import Bundle, BundleError, RollbackGuard, sha256_file
from device.sync.bundle_pointer import bundles_root, open_active_bundle, read_pointer
from device.sync.bundle_update import BundleUpdater
from device.sync.device_sync import DeviceSync
from export.bundle import build_bundle, generate_key, sign_bundle
from fleet.bundle_server import BundleServer, StagedBundle, bundle_url, stage_bundle
from fleet.rollout import RolloutClient, RolloutConfig, RolloutSettings, in_stage, select_devices

NEW = "2099.12.1.900"  # newer than the shipped bundle
DEVICES = ("scanner-1", "scanner-2", "scanner-3")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A release key made here: (private PEM, folder holding its public key, which devices trust)."""
    private, public = tmp_path / "keys" / "release.pem", tmp_path / "trusted" / "release.pem"
    generate_key(private, public)
    return private, public.parent


def slim_release(tmp_path: Path, private: Path, version: str = NEW) -> Path:
    """The shipped bundle's segmenter alone, as release ``version``, signed with ``private``."""
    src, out = default_bundle_path(), tmp_path / f"release-{version}"
    out.mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    segmenter = manifest["models"]["segmenter"]
    manifest.update(bundle_version=version, models={"segmenter": segmenter})
    for variant in segmenter["variants"]:
        shutil.copyfile(src / variant["file"], out / variant["file"])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(out, private)
    return out


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


class TamperingServer(BundleServer):
    """The fleet's bundle server, but one device gets a copy of a file with one flipped byte (a
    corrupted mirror or a man in the middle); it also records who fetched what."""

    def __init__(self, root: Path, victim: str, tampered: dict[str, Path]) -> None:
        super().__init__(root, "127.0.0.1", 0)
        self.victim, self.tampered = victim, tampered
        self.fetched: list[tuple[str | None, str]] = []

    def resolve(self, version: str, name: str, device: str | None) -> Path | None:
        self.fetched.append((device, name))
        if device == self.victim and name in self.tampered:
            return self.tampered[name]
        return super().resolve(version, name, device)


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


@pytest.fixture
def served(tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[tuple[TamperingServer, StagedBundle]]:
    staged = stage_bundle(slim_release(tmp_path, keys[0]), tmp_path / "served")
    server = TamperingServer(tmp_path / "served", "nobody", {}).start()
    yield server, staged
    server.stop()


def _updater(tmp_path: Path, trusted: Path, calls: list[str]) -> BundleUpdater:
    home = tmp_path / "device"
    return BundleUpdater(
        "scanner-9",
        Bundle.open(default_bundle_path()),
        home=home,
        trusted_keys=[trusted],
        guard_path=home / "bundle-state.json",
        activate=lambda bundle: calls.append(bundle.version),
    )


def _nothing_kept(updater: BundleUpdater, calls: list[str]) -> None:
    assert calls == [] and updater.active.version != NEW
    assert list(updater.root.iterdir()) == []  # no pointer, no bundle folder, no staging left
    assert RollbackGuard(updater.guard_path).highest() is None


def test_wrong_digest_unsigned_and_untrusted_bundles_are_refused_before_any_model_is_fetched(
    tmp_path: Path, keys: tuple[Path, Path], served: tuple[TamperingServer, StagedBundle]
) -> None:
    server, staged = served
    calls: list[str] = []
    updater = _updater(tmp_path, keys[1], calls)
    url = bundle_url(server.url, NEW)

    # a manifest.json other than the one announced (a replaced release): refused at once
    cmd = parse_command(update_bundle_command(NEW, "0" * 64, url, "clinic@x", "r1"))
    event = updater.handle(cmd)
    assert (event["event"], event["stage"]) == ("bundle_refused", "verify")
    assert "announced" in event["reason"] and event["active_bundle_version"] != NEW
    assert [n for _, n in server.fetched] == ["manifest.json"]

    # the same release signed by a key the device does not trust: no model file is fetched
    other = tmp_path / "other.pem"
    generate_key(other, tmp_path / "other-pub" / "other.pem")
    sign_bundle(staged.folder, other)
    server.fetched.clear()
    event = updater.handle(parse_command(update_bundle_command(NEW, staged.manifest_sha256, url)))
    assert (event["event"], event["stage"]) == ("bundle_refused", "verify") and "not trusted" in event["reason"]
    assert [n for _, n in server.fetched] == ["manifest.json", "signature.json"]

    # unsigned: no signature.json at all
    (staged.folder / "signature.json").unlink()
    event = updater.handle(parse_command(update_bundle_command(NEW, staged.manifest_sha256, url)))
    assert (event["event"], event["stage"]) == ("bundle_refused", "download")
    assert "signature.json" in event["reason"] and "404" in event["reason"]
    _nothing_kept(updater, calls)


def _odd_segmenter(tmp_path: Path, kind: str) -> Path:
    """A segmenter graph (image 1x3x48x64 -> hair_logits 1x1x48x64) that is signed but wrong:
    "nan": 0/0 everywhere; "all_hair": logits of +10 everywhere."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 48, 64])
    y = helper.make_tensor_value_info("hair_logits", TensorProto.FLOAT, [1, 1, 48, 64])
    mean = helper.make_node("ReduceMean", ["image"], ["m"], axes=[1], keepdims=1)
    zero = helper.make_node("Sub", ["m", "m"], ["z"])
    if kind == "nan":
        last = helper.make_node("Div", ["z", "z"], ["hair_logits"])
        inits = []
    else:
        last = helper.make_node("Add", ["z", "ten"], ["hair_logits"])
        inits = [helper.make_tensor("ten", TensorProto.FLOAT, [1], np.array([10.0], np.float32))]
    graph = helper.make_graph([mean, zero, last], kind, [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path / f"card-{kind}"
    folder.mkdir()
    onnx.save(model, str(folder / "segmenter.onnx"))
    card = {
        "name": "segmenter",
        "task": "hair-segmentation",
        "preprocessing": {"colour": "RGB"},
        "thresholds": {"mask": 0.5},
        "class_names": None,
        "provenance": {"test": kind},
        "variants": [{"file": "segmenter.onnx", "precision": "fp32", "targets": ["onnxruntime-cpu"]}],
        "preferred": {"onnxruntime-cpu": "segmenter.onnx"},
    }
    (folder / "segmenter.card.json").write_text(json.dumps(card))
    return folder / "segmenter.card.json"


@pytest.mark.parametrize(("kind", "why"), [("nan", "not finite"), ("all_hair", "marked as hair")])
def test_a_signed_bundle_that_fails_its_self_test_is_not_switched_to(
    tmp_path: Path, keys: tuple[Path, Path], kind: str, why: str
) -> None:
    # Signed by a trusted key, every hash right, but its segmenter is broken: the self-test on
    # the sample frames refuses it, the old bundle stays, and the guard does not record it (a
    # later boot of the old bundle must not be refused as a downgrade).
    release = tmp_path / "release"
    build_bundle(release, [_odd_segmenter(tmp_path, kind)], keys[0], version="2099.12.2.1")
    staged = stage_bundle(release, tmp_path / "served")
    server = BundleServer(tmp_path / "served", "127.0.0.1", 0).start()
    calls: list[str] = []
    try:
        updater = _updater(tmp_path, keys[1], calls)
        url = bundle_url(server.url, staged.version)
        event = updater.handle(parse_command(update_bundle_command(staged.version, staged.manifest_sha256, url)))
    finally:
        server.stop()
    assert (event["event"], event["stage"]) == ("bundle_refused", "selftest"), event
    assert why in event["reason"]
    _nothing_kept(updater, calls)


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


def test_power_loss_mid_switch_leaves_the_old_bundle_running(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    # Power fails (1) mid-download: a staging folder is left; (2) after the new bundle's folder
    # was renamed into place but before the pointer was replaced: an orphan folder and a
    # half-written active.json.tmp. The boot runs the configured bundle; the next updater
    # removes the unfinished download. A damaged pointer is an error naming it, never a guess.
    home = tmp_path / "device"
    root = bundles_root(home)
    (root / ".staging-2099.12.1.900-abcd1234").mkdir(parents=True)
    (root / ".staging-2099.12.1.900-abcd1234" / "manifest.json").write_text("{")
    shutil.copytree(slim_release(tmp_path, keys[0]), root / NEW)
    (root / "active.json.tmp").write_text('{"schema": "scalpedge.active-')
    state = home / "bundle-state.json"
    bundle = open_active_bundle(default_bundle_path(), [keys[1]], state, home=home)
    assert bundle.version == Bundle.open(default_bundle_path()).version
    updater = BundleUpdater("scanner-9", bundle, home=home, trusted_keys=[keys[1]], guard_path=state)
    assert not list(root.glob(".staging-*")) and updater.active.version != NEW
    (root / "active.json").write_text('{"schema": "scalpedge.active-bundle/1", "active": 3}')
    with pytest.raises(BundleError, match="active.json: damaged"):
        open_active_bundle(default_bundle_path(), [keys[1]], state, home=home)


def test_rollback_goes_only_to_an_older_bundle_this_device_ran(
    tmp_path: Path, keys: tuple[Path, Path], served: tuple[TamperingServer, StagedBundle]
) -> None:
    server, staged = served
    calls: list[str] = []
    updater = _updater(tmp_path, keys[1], calls)
    old = updater.active.version
    # nothing before the shipped bundle: refused, not guessed
    event = updater.handle(parse_command(rollback_bundle_command(old)))
    assert (event["event"], event["stage"]) == ("bundle_refused", "command")
    url = bundle_url(server.url, NEW)
    event = updater.handle(parse_command(update_bundle_command(NEW, staged.manifest_sha256, url, "g@1")))
    assert event["event"] == "bundle_switched" and calls == [NEW]
    again = updater.handle(parse_command(update_bundle_command(NEW, staged.manifest_sha256, url, "g@1")))
    assert again["event"] == "bundle_unchanged" and calls == [NEW]  # a redelivered command does nothing twice
    assert updater.handle(parse_command(rollback_bundle_command("1.0")))["event"] == "bundle_unchanged"
    event = updater.handle(parse_command(rollback_bundle_command(NEW, "g@1")))
    assert event["event"] == "bundle_switched" and event["active_bundle_version"] == old and calls == [NEW, old]
    # now the bundle before is NEW, which is newer: a second rollback does not roll forward
    event = updater.handle(parse_command(rollback_bundle_command(old)))
    assert (event["event"], event["stage"]) == ("bundle_refused", "command") and "not older" in event["reason"]
    # a rollback re-verifies what it goes back to: a damaged kept bundle is refused
    updater.handle(parse_command(update_bundle_command(NEW, staged.manifest_sha256, url)))
    assert updater.active.version == NEW
    pointer = read_pointer(updater.root)
    assert pointer is not None and pointer.previous is not None
    kept = tmp_path / "kept-copy"
    shutil.copytree(pointer.previous.path, kept)
    flip_byte(kept / "segmenter.onnx")
    doc = json.loads((updater.root / "active.json").read_text())
    doc["previous"]["path"] = str(kept)
    (updater.root / "active.json").write_text(json.dumps(doc))
    fresh = BundleUpdater(
        "scanner-9", updater.active, home=tmp_path / "device", trusted_keys=[keys[1]], guard_path=updater.guard_path
    )
    event = fresh.handle(parse_command(rollback_bundle_command(NEW)))
    assert (event["event"], event["stage"]) == ("bundle_refused", "verify") and "segmenter.onnx" in event["reason"]
    assert fresh.active.version == NEW


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


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"bundle_version": "v2", "manifest_sha256": "a" * 64, "url": "http://f/b/"}, "bundle_version: 'v2'"),
        ({"bundle_version": "2.1", "manifest_sha256": "A" * 64, "url": "http://f/b/"}, "manifest_sha256"),
        ({"bundle_version": "2.1", "manifest_sha256": "a" * 64, "url": "file:///etc/"}, "url: 'file:///etc/'"),
        ({"bundle_version": "2.1", "manifest_sha256": "a" * 64, "url": "http://f/b"}, "url: 'http://f/b'"),
        ({"bundle_version": "2.1", "manifest_sha256": "a" * 64}, "'url' is a required property"),
        ({"bundle_version": "2.1", "manifest_sha256": "a" * 64, "url": "http://f/", "set": {}}, "'set' was unexpected"),
    ],
)
def test_malformed_update_commands_are_refused_naming_the_field(payload: dict[str, Any], error: str) -> None:
    from device.contracts.messages import CommandError

    with pytest.raises(CommandError, match="command: ") as info:
        parse_command(json.dumps({"cmd": "update_bundle", "request_id": "r9", **payload}).encode())
    assert error in str(info.value) and info.value.reply == {"cmd": "update_bundle", "request_id": "r9"}


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
