"""MQTT topics and the small JSON messages besides results: status, telemetry, events, commands.

Topics are ``scalpedge/v1/<fleet>/<device>/<kind>`` with kind one of ``KINDS``:

- ``result``    QoS 1, one result record (``device/contracts/schemas/result-1.schema.json``)
- ``status``    QoS 1, retained: ``{"state": "online"|"offline", "boot_id", "last_seq", ...}``;
                ``offline`` is also the last will, so a crash shows up as offline
- ``telemetry`` QoS 0, periodic: fps, temperature_c, battery, outbox depth, last_seq
- ``event``     QoS 1: alarms (``outbox_full``...) and command replies (``cmd_rejected``...)
- ``cmd``       QoS 1, to the device: ``{"cmd": "diagnose"}``, ``{"cmd": "resend", "from_seq": 5,
                "to_seq": 9}``, ``{"cmd": "config", "set": {"telemetry_interval_s": 5}}``, and the
                model rollouts' ``update_bundle`` / ``rollback_bundle`` (``update_bundle_command``,
                ``rollback_bundle_command``; answered by ``bundle_switched``, ``bundle_refused`` or
                ``bundle_unchanged`` events, see ``device.sync.bundle_update``).

**Correlation ids**: a command's optional ``request_id`` (a string of at most 128 characters)
is echoed in every reply event to it, rejections (``cmd_rejected``) included whenever the
payload was a JSON object with a well-formed ``request_id``. An MQTT 5 ``Correlation Data``
property on the command is echoed on the reply's PUBLISH as well, even for a payload that is
not JSON; replies always go to the device's ``event`` topic (a ``Response Topic`` is not
followed: the broker's ACL lets a device publish only under its own topics).

Each payload has a JSON Schema in ``device/contracts/schemas`` (``<kind>-1.schema.json``, the
command's is ``command-1``), checked by ``device.contracts.validation``.

``last_seq`` in status and telemetry lets a consumer notice records missing at the *end* of a
stream (no later seq would reveal that gap); ``delivered_upto`` (every seq up to it was
acknowledged by the broker) tells it which missing seqs the device no longer has in hand, so
it asks for a resend of those only and never for records still queued on the device.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.contracts.records import utc_timestamp
from device.contracts.validation import ContractError, load_schema, validate

__all__ = [
    "KINDS",
    "Command",
    "CommandError",
    "topic",
    "parse_topic",
    "parse_command",
    "encode",
    "resend_command",
    "update_bundle_command",
    "rollback_bundle_command",
    "read_temperature_c",
    "missing_ranges",
]

KINDS = ("result", "status", "telemetry", "event", "cmd")
COMMANDS = ("diagnose", "resend", "config", "update_bundle", "rollback_bundle")
BUNDLE_COMMANDS = ("update_bundle", "rollback_bundle")
MAX_CMD_BYTES = 16 * 1024


class CommandError(ContractError):
    """A ``cmd`` payload was rejected; the message says why (logged and echoed as an event).
    ``reply``: what ties the rejection to the command, for the ``cmd_rejected`` event: its
    ``request_id`` and ``cmd`` when the payload was a JSON object holding well-formed ones."""

    def __init__(self, message: str, reply: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reply: dict[str, Any] = dict(reply or {})


@dataclass(frozen=True)
class Command:
    """A parsed command. ``args`` holds the command's own fields (from_seq/to_seq, set; the
    bundle commands' rollout_id, bundle_version, manifest_sha256, url, from_version);
    ``correlation_data``: the MQTT 5 property the command arrived with (set by the link)."""

    name: str
    request_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    correlation_data: bytes | None = None


def topic(fleet: str, device_id: str, kind: str) -> str:
    """``scalpedge/v1/<fleet>/<device>/<kind>``."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {KINDS}")
    return f"scalpedge/v1/{fleet}/{device_id}/{kind}"


def parse_topic(name: str) -> tuple[str, str, str] | None:
    """``(fleet, device_id, kind)`` for a ScalpEdge topic, else None."""
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != "scalpedge" or parts[1] != "v1" or parts[4] not in KINDS:
        return None
    return parts[2], parts[3], parts[4]


def encode(message: Mapping[str, Any], kind: str | None = None) -> bytes:
    """Compact JSON bytes with a ``ts`` (UTC) added when missing. With ``kind`` ("status",
    "telemetry", "event", "command") the message is first checked against its schema
    (ContractError naming the field)."""
    body = dict(message)
    body.setdefault("ts", utc_timestamp())
    if kind is not None:
        validate(kind, body)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def resend_command(from_seq: int, to_seq: int | None = None, request_id: str | None = None) -> bytes:
    """The ``cmd`` payload asking a device to publish seqs ``from_seq..to_seq`` again."""
    body: dict[str, Any] = {"cmd": "resend", "from_seq": from_seq}
    if to_seq is not None:
        body["to_seq"] = to_seq
    if request_id is not None:
        body["request_id"] = request_id
    return encode(body, "command")


