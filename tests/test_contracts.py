"""Every JSON contract against its schema, through the one validator: result records, model
cards, the bundle manifest and signature, and the MQTT command, status, telemetry and event
payloads. A valid document passes; a malformed one is refused with a message naming the kind
and the field; the shipped bundle and the payloads a real device sends validate."""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from mosquitto import Mosquitto
from sync_device import fleet_config, sample_fields, sync_config, wait_for

from device.assets import default_bundle_path, sample_frames
from device.cli import main
from device.contracts.constants import INSTANCE_OUTPUTS, LEVEL_NAMES
from device.contracts.messages import COMMANDS, CommandError, parse_command, resend_command
from device.contracts.records import SCHEMA_ID, RecordFactory, new_boot_id, utc_timestamp
from device.contracts.validation import SCHEMA_FILES, ContractError, load_schema, problems, validate
from device.measure.optics import OpticsProfile, load_profile
from device.models.bundle import BUNDLE_SCHEMA, TARGETS, Bundle, BundleFormatError
from export.bundle import build_bundle, generate_key, sign_bundle, unpack_bundle
from tests.onnx_graphs import conv_net, save

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "device" / "contracts" / "schemas"
DELETE = object()  # a mutation value: remove the key


def _card() -> dict[str, Any]:
    """A card as ``export.release`` and ``calibration`` write it (FP32 plus a gated INT8 file)."""
    return {
        "name": "segmenter",
        "task": "hair-segmentation",
        "instance_head": "ends",
        "preprocessing": {"colour": "RGB", "scale": 1 / 255},
        "thresholds": {"mask": 0.5, "end_density_scale": 25.0},
        "class_names": None,
        "outputs": ["hair_logits", "end_density"],
        "provenance": {"seed": 5},
        "variants": [
            {"file": "segmenter.onnx", "precision": "fp32", "targets": list(TARGETS), "quantization": None},
            {
                "file": "segmenter.int8-ort-cpu.onnx",
                "precision": "int8",
                "targets": ["onnxruntime-cpu"],
                "quantization": {"format": "qdq"},
                "gate": {"metric": "dice", "reference": 0.81, "candidate": 0.80, "max_drop": 0.02, "passed": True},
            },
        ],
        "preferred": {"onnxruntime-cpu": "segmenter.int8-ort-cpu.onnx", "tensorrt": "segmenter.onnx"},
        "refused": [],
    }


