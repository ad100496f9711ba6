"""Result records: build, serialise and validate against the shipped JSON Schema.

The schema file ``device/contracts/schemas/result-1.schema.json`` is the contract with dashboards,
checked by ``device.contracts.validation``; this module adds the checks JSON Schema cannot
express (probabilities summing to 1; the level being the most probable class is *not* required:
a calibrated threshold may pick another).

A record is a plain ``dict`` so it serialises as is. ``seq`` is allocated by the outbox (it
persists the per-device counter), so the usual path is::

    factory = RecordFactory(device_id="scanner-0001", bundle_version="2024.06-int8")
    stored = outbox.add(lambda seq: factory.build(seq, metrics=..., conditions=..., quality=..., timings_ms=...))

Versions: records are written as ``scalpedge.result/2``, which adds the optional session tags
(``client_id``, ``session_id``, ``site``, ``visit_date``: ``build_record(session=...)``) to
version 1; a ``scalpedge.result/1`` record (an older scanner's, or one still in an outbox) is
valid as it is and has no tags. Both versions are described by the one shipped schema file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from device.contracts import validation
from device.contracts.constants import LEVEL_NAMES
from device.contracts.validation import ContractError

__all__ = [
    "SCHEMA_ID",
    "SCHEMA_IDS",
    "SESSION_FIELDS",
    "SITES",
    "RecordError",
    "RecordFactory",
    "build_record",
    "condition",
    "dumps_record",
    "load_schema",
    "metric",
    "new_boot_id",
    "session_tags",
    "utc_timestamp",
    "validate_record",
]

SCHEMA_ID = "scalpedge.result/2"
#: Every record version consumers accept, newest first (version 1 has no session tags).
SCHEMA_IDS = (SCHEMA_ID, "scalpedge.result/1")
#: Where on the head a frame is taken (a record's ``site``).
SITES = ("top", "crown", "front", "back", "left", "right")
#: The session tags a version 2 record may carry (client_id and session_id go together).
SESSION_FIELDS = ("client_id", "session_id", "site", "visit_date")
#: Severity levels, mildest first (the classifier's class order).
_PROB_TOLERANCE = 1e-3


class RecordError(ContractError):
    """A record does not satisfy the result schema; the message gives the JSON path and rule."""


def new_boot_id() -> str:
    """A fresh boot id (uuid4 string); one per start of the device runtime."""
    return str(uuid.uuid4())


def utc_timestamp(when: datetime | None = None) -> str:
    """RFC 3339 UTC with microseconds and a ``Z`` suffix, e.g. ``2024-06-01T12:00:00.123456Z``."""
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is None:
        raise RecordError("capture time must be timezone-aware (UTC)")
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def metric(value: float | int | None, unit: str) -> dict[str, Any]:
    """One metric entry, e.g. ``metric(61.2, "um")``; ``None`` when it could not be measured."""
    return {"value": value, "unit": unit}


def condition(probabilities: Mapping[str, float] | list[float], level: str | None = None) -> dict[str, Any]:
    """One condition entry from class probabilities (ordered as LEVEL_NAMES, or keyed by level).

    ``level`` defaults to the most probable class.
    """
    if isinstance(probabilities, Mapping):
        probs = {name: float(probabilities[name]) for name in LEVEL_NAMES}
    else:
        if len(probabilities) != len(LEVEL_NAMES):
            raise RecordError(f"condition needs {len(LEVEL_NAMES)} probabilities, got {len(probabilities)}")
        probs = {name: float(p) for name, p in zip(LEVEL_NAMES, probabilities, strict=True)}
    return {"level": level or max(probs, key=lambda k: probs[k]), "probabilities": probs}


def build_record(
    *,
    device_id: str,
    boot_id: str,
    seq: int,
    bundle_version: str,
    metrics: Mapping[str, Mapping[str, Any]],
    conditions: Mapping[str, Mapping[str, Any]],
    quality: Mapping[str, Any],
    timings_ms: Mapping[str, float],
    captured_at: datetime | str | None = None,
    msg_id: str | None = None,
    frame: Mapping[str, Any] | None = None,
    session: Mapping[str, str | None] | None = None,
    thumbnail: Mapping[str, Any] | None = None,
    mask_stage: str | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """Assemble a result record (a JSON-ready dict) and validate it unless ``validate=False``.

    ``metrics``: name -> ``{"value": number|None, "unit": ...}`` (see ``metric``);
    ``conditions``: name -> ``{"level", "probabilities"}`` (see ``condition``);
    ``quality``: ``{"accepted": bool, "reason", "focus", "exposure" 0-1, "motion"}``;
    ``timings_ms``: stage -> milliseconds. ``captured_at`` defaults to now (UTC).
    ``session``: the client session's tags (keys of ``SESSION_FIELDS``; None values are left
    out), e.g. ``{"client_id": "c-0042", "session_id": "20240601-3fa2c1", "site": "top"}``.
    ``thumbnail``: the overlay as a small JPEG, ``{"jpeg_base64", "width", "height"}`` (pixels),
    only when the scanner's config publishes thumbnails (``[run] publish_thumbnails``); a record
    carries no image otherwise. ``mask_stage``: which hair mask measured the metrics
    (``MASK_STAGES``: coarse, refined, paper or fused); left out of a record it is unknown (older scanners).
    """
    record: dict[str, Any] = {
        "schema": SCHEMA_ID,
        "msg_id": msg_id or str(uuid.uuid4()),
        "device_id": device_id,
        "boot_id": boot_id,
        "seq": int(seq),
        "captured_at": captured_at if isinstance(captured_at, str) else utc_timestamp(captured_at),
        "bundle_version": bundle_version,
        "metrics": {k: dict(v) for k, v in metrics.items()},
        "conditions": {
            k: {"level": v["level"], "probabilities": dict(v["probabilities"])} for k, v in conditions.items()
        },
        "quality": dict(quality),
        "timings_ms": {k: float(v) for k, v in timings_ms.items()},
    }
    if frame is not None:
        record["frame"] = dict(frame)
    if session:
        unknown = sorted(set(session) - set(SESSION_FIELDS))
        if unknown:
            raise RecordError(
                f"result: unknown session tag(s) {', '.join(unknown)}; known: {', '.join(SESSION_FIELDS)}"
            )
        record.update({k: str(v) for k, v in session.items() if v is not None})
    if thumbnail is not None:
        record["thumbnail"] = dict(thumbnail)
    if mask_stage is not None:
        record["mask_stage"] = mask_stage
    if validate:
        validate_record(record)
    return record


class RecordFactory:
    """Binds the identity fields (device, boot, bundle) so the pipeline passes only measurements."""

    def __init__(self, device_id: str, bundle_version: str, boot_id: str | None = None) -> None:
        self.device_id = device_id
        self.bundle_version = bundle_version
        self.boot_id = boot_id or new_boot_id()

    def build(self, seq: int, **fields: Any) -> dict[str, Any]:
        """``build_record`` with this factory's device_id, boot_id and bundle_version."""
        return build_record(
            device_id=self.device_id, boot_id=self.boot_id, bundle_version=self.bundle_version, seq=seq, **fields
        )


