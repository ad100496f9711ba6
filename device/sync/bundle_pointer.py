"""Which bundle a device runs: the pointer file a model rollout replaces, and the boot's choice.

``<home>/bundles/active.json`` (``home``: ``$SCALPEDGE_HOME``, else ``~/.local/state/scalpedge``)
names the bundle to run and the one before it, and why the last switch happened ("update" or
"rollback"; ``device.sync.bundle_update`` writes it). It is replaced atomically (a temp file
fsync'd, ``os.replace``, the folder fsync'd): after a power loss it is the old pointer or the
new one, never half. ``open_active_bundle`` is what the boot opens: the pointer's bundle when
there is one (a pointer written by a rollback may name a bundle older than the rollback
guard's record: that one downgrade is allowed, since the device ran that bundle before), else
the configured bundle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from device.models.bundle import Bundle, BundleError, RollbackGuard, default_state_path
from device.models.bundle_trust import decode_json, read_bounded

__all__ = [
    "ACTIVE_NAME",
    "BundleRef",
    "Pointer",
    "bundles_root",
    "fsync_dir",
    "open_active_bundle",
    "read_pointer",
    "write_pointer",
]

ACTIVE_NAME = "active.json"
POINTER_SCHEMA = "scalpedge.active-bundle/1"
MAX_POINTER_BYTES = 16 << 10


@dataclass(frozen=True)
class BundleRef:
    """A bundle on this device: version, folder, SHA-256 of its manifest.json (hex)."""

    version: str
    path: str
    manifest_sha256: str

    @classmethod
    def of(cls, bundle: Bundle) -> BundleRef:
        return cls(bundle.version, str(bundle.root), bundle.manifest_sha256)


@dataclass(frozen=True)
class Pointer:
    """``bundles/active.json``: the bundle to run, the one before it, and how it got there
    (``reason`` "update" or "rollback", the fleet's ``rollout_id``, UTC time)."""

    active: BundleRef
    previous: BundleRef | None
    reason: str
    rollout_id: str | None
    switched_utc: str


def bundles_root(home: str | Path | None = None) -> Path:
    """``<home>/bundles``; ``home`` defaults to ``$SCALPEDGE_HOME``, else ``~/.local/state/scalpedge``."""
    return (Path(home) if home else default_state_path().parent) / "bundles"


def read_pointer(root: Path) -> Pointer | None:
    """The pointer in bundles folder ``root``, None when there is none (the device runs the
    bundle its config names); BundleError naming the file when it is damaged."""
    path = root / ACTIVE_NAME
    if not path.exists():
        return None
    try:
        doc = decode_json(read_bounded(path, MAX_POINTER_BYTES), path)
        if doc.get("schema") != POINTER_SCHEMA:
            raise ValueError(f"schema is {doc.get('schema')!r}, expected {POINTER_SCHEMA}")
        previous = BundleRef(**doc["previous"]) if doc.get("previous") else None
        return Pointer(BundleRef(**doc["active"]), previous, doc["reason"], doc.get("rollout_id"), doc["switched_utc"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: damaged ({exc}); delete it to run the configured bundle") from None


def write_pointer(root: Path, pointer: Pointer) -> None:
    """Replace the pointer atomically: a temp file fsync'd, os.replace, the folder fsync'd."""
    doc = {"schema": POINTER_SCHEMA, **asdict(pointer)}
    tmp = root / (ACTIVE_NAME + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / ACTIVE_NAME)
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_active_bundle(
    configured: str | Path,
    trusted_keys: Iterable[str | Path] = (),
    guard_path: str | Path | None = None,
    allow_downgrade: bool = False,
    home: str | Path | None = None,
) -> Bundle:
    """The bundle to run at boot, verified: the pointer's when there is one, else ``configured``.

    A pointer written by a fleet-ordered rollback may name a bundle older than the guard's
    record: that downgrade is allowed (the device ran and recorded that bundle before), and the
    bundle must still have the manifest SHA-256 the pointer recorded. Raises BundleError
    (BundleNotFound for a missing folder) like ``Bundle.open``.
    """
    pointer = read_pointer(bundles_root(home))
    guard_file = Path(guard_path) if guard_path else default_state_path()
    if pointer is None:
        return Bundle.open(configured, trusted_keys, RollbackGuard(guard_file, allow_downgrade))
    rolled_back = pointer.reason == "rollback"
    bundle = Bundle.open(pointer.active.path, trusted_keys, RollbackGuard(guard_file, allow_downgrade or rolled_back))
    if bundle.manifest_sha256 != pointer.active.manifest_sha256:
        raise BundleError(
            f"{bundle.root}: not the bundle {bundles_root(home) / ACTIVE_NAME} switched to (manifest differs)"
        )
    return bundle
