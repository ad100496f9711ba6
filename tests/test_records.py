"""Result records against the shipped JSON Schema (versions 1 and 2: the session tags); sync
config loading; cmd payload parsing."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sync_device import sample_fields, sync_config, write_toml

from device.contracts.messages import CommandError, missing_ranges, parse_command, parse_topic, topic
from device.contracts.records import (
    SCHEMA_ID,
    SCHEMA_IDS,
    SESSION_FIELDS,
    SITES,
    RecordError,
    RecordFactory,
    build_record,
    dumps_record,
    load_schema,
    new_boot_id,
    session_tags,
    utc_timestamp,
    validate_record,
)
from device.sync.config import ConfigError, OutboxConfig, SyncConfig, load_sync_config
from fleet.config import FleetConfig, load_fleet_config

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "device" / "contracts" / "schemas" / "result-1.schema.json"


def _record(seq: int = 1) -> dict[str, Any]:
    return RecordFactory("scanner-a", "bundle-1").build(seq, **sample_fields())


def test_shipped_schema_is_valid_and_is_the_file_in_the_package() -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads(SCHEMA_FILE.read_text())
    assert tuple(schema["properties"]["schema"]["enum"]) == SCHEMA_IDS == ("scalpedge.result/2", "scalpedge.result/1")
    assert SCHEMA_ID == SCHEMA_IDS[0]
    assert tuple(schema["properties"]["site"]["enum"]) == SITES
    # Every required field is produced by the builder, and nothing else; the session tags too.
    rec = _record()
    assert set(schema["required"]) <= set(rec) <= set(schema["properties"])
    tagged = RecordFactory("scanner-a", "bundle-1").build(1, session=TAGS, **sample_fields())
    assert set(tagged) - set(rec) == set(SESSION_FIELDS) and set(tagged) <= set(schema["properties"])


def test_built_record_round_trips_and_carries_units() -> None:
    when = datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    boot = new_boot_id()
    rec = build_record(
        device_id="scanner-a", boot_id=boot, seq=7, bundle_version="b1", captured_at=when, **sample_fields()
    )
    assert rec["captured_at"] == "2024-06-01T12:00:00.123456Z"
    assert rec["seq"] == 7 and rec["boot_id"] == boot and rec["schema"] == SCHEMA_ID
    assert rec["metrics"]["thickness_median"] == {"value": 62.5, "unit": "um"}
    assert rec["conditions"]["dandruff"]["level"] == "good"
    assert json.loads(dumps_record(rec)) == rec
    validate_record(json.loads(dumps_record(rec)))


def test_factory_keeps_identity_and_msg_ids_are_unique() -> None:
    f = RecordFactory("scanner-a", "bundle-1")
    a, b = f.build(1, **sample_fields()), f.build(2, **sample_fields())
    assert a["boot_id"] == b["boot_id"] == f.boot_id
    assert a["msg_id"] != b["msg_id"]


def _set(path: str, value: Any) -> Any:
    def mutate(rec: dict[str, Any]) -> None:
        *parents, leaf = path.split("/")
        node = rec
        for p in parents:
            node = node[p]
        if value is KeyError:
            del node[leaf]
        else:
            node[leaf] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (_set("msg_id", KeyError), "'msg_id' is a required property"),
        (_set("seq", 0), "seq: 0 is less than the minimum"),
        (_set("device_id", "a/b"), "device_id"),
        (_set("captured_at", "2024-06-01 12:00:00"), "captured_at"),
        (_set("metrics/hair_count/unit", "hairs"), "metrics/hair_count/unit"),
        (_set("metrics/hair_count/value", "12"), "metrics/hair_count/value"),
        (_set("conditions/sebum/level", "extreme"), "conditions/sebum/level"),
        (_set("conditions/sebum/probabilities/good", 1.5), "conditions/sebum/probabilities/good"),
        (_set("conditions/sebum/probabilities/good", 0.5), "conditions/sebum/probabilities: sum to 1.4000"),
        (_set("quality/exposure", 2.0), "quality/exposure"),
        (_set("timings_ms/total", -1.0), "timings_ms/total"),
        (_set("schema", "scalpedge.result/3"), "schema"),
        (_set("extra", 1), "Additional properties are not allowed"),
    ],
)
def test_invalid_records_are_rejected_with_the_path(mutate: Any, needle: str) -> None:
    rec = copy.deepcopy(_record())
    mutate(rec)
    with pytest.raises(RecordError, match="^result: ") as info:
        validate_record(rec)
    assert needle in str(info.value)


TAGS = {"client_id": "c-0042", "session_id": "20240601-3fa2c1", "site": "crown", "visit_date": "2024-06-01"}
# A record as scanners wrote it before the session tags (version 1), byte for byte.
V1_PAYLOAD = (
    b'{"schema":"scalpedge.result/1","msg_id":"d54680e9-5bdc-4261-8dba-9a144a6e548b","device_id":"scanner-0001",'
    b'"boot_id":"1f8f49e9-e1c2-48b9-8979-59f04e788cfe","seq":1,"captured_at":"2026-12-03T18:50:30.442719Z",'
    b'"bundle_version":"2026.11.29.1625","metrics":{"hair_count":{"value":15,"unit":"count"},'
    b'"median_thickness":{"value":30.79,"unit":"um"},"thin_ratio":{"value":0.7632,"unit":"ratio"},'
    b'"density":{"value":155.7,"unit":"per_cm2"}},"conditions":{"sebum":{"level":"moderate","probabilities":'
    b'{"good":0.18,"mild":0.37,"moderate":0.45,"severe":0.0}}},"quality":{"accepted":true,"reason":null},'
    b'"timings_ms":{"total":331.36},"frame":{"width":640,"height":480,"source":"synthetic://"}}'
)


def test_records_carry_the_session_tags_and_version_1_records_stay_valid() -> None:
    # New records are version 2 and carry the session's tags at the top level; a version 1
    # record (an older scanner's, or one still waiting in an outbox) is still valid as it is.
    rec = RecordFactory("scanner-a", "bundle-1").build(3, session=TAGS | {"site": None}, **sample_fields())
    assert rec["schema"] == "scalpedge.result/2" and "site" not in rec  # None: no site chosen yet
    assert session_tags(rec) == {k: v for k, v in TAGS.items() if k != "site"}
    validate_record(json.loads(dumps_record(rec)))
    old = json.loads(V1_PAYLOAD)
    validate_record(old)
    assert session_tags(old) == {}
    untagged = _record()
    assert untagged["schema"] == SCHEMA_ID and session_tags(untagged) == {}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"client_id": "John Smith"}, "client_id: 'John Smith' does not match"),
        ({"client_id": "jane@example.org"}, "client_id: 'jane@example.org' does not match"),
        ({"site": "nape"}, "site: 'nape' is not one of"),
        ({"visit_date": "1/6/2024"}, "visit_date: '1/6/2024' does not match"),
        ({"client_id": KeyError}, "'client_id' is a dependency of 'session_id'"),
        ({"session_id": KeyError}, "'session_id' is a dependency of 'client_id'"),
        ({"schema": "scalpedge.result/1"}, "client_id, session_id, site, visit_date: a scalpedge.result/1 record"),
    ],
)
def test_bad_session_tags_are_refused(change: dict[str, Any], needle: str) -> None:
    rec = RecordFactory("scanner-a", "bundle-1").build(1, session=TAGS, **sample_fields())
    for key, value in change.items():
        _set(key, value)(rec)
    with pytest.raises(RecordError) as info:
        validate_record(rec)
    assert needle in str(info.value)


def test_unknown_session_tag_is_refused_by_the_builder() -> None:
    with pytest.raises(RecordError, match="unknown session tag.s. name; known: client_id"):
        RecordFactory("scanner-a", "bundle-1").build(1, session={**TAGS, "name": "Jane"}, **sample_fields())


def test_naive_capture_time_is_refused() -> None:
    with pytest.raises(RecordError, match="timezone-aware"):
        utc_timestamp(datetime(2024, 1, 1))


# ----------------------------------------------------------------------------- config
def test_config_round_trips_through_toml_and_resolves_paths(tmp_path: Path) -> None:
    cfg = sync_config(tmp_path, 1883, tls_ca="ca.pem", tls_cert="c.pem", tls_key="k.pem")
    (tmp_path / "sub").mkdir()
    path = write_toml(cfg, tmp_path / "sub" / "sync.toml", FleetConfig(db="fleet.sqlite", gap_grace_s=0.4))
    loaded = load_sync_config(path)
    assert loaded.mqtt.tls_ca == str(tmp_path / "sub" / "ca.pem")  # relative to the TOML file
    assert loaded.outbox == cfg.outbox
    fleet = load_fleet_config(path)  # the fleet reads [mqtt] and [fleet] of the same file
    assert fleet.mqtt == loaded.mqtt
    assert fleet.fleet == FleetConfig(db=str(tmp_path / "sub" / "fleet.sqlite"), gap_grace_s=0.4)
    assert loaded.mqtt.max_inflight == 10 and loaded.mqtt.resolved_client_id == "scalpedge-scanner-a"


def test_config_defaults_live_in_the_dataclasses(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("[camera]\nuri = 'v4l2:///dev/video0'\n")  # other sections belong to others
    cfg = load_sync_config(path)
    assert cfg.mqtt == SyncConfig().mqtt
    assert cfg.outbox.path == str(tmp_path / "outbox.sqlite")  # the default name, next to the file
    assert cfg.outbox.max_pending == SyncConfig().outbox.max_pending


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[mqtt]\nprot = 1883\n", "[mqtt] unknown key(s) prot"),
        ("[mqtt]\nport = '1883'\n", "[mqtt] port must be int, got str '1883'"),
        ("[mqtt]\nport = 70000\n", "[mqtt] port must be 1-65535 (got 70000)"),
        ("[mqtt]\nqos = 0\n", "QoS 0 has no PUBACK"),
        ("[mqtt]\ndevice_id = 'a/+'\n", "[mqtt] device_id must match"),
        ("[mqtt]\ntls_cert = 'c.pem'\n", "tls_cert and tls_key go together"),
        ("[outbox]\nmax_db_bytes = 1000\n", "[outbox] max_db_bytes must be 0 or >= 65536"),
        ("mqtt = 3\n", "[mqtt] must be a table"),
        ("[mqtt\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_sync_config(path)
    assert needle in str(info.value) and str(path) in str(info.value)


def test_bad_fleet_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("[fleet]\nresend_interval_s = 0\n")
    with pytest.raises(ConfigError, match=r"fleet.toml: \[fleet\] resend_interval_s must be > 0"):
        load_fleet_config(path)
    assert load_sync_config(path) == SyncConfig(outbox=OutboxConfig(path=str(tmp_path / "outbox.sqlite")))


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_sync_config(tmp_path / "nope.toml")


# ----------------------------------------------------------------------------- protocol
def test_topics() -> None:
    assert topic("f1", "dev", "result") == "scalpedge/v1/f1/dev/result"
    assert parse_topic("scalpedge/v1/f1/dev/cmd") == ("f1", "dev", "cmd")
    assert parse_topic("scalpedge/v2/f1/dev/cmd") is None and parse_topic("other/x") is None
    with pytest.raises(ValueError, match="unknown topic kind"):
        topic("f1", "dev", "results")


def test_valid_commands_parse() -> None:
    assert parse_command(b'{"cmd": "diagnose", "request_id": "r1"}').request_id == "r1"
    cmd = parse_command(b'{"cmd": "resend", "from_seq": 5, "to_seq": 9}')
    assert cmd.args == {"from_seq": 5, "to_seq": 9}
    assert parse_command(b'{"cmd": "config", "set": {"telemetry_interval_s": 2}}').args["set"] == {
        "telemetry_interval_s": 2
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"reboot", "not JSON"),
        (b"[1, 2]", "command: [1, 2] is not of type 'object'"),
        (b'{"command": "diagnose"}', "command: 'cmd' is a required property"),
        (
            b'{"cmd": "reboot"}',
            "command: cmd: 'reboot' is not one of ['diagnose', 'resend', 'config', 'update_bundle', 'rollback_bundle']",
        ),
        (b'{"cmd": "resend"}', "command: 'from_seq' is a required property"),
        (b'{"cmd": "resend", "from_seq": -3}', "command: from_seq: -3 is less than the minimum of 1"),
        (b'{"cmd": "resend", "from_seq": true}', "command: from_seq: True is not of type 'integer'"),
        (b'{"cmd": "resend", "from_seq": 2.0}', "command: from_seq: 2.0 is not of type 'integer'"),
        (b'{"cmd": "resend", "from_seq": 9, "to_seq": 3}', "command: to_seq: 3 is below from_seq 9"),
        (b'{"cmd": "config", "set": {}}', "command: set: {} should be non-empty"),
        (b'{"cmd": "config", "set": {"gain": NaN}}', "command: set/gain: nan is not finite"),
        (b'{"cmd": "diagnose", "now": 1}', "command: Additional properties are not allowed ('now' was unexpected)"),
        (b'{"cmd": "diagnose", "request_id": 5}', "command: request_id: 5 is not of type 'string'"),
        (b"[" * 100_000, "exceeds"),
    ],
)
def test_malformed_commands_say_why(payload: bytes, reason: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(payload)
    assert reason in str(info.value)


def test_missing_ranges() -> None:
    assert missing_ranges([], 1, 3) == [(1, 3)]
    assert missing_ranges([1, 2, 5, 9], 1, 10) == [(3, 4), (6, 8), (10, 10)]
    assert missing_ranges([1, 2, 3], 1, 3) == []


def test_password_file_and_cli_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from device.cli import main

    (tmp_path / "pw").write_text("s3cret\n")
    good = tmp_path / "good.toml"
    good.write_text("[mqtt]\nusername = 'scanner-a'\npassword_file = 'pw'\n")
    cfg = load_sync_config(good)
    assert cfg.mqtt.resolved_password() == "s3cret" and cfg.to_dict()["mqtt"]["password"] == ""
    assert SyncConfig.from_mapping({"mqtt": {"password": "x"}}).to_dict()["mqtt"]["password"] == "***"
    bad = tmp_path / "bad.toml"
    bad.write_text("[fleet]\ngap_grace_s = 'soon'\n")
    assert main(["fleet", "listen", "--config", str(bad)]) == 2  # documented exit code for a bad config
    assert "[fleet] gap_grace_s must be float, got str 'soon'" in capsys.readouterr().err
