"""Signed model rollouts from the fleet: publish a bundle update to a group, staged, and roll it back.

A rollout is one bundle version sent to one group of scanners (``[rollout.groups]`` in
fleet.toml: a name -> device ids), named ``<group>@<version>``. ``start`` stages the bundle
(``fleet.bundle_server.stage_bundle``), picks the devices in the stage (``in_stage``: a
deterministic ``percent`` of the group by a hash of the rollout id and the device id, so
widening the percentage only adds devices) and publishes ``update_bundle`` (version, manifest
SHA-256, the folder URL on the bundle server) on each one's ``cmd`` topic; ``rollback`` sends
``rollback_bundle`` (``from_version``) to every device the rollout reached. Devices answer with
``bundle_switched``, ``bundle_refused`` or ``bundle_unchanged`` events carrying the rollout id and
the command's request id; each answer updates the device's state in the rollout's JSON file
(``[rollout] state``), which ``status`` prints.

The MQTT session is persistent (client id ``[rollout] client_id``, ``session_expiry_s``), so
answers that arrive while no ``rollout`` command runs are queued by the broker and collected by
the next one (``status --wait S``). Run one rollout command at a time: a second connection under
the same client id takes the session over.

Device states: ``sent`` -> ``switched`` | ``refused`` | ``unchanged`` (already on the version);
after a rollback: ``rollback_sent`` -> ``rolled_back`` | ``rollback_refused`` |
``rollback_unchanged`` (the device was not running the version). ``active_bundle_version`` is
what the device says it runs after its last answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.contracts.config import ConfigError, MqttConfig, check, load_toml_config, path_field, section

__all__ = [
    "RolloutClient",
    "RolloutConfig",
    "RolloutSettings",
    "in_stage",
    "load_rollout_config",
    "select_devices",
]

log = logging.getLogger(__name__)

STATE_SCHEMA = "scalpedge.rollouts/1"
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
GROUP = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ANSWERS = {
    "update_bundle": {"bundle_switched": "switched", "bundle_refused": "refused", "bundle_unchanged": "unchanged"},
    "rollback_bundle": {
        "bundle_switched": "rolled_back",
        "bundle_refused": "rollback_refused",
        "bundle_unchanged": "rollback_unchanged",
    },
}
PENDING = ("sent", "rollback_sent")
MAX_EVENT_BYTES, MAX_EVENT_DEPTH = 64 << 10, 8  # device events are small and flat
DONE_OK = ("switched", "unchanged", "rolled_back", "rollback_unchanged")


@dataclass(frozen=True)
class RolloutConfig:
    """``[rollout]``: serve_root: staged bundles (served as /bundles/<version>/); base_url: the
    bundle server as devices reach it (http://fleet.example:8070); bind/port: ``rollout serve``;
    state: the rollouts' JSON file; client_id/session_expiry_s: the MQTT session (seconds)."""

    serve_root: str = path_field("bundles")
    base_url: str = ""
    bind: str = "0.0.0.0"
    port: int = 8070
    state: str = path_field("rollouts.json")
    client_id: str = "scalpedge-rollout"
    session_expiry_s: int = 86400
    publish_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        check(0 <= self.port <= 65535, "rollout.port", "must be 0-65535", self.port)
        check(bool(self.client_id), "rollout.client_id", "must not be empty", self.client_id)
        check(self.session_expiry_s >= 0, "rollout.session_expiry_s", "must be >= 0", self.session_expiry_s)
        check(self.publish_timeout_s > 0, "rollout.publish_timeout_s", "must be > 0", self.publish_timeout_s)
        ok = not self.base_url or self.base_url.startswith(("http://", "https://"))
        check(ok, "rollout.base_url", "must start with http:// or https://", self.base_url)


@dataclass(frozen=True)
class RolloutSettings:
    """What ``fleet rollout`` reads from fleet.toml: ``[mqtt]``, ``[rollout]``, ``[rollout.groups]``."""

    mqtt: MqttConfig = field(default_factory=MqttConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def group(self, name: str, devices: Iterable[str] | None = None) -> tuple[str, ...]:
        """The device ids of group ``name`` (``devices`` given: those, under that name)."""
        if not GROUP.fullmatch(name):
            raise ValueError(f"group name {name!r}: letters, digits, '_', '.', '-' (at most 64)")
        if devices is not None:
            return _device_ids(devices, f"--devices of group {name}")
        if name not in self.groups:
            known = ", ".join(sorted(self.groups)) or "none"
            raise ValueError(f"no group {name!r} in [rollout.groups] (known: {known}); or name its --devices")
        return self.groups[name]


def _device_ids(values: Iterable[Any], where: str) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(values))
    bad = [v for v in out if not isinstance(v, str) or not DEVICE_ID.fullmatch(v)]
    if bad or not out:
        raise ConfigError(f"{where}: device ids must be 1-64 of letters, digits, '_', '.', '-' (got {bad or 'none'})")
    return out


def load_rollout_config(path: str | Path) -> RolloutSettings:
    """Read fleet.toml's ``[mqtt]`` and ``[rollout]``; ConfigError naming the file and key."""

    def build(data: Mapping[str, Any], base_dir: Path) -> RolloutSettings:
        table = data.get("rollout", {})
        if not isinstance(table, Mapping):
            raise ConfigError("[rollout] must be a table")
        table = dict(table)
        raw_groups = table.pop("groups", {})
        if not isinstance(raw_groups, Mapping):
            raise ConfigError("[rollout.groups] must be a table of name = [device ids]")
        groups = {}
        for name, ids in raw_groups.items():
            if not GROUP.fullmatch(name) or not isinstance(ids, list):
                raise ConfigError(f'[rollout.groups] {name}: a group is name = ["device-id", ...]')
            groups[name] = _device_ids(ids, f"[rollout.groups] {name}")
        rollout = section(RolloutConfig, {"rollout": table}, "rollout", base_dir)
        return RolloutSettings(section(MqttConfig, data, "mqtt", base_dir), rollout, groups)

    return load_toml_config(path, build)


def in_stage(device_id: str, rollout_id: str, percent: float) -> bool:
    """Whether ``device_id`` is among the first ``percent`` % of rollout ``rollout_id``: its
    place is a hash of both, uniform in [0, 100), so a device in at P% is in at every P' > P."""
    digest = hashlib.sha256(f"{rollout_id}\0{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2**64 < percent


def select_devices(devices: Iterable[str], rollout_id: str, percent: float) -> list[str]:
    """The devices of the stage ``percent`` (0 < percent <= 100), in the given order."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    return [d for d in devices if in_stage(d, rollout_id, percent)]


def _utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _StateFile:
    """The rollouts' JSON file, replaced atomically on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"schema": STATE_SCHEMA, "rollouts": {}}
        if path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("schema") != STATE_SCHEMA or not isinstance(data.get("rollouts"), dict):
                    raise ValueError(f"schema is {data.get('schema')!r}, expected {STATE_SCHEMA}")
            except (ValueError, AttributeError) as exc:
                raise ValueError(f"{path}: not a rollout state file ({exc})") from None
            self.data = data

    @property
    def rollouts(self) -> dict[str, Any]:
        rollouts: dict[str, Any] = self.data["rollouts"]
        return rollouts

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


class RolloutClient:
    """Publishes rollout commands and collects the devices' answers into the state file.

    ``connect()`` first (waits for the subscription to the fleet's events), ``close()`` last.
    """

    def __init__(self, settings: RolloutSettings) -> None:
        self.settings = settings
        self.cfg = settings.rollout
        self.state = _StateFile(Path(self.cfg.state))
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._subscribed = threading.Event()
        self._client: Any = None

    # ------------------------------------------------------------------ connection
    def connect(self, timeout_s: float = 10.0) -> RolloutClient:
        """Connect with a persistent session and subscribe to ``scalpedge/v1/<fleet>/+/event``;
        ConnectionError when the broker does not answer within ``timeout_s``."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        from device.contracts.mqtt import make_client

        m = self.settings.mqtt
        client = make_client(m, self.cfg.client_id)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *args: self._subscribed.set()
        client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self._client = client
        try:
            client.connect(m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props)
        except (OSError, ValueError) as exc:
            raise ConnectionError(f"cannot reach the broker at {m.host}:{m.port}: {exc}") from None
        client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise ConnectionError(f"no subscription at {m.host}:{m.port} within {timeout_s} s (refused by its ACL?)")
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def __enter__(self) -> RolloutClient:
        return self  # connect() first: ``with RolloutClient(s).connect() as client:``

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.error("rollout: broker refused the connection: %s", reason)
            return
        client.subscribe(f"scalpedge/v1/{self.settings.mqtt.fleet}/+/event", qos=1)

    # ------------------------------------------------------------------ commands
    def start(
        self, staged: Any, url: str, group: str, devices: Iterable[str], percent: float = 100.0
    ) -> dict[str, Any]:
        """Publish ``update_bundle`` for ``staged`` (a ``StagedBundle`` served at folder ``url``)
        to the devices of ``group`` in stage ``percent`` that are not on it yet (never sent,
        no answer, refused or rolled back); returns the rollout's record."""
        from device.contracts.messages import update_bundle_command

        rollout_id = f"{group}@{staged.version}"
        members = list(devices)
        chosen = select_devices(members, rollout_id, percent)
        with self._lock:
            record = self.state.rollouts.get(rollout_id)
            if record is not None and record["manifest_sha256"] != staged.manifest_sha256:
                raise ValueError(f"rollout {rollout_id} exists with another manifest; bump the bundle version")
            if record is None:
                record = {"rollout_id": rollout_id, "group": group, "created_utc": _utc(), "devices": {}}
                self.state.rollouts[rollout_id] = record
            record.update(
                bundle_version=staged.version,
                manifest_sha256=staged.manifest_sha256,
                url=url,
                percent=max(percent, record.get("percent", 0.0)),
                group_devices=members,
                updated_utc=_utc(),
            )
            todo = [d for d in chosen if record["devices"].get(d, {}).get("state") not in ("switched", "unchanged")]
        for device in todo:
            request_id = uuid.uuid4().hex[:16]
            payload = update_bundle_command(staged.version, staged.manifest_sha256, url, rollout_id, request_id)
            self._send(record, device, payload, "sent", request_id)
        log.info(
            "rollout %s: %d of %d devices in the %g%% stage, %d sent",
            rollout_id,
            len(chosen),
            len(members),
            percent,
            len(todo),
        )
        return self.record(rollout_id)

    def rollback(self, rollout_id: str) -> dict[str, Any]:
        """Send ``rollback_bundle`` to every device the rollout reached (a device that does not
        run its version answers ``bundle_unchanged``); returns the rollout's record."""
        from device.contracts.messages import rollback_bundle_command

        with self._lock:
            record = self._get(rollout_id)
            record["rolled_back_utc"] = _utc()
            devices = sorted(record["devices"])
        for device in devices:
            request_id = uuid.uuid4().hex[:16]
            payload = rollback_bundle_command(record["bundle_version"], rollout_id, request_id)
            self._send(record, device, payload, "rollback_sent", request_id)
        return self.record(rollout_id)

    def _send(self, record: dict[str, Any], device: str, payload: bytes, state: str, request_id: str) -> None:
        from device.contracts.messages import topic

        with self._lock:  # recorded first: the answer may come back before the PUBACK
            entry = record["devices"].setdefault(device, {})
            entry.update(state=state, request_id=request_id, sent_utc=_utc())
            for key in ("stage", "reason", "answered_utc"):
                entry.pop(key, None)
            self.state.save()
        info = self._client.publish(topic(self.settings.mqtt.fleet, device, "cmd"), payload, qos=1)
        info.wait_for_publish(self.cfg.publish_timeout_s)
        if not info.is_published():
            raise ConnectionError(f"the broker did not acknowledge the command to {device}")

    def _get(self, rollout_id: str) -> dict[str, Any]:
        record: dict[str, Any] | None = self.state.rollouts.get(rollout_id)
        if record is None:
            known = ", ".join(sorted(self.state.rollouts)) or "none"
            raise ValueError(f"no rollout {rollout_id!r} in {self.state.path} (known: {known})")
        return record

    # ------------------------------------------------------------------ answers
    def wait(self, rollout_id: str, timeout_s: float) -> dict[str, Any]:
        """Collect answers until no device of the rollout is waiting, or ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            record = self._get(rollout_id)
            while any(e["state"] in PENDING for e in record["devices"].values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        return self.record(rollout_id)

    def record(self, rollout_id: str) -> dict[str, Any]:
        """The rollout's record with a ``summary`` (devices per state, devices on the version)."""
        with self._lock:
            record = json.loads(json.dumps(self._get(rollout_id)))
        states: dict[str, int] = {}
        for entry in record["devices"].values():
            states[entry["state"]] = states.get(entry["state"], 0) + 1
        on_version = sum(e.get("active_bundle_version") == record["bundle_version"] for e in record["devices"].values())
        record["summary"] = {"reached": len(record["devices"]), "states": states, "on_version": on_version}
        return record

    def ok(self, rollout_id: str) -> bool:
        """Every device the rollout reached answered, and none refused."""
        return all(e["state"] in DONE_OK for e in self.record(rollout_id)["devices"].values())

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from device.contracts.messages import parse_topic
        from device.contracts.validation import ContractError, parse_json, validate

        where = parse_topic(msg.topic)
        if where is None:
            return
        try:
            body = parse_json(bytes(msg.payload), MAX_EVENT_BYTES, MAX_EVENT_DEPTH)
            if not isinstance(body, dict) or body.get("event") not in ANSWERS["update_bundle"]:
                return
            validate("event", body)
        except ContractError as exc:
            log.warning("rollout: ignored an invalid event on %s: %s", msg.topic, exc)
            return
        with self._lock:
            record = self.state.rollouts.get(body.get("rollout_id", ""))
            entry = None if record is None else record["devices"].get(where[1])
            if entry is None or entry.get("request_id") != body.get("request_id"):
                return  # another rollout's, or the answer to an earlier command
            entry["state"] = ANSWERS[body["cmd"]][body["event"]]
            entry["answered_utc"] = _utc()
            for key in ("active_bundle_version", "previous_bundle_version", "stage", "reason"):
                if key in body:
                    entry[key] = body[key]
            self.state.save()
            self._changed.notify_all()
        why = f": {body['reason']}" if "reason" in body else ""
        log.info("rollout %s: %s %s%s", body["rollout_id"], where[1], entry["state"], why)
