"""The signed model bundle, as the device reads it: verify, then pick a model variant.

A bundle is a directory::

    manifest.json    what each model is (files, sha256, I/O, precision, preprocessing, ...)
    signature.json   {"algorithm": "ed25519", "key_id": ..., "signature": base64}
                     over the exact bytes of manifest.json
    *.onnx           the model files the manifest names

and nothing else: any other entry (a file, a hidden file, a folder, a symlink) is refused, so
nothing unsigned rides along. ``Bundle.open`` reads manifest.json and signature.json only as
plain files within ``MAX_MANIFEST_BYTES`` / ``MAX_SIGNATURE_BYTES``; checks the signature
against the trusted keys less any a signed revocation list revokes
(``device.models.bundle_trust``), the manifest against ``manifest-1.schema.json``
(``BundleFormatError`` naming the field), the folder for unlisted entries, every file's size
and sha256, and, given a ``RollbackGuard``, that the bundle is not older than the newest one
the device has accepted. Any failure raises ``BundleError`` naming the file; nothing is loaded
from a bundle that failed. A path with no bundle at all (no such folder, or no manifest.json in
it) raises ``BundleNotFound`` (a ``FileNotFoundError``) before anything is verified: a wrong
path is bad input, not tampering. The server side that writes bundles is ``export.bundle``; the
format constants live here so both sides share one definition.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.contracts.validation import validate
from device.models.bundle_trust import (
    BundleError,
    BundleFormatError,
    BundleNotFound,
    Trust,
    decode_json,
    key_id,
    read_bounded,
    trusted_key_files,
)

__all__ = [
    "BUNDLE_SCHEMA",
    "MANIFEST_NAME",
    "MAX_MANIFEST_BYTES",
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE_NAME",
    "TARGETS",
    "BundleError",
    "BundleFormatError",
    "BundleNotFound",
    "Bundle",
    "ModelVariant",
    "RollbackGuard",
    "compare_versions",
    "default_state_path",
    "key_id",
    "sha256_file",
    "trusted_key_files",
]

log = logging.getLogger(__name__)

BUNDLE_SCHEMA = "scalpedge.bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
# Read limits, bytes: the shipped manifest is ~73 KiB for six models; a signature is 168 bytes.
MAX_MANIFEST_BYTES = 4 << 20
MAX_SIGNATURE_BYTES = 4 << 10
# Runtimes a variant can be built for: ONNX Runtime on a CPU, or a TensorRT engine on a Jetson.
TARGETS = ("onnxruntime-cpu", "tensorrt")
_MAX_STATE_BYTES = 4 << 10
_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _version_key(version: str) -> tuple[int, ...]:
    if not _VERSION.fullmatch(version):
        raise BundleError(
            f"bundle version {version!r} is not comparable: rollback protection needs dotted integers "
            "such as 2026.11.29.1625 (the default of `scalpedge bundle build`)"
        )
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:  # 2026.1 == 2026.1.0
        parts.pop()
    return tuple(parts)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as bundle version ``a`` is older than, equal to or newer than ``b``, compared
    as dotted integers ("2026.11.29.1625" > "2026.2.1.0900"). BundleError if either is not."""
    ka, kb = _version_key(a), _version_key(b)
    return (ka > kb) - (ka < kb)


def default_state_path() -> Path:
    """Where the device remembers its newest accepted bundle: ``$SCALPEDGE_HOME/bundle-state.json``,
    else ``~/.local/state/scalpedge/bundle-state.json``."""
    home = os.environ.get("SCALPEDGE_HOME")
    return (Path(home) if home else Path.home() / ".local" / "state" / "scalpedge") / "bundle-state.json"


@dataclass(frozen=True)
class ModelVariant:
    """One file of one model: path (verified), precision ("fp32", "fp16", "int8"), targets it
    is meant for, and its I/O as the manifest declares it ({name: {"shape", "dtype"}})."""

    model: str
    path: Path
    sha256: str
    precision: str
    targets: tuple[str, ...]
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    quantization: dict[str, Any] | None


