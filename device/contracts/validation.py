"""One validator for every JSON contract: result records, model cards, the bundle manifest and
signature, the MQTT command, status, telemetry and event payloads, and the optics profile.

The schemas are the files in ``device/contracts/schemas`` (JSON Schema draft 2020-12), loaded
from the package once; ``common-1.schema.json`` holds the field types the MQTT schemas share.
A document that breaks its schema raises ``ContractError`` (a ``ValueError``; callers pass a
subclass such as ``RecordError``) whose message names the document kind and each field::

    manifest bundle/manifest.json: models/segmenter/variants/0: 'sha256' is a required property
    command: from_seq: -1 is less than the minimum of 1

``integer`` means a JSON number written without a fraction (``5``, not ``5.0``), as the
device's parsers always required. jsonschema comes with the ``device`` extra; without it this
module still imports and ``validate`` raises the caller's error with the install hint.

``parse_json`` reads a payload from the network as the contracts mean JSON: bounded in size
and nesting, and without ``NaN``/``Infinity`` (which Python's ``json`` accepts but JSON does not).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["SCHEMA_FILES", "ContractError", "problems", "load_schema", "parse_json", "validate"]

#: Document kind -> its schema file in ``device/contracts/schemas``.
SCHEMA_FILES: Mapping[str, str] = {
    "result": "result-1.schema.json",
    "card": "card-1.schema.json",
    "manifest": "manifest-1.schema.json",
    "signature": "signature-1.schema.json",
    "command": "command-1.schema.json",
    "status": "status-1.schema.json",
    "telemetry": "telemetry-1.schema.json",
    "event": "event-1.schema.json",
    "optics": "optics-1.schema.json",
    "revocation": "revocation-1.schema.json",
}
_SHARED_FILES = ("common-1.schema.json",)
_MAX_PROBLEMS = 8  # a message lists at most this many violations
_MAX_PROBLEM_CHARS = 240  # jsonschema quotes the offending value; a large one is cut in the middle


class ContractError(ValueError):
    """A JSON document does not satisfy its schema; the message names the kind and field paths."""


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The schema of ``kind`` (a key of ``SCHEMA_FILES``, or a shared file name) as shipped."""
    name = SCHEMA_FILES.get(kind, kind)
    if name not in SCHEMA_FILES.values() and name not in _SHARED_FILES:
        raise KeyError(f"no schema for {kind!r}; known: {', '.join(SCHEMA_FILES)}")
    text = resources.files("device.contracts").joinpath("schemas", name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator(kind: str) -> Any:
    """A jsonschema validator for ``kind`` that resolves references between the shipped files."""
    import jsonschema
    from referencing import Registry, Resource

    schemas = [load_schema(k) for k in (*SCHEMA_FILES, *_SHARED_FILES)]
    registry: Registry[Any] = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    schema = load_schema(kind)
    base = jsonschema.validators.validator_for(schema)
    base.check_schema(schema)
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, value: type(value) is int)
    strict = jsonschema.validators.extend(base, type_checker=checker)
    return strict(schema, registry=registry)


def problems(kind: str, document: Any) -> list[str]:
    """Every violation of ``kind``'s schema as ``"field/path: rule"`` (no path at the top
    level), ordered by path; empty when ``document`` is valid. Needs jsonschema."""
    errors = sorted(_validator(kind).iter_errors(document), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for error in errors:
        path = "/".join(str(p) for p in error.absolute_path)
        text = f"{path}: {error.message}" if path else error.message
        out.append(_cut_middle(text, _MAX_PROBLEM_CHARS))
    return out


def _cut_middle(text: str, limit: int) -> str:
    """``text`` of at most ``limit`` characters: an offending value quoted in the middle is cut
    (``…``) and the rule at the end (``is too long``, ``was unexpected``) kept."""
    if len(text) <= limit:
        return text
    tail = min(80, limit // 3)
    return text[: limit - tail - 1] + "…" + text[-tail:]


def validate(kind: str, document: Any, error: type[ContractError] = ContractError, source: str | None = None) -> None:
    """Raise ``error`` naming ``kind`` (and ``source``, e.g. the file) and every bad field if
    ``document`` breaks its schema; also when jsonschema is not installed."""
    label = f"{kind} {source}" if source else kind
    try:
        found = problems(kind, document)
    except ImportError as exc:  # the device extra is missing
        raise error(f"{label}: validating needs jsonschema: pip install 'scalpedge[device]'") from exc
    if found:
        more = len(found) - _MAX_PROBLEMS
        tail = [f"... {more} more"] if more > 0 else []
        raise error(f"{label}: " + "; ".join(found[:_MAX_PROBLEMS] + tail))


def _nests_deeper(value: Any, max_depth: int) -> bool:
    """Whether arrays/objects in decoded JSON ``value`` nest more than ``max_depth`` deep
    (the outermost is depth 1); iterative, O(containers)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is not valid JSON (out of a double's range)")
    return value


def parse_json(payload: bytes, max_bytes: int, max_depth: int, error: type[ContractError] = ContractError) -> Any:
    """Decode UTF-8 JSON ``payload`` strictly, or raise ``error`` saying why (never anything else).

    Refused: more than ``max_bytes`` bytes (checked before decoding), arrays/objects nested more
    than ``max_depth`` deep (a RecursionError while decoding, or a walk of the decoded value
    when the payload has more brackets than ``max_depth``), ``NaN``,
    ``Infinity``, ``-Infinity`` and numbers that overflow a double (``1e999``).
    """
    if len(payload) > max_bytes:
        raise error(f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    too_deep = f"payload nests deeper than {max_depth} levels"
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
    except RecursionError as exc:  # the C decoder stops at the interpreter's recursion limit
        raise error(too_deep) from exc
    except UnicodeDecodeError as exc:
        raise error(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise error(f"payload is not JSON: {exc.msg} at byte {exc.pos}") from exc
    except ValueError as exc:  # a constant or float refused above; the int digits limit
        raise error(f"payload is not JSON: {str(exc)[:_MAX_PROBLEM_CHARS]}") from exc
    if isinstance(value, (dict, list)) and payload.count(b"[") + payload.count(b"{") > max_depth:
        if _nests_deeper(value, max_depth):
            raise error(too_deep)
    return value