def _shipped(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((default_bundle_path() / name).read_text())
    return data


VALID: dict[str, Callable[[], Any]] = {
    "result": lambda: RecordFactory("scanner-a", "bundle-1").build(1, **sample_fields()),
    "card": _card,
    "manifest": lambda: _shipped("manifest.json"),
    "signature": lambda: _shipped("signature.json"),
    "command": lambda: json.loads(resend_command(5, 9, request_id="r1")),
    "status": lambda: {
        "schema": "scalpedge.status/1",
        "state": "online",
        "device_id": "scanner-a",
        "boot_id": new_boot_id(),
        "last_seq": 3,
        "delivered_upto": 2,
        "ts": utc_timestamp(),
    },
    "telemetry": lambda: {
        "device_id": "scanner-a",
        "boot_id": new_boot_id(),
        "fps": 12.5,
        "battery": {"percent": 80, "charging": False},
        "temperature_c": None,
        "last_seq": 3,
        "delivered_upto": 3,
        "outbox": {
            "pending": 0,
            "inflight": 0,
            "delivered_retained": 3,
            "undelivered_bytes": 0,
            "oldest_undelivered_age_s": None,
        },
        "ts": utc_timestamp(),
    },
    "optics": lambda: OpticsProfile(
        um_per_px=1.8,
        frame_width=640,
        frame_height=480,
        spacing_um=100.0,
        spacing_px=55.5,
        orientation_deg=0.5,
        created_utc="2026-12-03T12:00:00+00:00",
        source="ruler.png",
    ).to_dict(),
    "event": lambda: {
        "schema": "scalpedge.event/1",
        "device_id": "scanner-a",
        "boot_id": new_boot_id(),
        "event": "resend_unavailable",
        "cmd": "resend",
        "ranges": [[1, 4]],
        "request_id": "r1",
        "ts": utc_timestamp(),
    },
}

# Malformed documents: {"kind", "path" of the field, "value" it gets (absent: the key is removed),
# "error" text the message must contain after "<kind>: "}. Every kind has a missing required key,
# a wrong type and an extra key where extras are forbidden.
MALFORMED = json.loads((Path(__file__).with_name("contracts_malformed.json")).read_text())


def _mutate(doc: Any, path: str, value: Any) -> Any:
    """``doc`` with the field at ``path`` ("a/b/0/c") set to ``value`` or removed (DELETE)."""
    doc = copy.deepcopy(doc)
    *parents, leaf = path.split("/")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(leaf) if isinstance(node, list) else leaf
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return doc


def test_every_schema_is_valid_draft_2020_12_and_named_by_its_id() -> None:
    files = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
    assert set(SCHEMA_FILES.values()) < set(files)  # plus the shared definitions
    for name in files:
        schema = load_schema(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith("/" + name) and schema == json.loads((SCHEMA_DIR / name).read_text())


def test_schemas_agree_with_the_python_constants() -> None:
    card = load_schema("card")["$defs"]
    assert tuple(card["target"]["enum"]) == TARGETS
    assert set(card["model"]["properties"]["instance_head"]["enum"]) == set(INSTANCE_OUTPUTS)
    assert load_schema("manifest")["properties"]["schema"]["const"] == BUNDLE_SCHEMA
    assert tuple(load_schema("common-1.schema.json")["$defs"]["cmd"]["enum"]) == COMMANDS
    assert SCHEMA_ID in load_schema("result")["properties"]["schema"]["enum"]
    assert tuple(load_schema("result")["$defs"]["level"]["enum"]) == LEVEL_NAMES


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_document_passes(kind: str) -> None:
    assert problems(kind, VALID[kind]()) == []


@pytest.mark.parametrize("case", MALFORMED, ids=[f"{c['kind']}:{c['path']}" for c in MALFORMED])
def test_malformed_document_is_refused_naming_the_field(case: dict[str, Any]) -> None:
    kind = case["kind"]
    doc = _mutate(VALID[kind](), case["path"], case.get("value", DELETE))
    with pytest.raises(ContractError) as info:
        validate(kind, doc)
    assert str(info.value).startswith(f"{kind}: ") and case["error"] in str(info.value)
    if kind == "command":  # the device's parser refuses it with the same reason
        with pytest.raises(CommandError) as parsed:
            parse_command(json.dumps(doc).encode())
        assert str(parsed.value) == str(info.value)


def test_every_kind_has_malformed_cases_of_each_sort() -> None:
    for kind in VALID:
        errors = [c["error"] for c in MALFORMED if c["kind"] == kind]
        assert any("required property" in e for e in errors), kind
        assert any("Additional properties" in e for e in errors), kind
        assert any("is not of type" in e or "does not match" in e for e in errors), kind


def test_shipped_manifest_signature_and_cards_validate(tmp_path: Path) -> None:
    bundle = Bundle.open(default_bundle_path())  # validates manifest.json and signature.json
    assert problems("manifest", bundle.manifest) == [] and problems("signature", _shipped("signature.json")) == []
    cards = unpack_bundle(default_bundle_path(), tmp_path / "cards")  # validates every card it writes
    assert sorted(c.name for c in cards) == sorted(f"{m}.card.json" for m in bundle.models)
    for card in cards:
        assert problems("card", json.loads(card.read_text())) == [], card.name


@pytest.fixture()
def signed_bundle(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bundle folder, private key, trusted public key) of a bundle built by the real writer."""
    private, public = tmp_path / "keys" / "release.pem", tmp_path / "trusted" / "release.pem"
    generate_key(private, public)
    release = tmp_path / "release"
    release.mkdir()
    save(conv_net(), release / "segmenter.onnx")
    card = {k: v for k, v in _card().items() if k not in ("variants", "preferred")}
    card["variants"] = [_card()["variants"][0]]
    (release / "segmenter.card.json").write_text(json.dumps(card))
    build_bundle(tmp_path / "bundle", [release / "segmenter.card.json"], private, version="t-1")
    return tmp_path / "bundle", private, public


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("bundle_version", "'bundle_version' is a required property"),
        ("models/segmenter/variants/0/bytes", "models/segmenter/variants/0: 'bytes' is a required property"),
        ("models/segmenter/variants/0/targets", "models/segmenter/variants/0: 'targets' is a required property"),
    ],
)
def test_open_refuses_a_signed_manifest_that_lacks_a_key(signed_bundle: Any, path: str, needle: str, capsys) -> None:
    folder, private, public = signed_bundle
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps(_mutate(json.loads(manifest.read_text()), path, DELETE)))
    sign_bundle(folder, private)  # correctly signed, so only the schema can refuse it
    with pytest.raises(BundleFormatError) as info:
        Bundle.open(folder, trusted_keys=[public])
    assert str(info.value) == f"manifest {manifest}: {needle}"
    assert main(["bundle", "verify", str(folder), "--trust", str(public)]) == 4  # refused like a tampered bundle
    assert needle in capsys.readouterr().err
    frame = str(sample_frames()[0])
    assert main(["segment", frame, "--bundle", str(folder), "--trust", str(public), "--out", str(folder / "o")]) == 4
    assert f"model bundle REFUSED: manifest {manifest}: {needle}" in capsys.readouterr().err


def test_open_refuses_a_malformed_signature_file(signed_bundle: Any) -> None:
    folder, _, public = signed_bundle
    sig = folder / "signature.json"
    sig.write_text(json.dumps(_mutate(json.loads(sig.read_text()), "signature", "not base64!")))
    with pytest.raises(
        BundleFormatError, match=r"signature .*signature\.json: signature: 'not base64!' does not match"
    ):
        Bundle.open(folder, trusted_keys=[public])


def test_device_payloads_validate_and_the_fleet_rejects_bad_ones_naming_the_field(tmp_path: Path) -> None:
    """A real device publishes status, telemetry, results and command replies through a real
    broker: each validates against its schema. A malformed status and event reach the fleet
    consumer, which keeps them in its ``rejected`` table with the field named."""
    from device.sync.device_sync import DeviceSync
    from fleet.consumer import FleetConsumer
    from tests.test_mqtt_sync import Watcher

    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    cfg = sync_config(tmp_path, broker.port)
    sync = DeviceSync.from_config(cfg, bundle_version="b1")
    consumer = FleetConsumer(cfg.mqtt, fleet_config(tmp_path))
    watcher = Watcher(broker.port, "scalpedge/v1/test/#")
    try:
        consumer.start()
        sync.submit(**sample_fields())
        sync.start()
        assert wait_for(lambda: bool(watcher.json("/status")), 10)  # online: subscribed to its cmd topic
        cmd = "scalpedge/v1/test/scanner-a/cmd"
        watcher.client.publish(cmd, resend_command(1, request_id="r1"), qos=1)
        watcher.client.publish(cmd, b'{"cmd": "reboot"}', qos=1)
        assert wait_for(lambda: len(watcher.json("/event")) >= 2 and watcher.json("/telemetry"), 10)
        assert wait_for(lambda: consumer.report()["devices"].get("scanner-a", {}).get("received") == 1, 10)
        seen = set()
        for topic_name, payload, _ in list(watcher.messages):
            kind = topic_name.rsplit("/", 1)[1]
            if kind != "cmd":  # the device's own messages; the test sent the commands
                validate(kind, json.loads(payload))
                seen.add(kind)
        assert seen == {"result", "status", "telemetry", "event"}
        events = {e["event"]: e for e in watcher.json("/event")}
        assert (
            events["resend"]["request_id"] == "r1" and "cmd: 'reboot' is not one of" in events["cmd_rejected"]["reason"]
        )
        bad_status = {**VALID["status"](), "device_id": "scanner-z", "state": "sleeping"}
        bad_event = {**VALID["event"](), "device_id": "scanner-z", "ranges": [["1", 4]]}
        watcher.client.publish("scalpedge/v1/test/scanner-z/status", json.dumps(bad_status).encode(), qos=1)
        watcher.client.publish("scalpedge/v1/test/scanner-z/event", json.dumps(bad_event).encode(), qos=1)
        assert wait_for(lambda: consumer.report()["rejected"] == 2, 10)
        assert consumer.report()["rejected"] == 2 and "scanner-z" not in consumer.report()["devices"]
    finally:
        watcher.close()
        sync.close()
        consumer.stop()
        broker.stop()
    db = sqlite3.connect(fleet_config(tmp_path).db)
    reasons = dict(db.execute("SELECT topic, reason FROM rejected").fetchall())
    db.close()
    assert reasons["scalpedge/v1/test/scanner-z/status"].startswith("status: state: 'sleeping' is not one of")
    assert reasons["scalpedge/v1/test/scanner-z/event"] == "event: ranges/0/0: '1' is not of type 'integer'"


def test_validator_without_jsonschema_raises_the_callers_error() -> None:
    """The core install (no ``device`` extra) imports the contracts; validating names the extra."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['jsonschema'] = None\n"
        "from device.contracts.records import RecordError, validate_record\n"
        "try:\n    validate_record({})\nexcept RecordError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "result: validating needs jsonschema: pip install 'scalpedge[device]'"


def test_load_profile_refuses_a_malformed_file_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "calibration.json"
    doc = VALID["optics"]()
    path.write_text(json.dumps(doc))
    assert load_profile(path) == OpticsProfile(**{k: v for k, v in doc.items() if k != "schema"})
    del doc["spacing_px"]
    doc["um_per_px"] = -1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(
        ContractError,
        match=r"calibration.json: 'spacing_px' is a required property; um_per_px: -1.0 is less than",
    ):
        load_profile(path)