class Bundle:
    """A verified bundle. ``open`` is the only constructor that callers should use."""

    def __init__(self, root: Path, manifest: dict[str, Any], signer: str, manifest_sha256: str = "") -> None:
        self.root = root
        self.manifest = manifest
        self.signer = signer
        self.manifest_sha256 = manifest_sha256

    @classmethod
    def open(
        cls, root: str | Path, trusted_keys: Iterable[str | Path] = (), guard: RollbackGuard | None = None
    ) -> Bundle:
        """Verify ``root`` (sizes of the JSON files, signature and revocations, schema, unlisted
        entries, each file's size and sha256, then ``guard``'s rollback check) and return it.

        trusted_keys: extra PEM files or folders (and revocation lists) besides the package's.
        guard: the device's record of the newest bundle it accepted (None: no rollback check).
        Raises BundleNotFound when there is no bundle at ``root``, else BundleError naming the
        offending file.
        """
        root = Path(root)
        manifest_path = root / MANIFEST_NAME
        sig_path = root / SIGNATURE_NAME
        _require_bundle_folder(root)
        raw = read_bounded(manifest_path, MAX_MANIFEST_BYTES)
        sig = decode_json(read_bounded(sig_path, MAX_SIGNATURE_BYTES), sig_path)
        signer = Trust.load(trusted_keys).verify(raw, sig, sig_path, manifest_path)
        manifest = decode_json(raw, manifest_path)
        validate("manifest", manifest, BundleFormatError, source=str(manifest_path))
        bundle = cls(root, manifest, signer, hashlib.sha256(raw).hexdigest())
        variants = bundle.variants()
        unlisted = _unlisted(root, {MANIFEST_NAME, SIGNATURE_NAME} | {v.path.name for v in variants})
        if unlisted:
            raise BundleError(
                f"{root}: unlisted entries in a signed bundle: {', '.join(unlisted)} (a bundle holds only "
                f"{MANIFEST_NAME}, {SIGNATURE_NAME} and the files its manifest lists, as plain files)"
            )
        for variant in variants:
            _verify_file(variant.path, variant.sha256, bundle._variant_entry(variant)["bytes"])
        if guard is not None:
            guard.admit(bundle)
        return bundle

    @property
    def version(self) -> str:
        return str(self.manifest["bundle_version"])

    @property
    def models(self) -> list[str]:
        return sorted(self.manifest["models"])

    def model(self, name: str) -> dict[str, Any]:
        """The manifest entry of model ``name`` (preprocessing, thresholds, class names, ...)."""
        try:
            entry: dict[str, Any] = self.manifest["models"][name]
        except KeyError:
            raise BundleError(f"bundle {self.root} has no model {name!r} (has {self.models})") from None
        return entry

    def variants(self, model: str | None = None) -> list[ModelVariant]:
        """Every packed file (of ``model`` when given)."""
        names = [model] if model else self.models
        out = []
        for name in names:
            for v in self.model(name)["variants"]:
                out.append(
                    ModelVariant(
                        model=name,
                        path=_inside(self.root, v["file"]),
                        sha256=v["sha256"],
                        precision=v["precision"],
                        targets=tuple(v["targets"]),
                        inputs=v["inputs"],
                        outputs=v["outputs"],
                        quantization=v.get("quantization"),
                    )
                )
        return out

    def select(self, model: str, target: str = "onnxruntime-cpu", precision: str = "auto") -> ModelVariant:
        """The variant of ``model`` to run on ``target``.

        precision "auto" takes the manifest's ``preferred[target]`` (the fastest variant that
        passed its accuracy gate); "fp32"/"int8" ask for that precision among the variants made
        for ``target``.
        """
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; choose from {TARGETS}")
        candidates = [v for v in self.variants(model) if target in v.targets]
        if precision == "auto":
            preferred = self.model(model).get("preferred", {}).get(target)
            chosen = [v for v in candidates if v.path.name == preferred] or candidates[:1]
        else:
            chosen = [v for v in candidates if v.precision == precision]
        if not chosen:
            have = [(v.path.name, v.precision, v.targets) for v in self.variants(model)]
            raise BundleError(f"bundle {self.root}: no {precision} variant of {model!r} for {target} (has {have})")
        return chosen[0]

    def _variant_entry(self, variant: ModelVariant) -> dict[str, Any]:
        for v in self.model(variant.model)["variants"]:
            if v["file"] == variant.path.name:
                entry: dict[str, Any] = v
                return entry
        raise BundleError(f"{variant.path}: not in the manifest")


