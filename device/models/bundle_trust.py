"""Who may sign a bundle: trusted Ed25519 keys, signed key-revocation lists, signature checks.

Trusted public keys are PEM files: the package's ``assets/keys/*.pem``, folders or files in
``$SCALPEDGE_TRUSTED_KEYS`` (os.pathsep-separated) and the caller's extra sources. In the same
folders, ``*.revocations.json`` files are **revocation lists** (``revocation-1.schema.json``)::

    {"schema": "scalpedge.revocations/1", "list_version": 1, "issued_utc": "...",
     "revoked": [{"key_id": "d34704f2bd57b670", "reason": "superseded by 9ca7acde371fe870"}],
     "signature": {"algorithm": "ed25519", "key_id": ..., "signature": base64}}

signed (``signature``) over ``canonical_json`` of the document without its signature, by a
trusted key. Every list found must verify and its signer must not itself be revoked, or the
bundle is refused (a list nobody can vouch for is never silently skipped). A key any valid list
names is no longer trusted: bundles it signed are refused, naming the list and the reason.
Lists are written by ``export.bundle.sign_revocations`` (``scalpedge bundle revoke``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from device.contracts.validation import ContractError, validate

__all__ = [
    "MAX_REVOCATION_BYTES",
    "REVOCATIONS_SCHEMA",
    "REVOCATIONS_SUFFIX",
    "TRUSTED_KEYS_ENV",
    "BundleError",
    "BundleFormatError",
    "BundleNotFound",
    "Trust",
    "canonical_json",
    "decode_json",
    "key_id",
    "read_bounded",
    "revocation_files",
    "trusted_key_files",
]

TRUSTED_KEYS_ENV = "SCALPEDGE_TRUSTED_KEYS"
REVOCATIONS_SCHEMA = "scalpedge.revocations/1"
REVOCATIONS_SUFFIX = ".revocations.json"
MAX_REVOCATION_BYTES = 256 << 10  # bytes; a list of every key ever made is a few KiB


class BundleError(RuntimeError):
    """The bundle is malformed, unsigned, signed by an untrusted or revoked key, or altered."""


class BundleFormatError(BundleError, ContractError):
    """manifest.json, signature.json or a revocation list breaks its schema; names the field."""


class BundleNotFound(FileNotFoundError):
    """No bundle at the path: the folder, or its manifest.json, does not exist. Bad input
    (exit code 2, "not found"), not a refusal: deliberately not a ``BundleError``, which means
    a bundle is there and failed verification (exit code 4)."""


def key_id(public_raw: bytes) -> str:
    """Short id of an Ed25519 public key: first 16 hex digits of sha256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The bytes a revocation list's signature covers: sorted keys, no spaces, ASCII."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of plain file ``path``, refused (BundleError) unread when it is missing, not a
    plain file (a FIFO would block) or over ``limit`` bytes; at most limit + 1 bytes are read."""
    if not path.is_file():
        raise BundleError(f"{path}: missing or not a plain file; refused unread")
    size = path.stat().st_size
    if size <= limit:
        with open(path, "rb") as f:
            data = f.read(limit + 1)  # the file may have grown since stat
        size = len(data)
    if size > limit:
        raise BundleError(f"{path}: {size} bytes, more than the {limit}-byte limit; refused unread")
    return data


def decode_json(raw: bytes, path: Path) -> Any:
    """json.loads that raises BundleError naming ``path``."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bytes that are not UTF-8, deep nesting
        raise BundleError(f"{path}: not valid JSON: {exc}") from exc


def _sources(extra: Iterable[str | Path]) -> list[Path]:
    from device.assets import ASSETS

    env = os.environ.get(TRUSTED_KEYS_ENV, "")
    return [ASSETS / "keys", *(Path(p) for p in env.split(os.pathsep) if p), *(Path(p) for p in extra)]


def trusted_key_files(extra: Iterable[str | Path] = ()) -> list[Path]:
    """PEM public keys the device trusts: the package's ``assets/keys/*.pem``, folders or files
    in ``$SCALPEDGE_TRUSTED_KEYS`` (os.pathsep-separated), and ``extra`` (a ``.json`` file
    there is a revocation list, not a key)."""
    found: list[Path] = []
    for src in _sources(extra):
        if src.is_dir():
            found += sorted(src.glob("*.pem"))
        elif src.is_file() and src.suffix != ".json":
            found.append(src)
    return found


def revocation_files(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Revocation lists: ``*.revocations.json`` in the trusted-key folders, and ``.json`` files
    named directly in ``$SCALPEDGE_TRUSTED_KEYS`` or ``extra``."""
    found: list[Path] = []
    for src in _sources(extra):
        if src.is_dir():
            found += sorted(src.glob(f"*{REVOCATIONS_SUFFIX}"))
        elif src.is_file() and src.suffix == ".json":
            found.append(src)
    return found


def _load_public_keys(files: Iterable[Path]) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    keys: dict[str, Any] = {}
    for path in files:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except ValueError as exc:
            raise BundleError(f"trusted key {path} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise BundleError(f"trusted key {path} is not an Ed25519 key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys[key_id(raw)] = key
    return keys


class Trust:
    """The keys that may sign, less the revoked ones. ``load`` reads and checks every
    revocation list; ``verify`` checks one signature."""

    def __init__(self, keys: Mapping[str, Any], revoked: Mapping[str, str]) -> None:
        self.keys = dict(keys)  # key id -> Ed25519PublicKey
        self.revoked = dict(revoked)  # key id -> "reason (list file)"

    @classmethod
    def load(cls, extra: Iterable[str | Path] = ()) -> Trust:
        """Trusted keys and revocation lists from the package, the environment and ``extra``."""
        try:
            import cryptography  # noqa: F401
        except ImportError:
            raise BundleError("verifying a bundle needs the cryptography package: pip install -e '.[device]'") from None
        extra = list(extra)
        unrevoked = cls(_load_public_keys(trusted_key_files(extra)), {})
        lists = []
        for path in revocation_files(extra):
            doc = decode_json(read_bounded(path, MAX_REVOCATION_BYTES), path)
            validate("revocation", doc, BundleFormatError, source=str(path))
            body = {k: v for k, v in doc.items() if k != "signature"}
            lists.append((path, unrevoked.verify(canonical_json(body), doc["signature"], path, path), doc))
        revoked = {e["key_id"]: f"{e['reason']} ({path.name})" for path, _, doc in lists for e in doc["revoked"]}
        for path, signer, _ in lists:
            if signer in revoked:
                raise BundleError(f"{path}: signed by key {signer}, which is revoked: {revoked[signer]}")
        return cls(unrevoked.keys, revoked)

    def verify(self, signed: bytes, signature: Mapping[str, Any], sig_path: Path, doc_path: Path) -> str:
        """Check ``signature`` (signature-1.schema.json, read from ``sig_path``) over the bytes
        ``signed`` (of ``doc_path``); returns the signer's key id, or raises BundleError."""
        from cryptography.exceptions import InvalidSignature

        validate("signature", signature, BundleFormatError, source=str(sig_path))
        kid = signature["key_id"]
        if kid in self.revoked:
            raise BundleError(f"{sig_path}: signed by key {kid}, which is revoked: {self.revoked[kid]}")
        if kid not in self.keys:
            raise BundleError(
                f"{sig_path}: signed by key {kid}, which is not trusted (trusted: {sorted(self.keys) or 'none'})"
            )
        try:
            self.keys[kid].verify(base64.b64decode(signature["signature"], validate=True), signed)
        except InvalidSignature:
            raise BundleError(f"{doc_path}: signature does not match: altered or signed by another key") from None
        return str(kid)