def update_bundle_command(
    bundle_version: str, manifest_sha256: str, url: str, rollout_id: str | None = None, request_id: str | None = None
) -> bytes:
    """The ``cmd`` payload asking a device to download, verify, self-test and switch to the signed
    bundle ``bundle_version`` served under folder ``url`` (ending in ``/``) whose manifest.json
    has SHA-256 ``manifest_sha256`` (hex). ContractError naming the field for a bad value."""
    body: dict[str, Any] = {
        "cmd": "update_bundle",
        "bundle_version": bundle_version,
        "manifest_sha256": manifest_sha256,
        "url": url,
    }
    return encode(_with_ids(body, rollout_id, request_id), "command")


def rollback_bundle_command(from_version: str, rollout_id: str | None = None, request_id: str | None = None) -> bytes:
    """The ``cmd`` payload asking a device that runs ``from_version`` to go back to the bundle it
    ran before it (a device running another version answers ``bundle_unchanged``)."""
    return encode(
        _with_ids({"cmd": "rollback_bundle", "from_version": from_version}, rollout_id, request_id), "command"
    )


def _with_ids(body: dict[str, Any], rollout_id: str | None, request_id: str | None) -> dict[str, Any]:
    if rollout_id is not None:
        body["rollout_id"] = rollout_id
    if request_id is not None:
        body["request_id"] = request_id
    return body


def parse_command(payload: bytes) -> Command:
    """Parse and check a ``cmd`` payload against ``command-1.schema.json``. Raises CommandError
    with the reason (naming the field); never anything else."""
    if len(payload) > MAX_CMD_BYTES:
        raise CommandError(f"payload of {len(payload)} bytes exceeds {MAX_CMD_BYTES}")
    try:
        body = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CommandError(f"payload is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise CommandError(f"payload is not JSON: {exc.msg} at byte {exc.pos}") from exc
    except RecursionError as exc:
        raise CommandError("payload nests too deeply") from exc
    try:
        validate("command", body, CommandError)
        return Command(body["cmd"], body.get("request_id"), _command_args(body))
    except CommandError as exc:
        exc.reply = _correlation(body)
        raise


def _command_args(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of a schema-valid command besides cmd, request_id and ts; CommandError for
    what the schema cannot say (to_seq below from_seq, a value that is not finite)."""
    args: dict[str, Any] = {}
    if body["cmd"] == "resend":
        args["from_seq"], args["to_seq"] = body["from_seq"], body.get("to_seq")
        if args["to_seq"] is not None and args["to_seq"] < args["from_seq"]:
            raise CommandError(f"command: to_seq: {args['to_seq']} is below from_seq {args['from_seq']}")
    elif body["cmd"] == "config":
        for key, value in body["set"].items():
            if isinstance(value, float) and not math.isfinite(value):
                raise CommandError(f"command: set/{key}: {value} is not finite")
        args["set"] = body["set"]
    elif body["cmd"] in BUNDLE_COMMANDS:
        keys = ("rollout_id", "bundle_version", "manifest_sha256", "url", "from_version")
        args = {key: body[key] for key in keys if key in body}
    return args


def _correlation(body: Any) -> dict[str, Any]:
    """``request_id`` and ``cmd`` of a rejected payload, each only when it is well-formed (a
    string within the schema's length; a known command), so the reply event stays valid."""
    if not isinstance(body, dict):
        return {}
    out: dict[str, Any] = {}
    limit = load_schema("common-1.schema.json")["$defs"]["request_id"]["maxLength"]
    request_id = body.get("request_id")
    if isinstance(request_id, str) and len(request_id) <= limit:
        out["request_id"] = request_id
    if isinstance(body.get("cmd"), str) and body["cmd"] in COMMANDS:
        out["cmd"] = body["cmd"]
    return out


def read_temperature_c(root: Path = Path("/sys/class/thermal")) -> float | None:
    """Hottest thermal zone in degrees Celsius (sysfs gives millidegrees), or None if unreadable."""
    best: float | None = None
    try:
        zones = sorted(root.glob("thermal_zone*/temp"))
    except OSError:
        return None
    for path in zones:
        try:
            value = int(path.read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
        if -60.0 < value < 200.0:
            best = value if best is None else max(best, value)
    return best


def missing_ranges(present: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """Inclusive ranges of the integers in ``[lo, hi]`` that are not in sorted ``present``."""
    out: list[tuple[int, int]] = []
    expect = lo
    for s in present:
        if s > hi:
            break
        if s > expect:
            out.append((expect, s - 1))
        expect = max(expect, s + 1)
    if expect <= hi:
        out.append((expect, hi))
    return out