def session_tags(record: Mapping[str, Any]) -> dict[str, str]:
    """The session tags a record carries (``{}`` for a version 1 record or one taken outside a session)."""
    return {k: str(record[k]) for k in SESSION_FIELDS if record.get(k) is not None}


def load_schema() -> dict[str, Any]:
    """The result JSON Schema shipped in the package (``device/contracts/schemas/result-1.schema.json``)."""
    return validation.load_schema("result")


def validate_record(record: Mapping[str, Any]) -> None:
    """Raise RecordError naming every bad field (``result: path: rule; ...``) if ``record`` is not valid."""
    if record.get("schema") == SCHEMA_IDS[-1] and (tags := [k for k in SESSION_FIELDS if k in record]):
        raise RecordError(f"result: {', '.join(tags)}: a {SCHEMA_IDS[-1]} record carries no session tags")
    validation.validate("result", record, RecordError)
    bad = []
    for name, cond in record["conditions"].items():
        total = sum(cond["probabilities"].values())
        if abs(total - 1.0) > _PROB_TOLERANCE:
            bad.append(f"conditions/{name}/probabilities: sum to {total:.4f}, expected 1")
    if bad:
        raise RecordError("result: " + "; ".join(bad))


def dumps_record(record: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON bytes (the MQTT payload and the outbox column)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