def _require_bundle_folder(root: Path) -> None:
    """BundleNotFound unless ``root`` is a folder with a manifest.json entry (of any kind: one
    that is not a plain file is then refused by the verification, not called missing)."""
    if not root.exists():
        raise BundleNotFound(f"{root}: model bundle not found (no such folder)")
    if not root.is_dir():
        raise BundleNotFound(f"{root}: model bundle not found (a file; a bundle is a folder holding {MANIFEST_NAME})")
    if not os.path.lexists(root / MANIFEST_NAME):
        raise BundleNotFound(f"{root}: model bundle not found (no {MANIFEST_NAME} in this folder)")


def _inside(root: Path, name: str) -> Path:
    """root/name, refusing names that would leave the bundle folder."""
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise BundleError(f"{root / MANIFEST_NAME}: file name {name!r} points outside the bundle")
    return path


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    """Entries of ``root`` that are not a listed name as a plain file (folders end in "/")."""
    with os.scandir(root) as entries:
        return sorted(
            e.name + ("/" if e.is_dir(follow_symlinks=False) else "")
            for e in entries
            if not (e.name in listed and e.is_file(follow_symlinks=False))
        )


def _verify_file(path: Path, sha256: str, size: int) -> None:
    if not path.is_file():
        raise BundleError(f"{path}: listed in the manifest but missing")
    if path.stat().st_size != size:
        raise BundleError(f"{path}: size {path.stat().st_size} bytes, manifest says {size}: file altered")
    digest = sha256_file(path)
    if digest != sha256:
        raise BundleError(f"{path}: sha256 {digest[:16]}… does not match the manifest ({sha256[:16]}…): file altered")


@dataclass(frozen=True)
class RollbackGuard:
    """Rollback protection: ``path`` is a small JSON file holding the newest bundle version the
    device has accepted (``highest_bundle_version``, with its signer and manifest sha256).
    ``admit`` refuses an older bundle, or one whose version is not comparable, unless
    ``allow_downgrade``; it never lowers the record. record=False checks without writing
    (``scalpedge bundle verify --state``)."""

    path: Path
    allow_downgrade: bool = False
    record: bool = True

    def highest(self) -> str | None:
        """The newest accepted version, None before the first; BundleError if the file is damaged."""
        if not self.path.exists():
            return None
        try:
            state = json.loads(read_bounded(self.path, _MAX_STATE_BYTES))
            version = state["highest_bundle_version"]
            _version_key(version)
        except (BundleError, ValueError, TypeError, KeyError) as exc:
            raise BundleError(
                f"{self.path}: damaged ({exc}); allow_downgrade accepts the bundle and rewrites it"
            ) from None
        return str(version)

    def admit(self, bundle: Bundle) -> None:
        """Raise BundleError if ``bundle`` is older than the newest accepted one (or its version
        is not comparable) and downgrades are not allowed; record it when it is newer."""
        try:
            highest = self.highest()
            order = compare_versions(bundle.version, highest or bundle.version)
        except BundleError as exc:
            if not self.allow_downgrade:
                raise BundleError(f"{bundle.root}: {exc}") from None
            log.warning("%s: %s; loading it anyway (allow_downgrade)", bundle.root, exc)
            if _VERSION.fullmatch(bundle.version):
                self._write(bundle)
            return
        if order < 0 and not self.allow_downgrade:
            raise BundleError(
                f"{bundle.root}: bundle version {bundle.version} is older than {highest}, the newest this device "
                f"has accepted ({self.path}); refused as a rollback (set allow_downgrade to load it)"
            )
        if order < 0:
            log.warning("%s: downgrade from %s to %s allowed", bundle.root, highest, bundle.version)
        elif highest is None or order > 0:
            self._write(bundle)

    def _write(self, bundle: Bundle) -> None:
        if not self.record:
            return
        state = {
            "highest_bundle_version": bundle.version,
            "signer": bundle.signer,
            "manifest_sha256": bundle.manifest_sha256,
            "accepted_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(state, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
