"""The device's bundle updater: what it refuses before fetching models, the self-test that keeps
a broken signed bundle out, power loss mid-switch, rollbacks, and malformed update commands.
Bundles are signed here with a test key the device trusts; ONNX Runtime runs the self-test on the
shipped sample frames; the fleet's HTTP bundle server serves them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from release_support import NEW, TamperingServer, flip_byte, make_keys, serve_release, slim_release

from device.assets import default_bundle_path
from device.contracts.messages import parse_command, rollback_bundle_command, update_bundle_command
from device.models.bundle import Bundle, BundleError, RollbackGuard
from device.sync.bundle_pointer import bundles_root, open_active_bundle, read_pointer
from device.sync.bundle_update import BundleUpdater
from export.bundle import build_bundle, generate_key, sign_bundle
from fleet.bundle_server import BundleServer, StagedBundle, bundle_url, stage_bundle


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return make_keys(tmp_path)


@pytest.fixture
def served(tmp_path: Path, keys: tuple[Path, Path]) -> Iterator[tuple[TamperingServer, StagedBundle]]:
    yield from serve_release(tmp_path, keys[0])


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
