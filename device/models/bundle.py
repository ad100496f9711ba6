"""The signed model bundle, as the device reads it: verify, then pick a model variant.

A bundle is a directory::

    manifest.json    what each model is (files, sha256, I/O, precision, preprocessing, ...)
    signature.json   {"algorithm": "ed25519", "key_id": ..., "signature": base64}
                     over the exact bytes of manifest.json
    *.onnx           the model files the manifest names

``Bundle.open`` checks the signature against the trusted public keys, the manifest against
``manifest-1.schema.json`` (``BundleFormatError`` naming the field), then every file's size and
sha256; any mismatch raises ``BundleError`` naming the file. Nothing is loaded from a bundle
that failed. The server side that writes bundles is ``export.bundle``; the format
constants live here so both sides share one definition.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.contracts.validation import ContractError, validate

__all__ = [
    "BUNDLE_SCHEMA",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "TARGETS",
    "BundleError",
    "BundleFormatError",
    "Bundle",
    "ModelVariant",
    "key_id",
    "sha256_file",
    "trusted_key_files",
]

BUNDLE_SCHEMA = "scalpedge.bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "signature.json"
# Runtimes a variant can be built for: ONNX Runtime on a CPU, or a TensorRT engine on a Jetson.
TARGETS = ("onnxruntime-cpu", "tensorrt")
TRUSTED_KEYS_ENV = "SCALPEDGE_TRUSTED_KEYS"


class BundleError(RuntimeError):
    """The bundle is malformed, unsigned, signed by an untrusted key, or a file was altered."""


class BundleFormatError(BundleError, ContractError):
    """manifest.json or signature.json breaks its schema; the message names the field."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def key_id(public_raw: bytes) -> str:
    """Short id of an Ed25519 public key: first 16 hex digits of sha256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def trusted_key_files(extra: Iterable[str | Path] = ()) -> list[Path]:
    """PEM public keys the device trusts: the package's ``assets/keys/*.pem``, folders or files
    in ``$SCALPEDGE_TRUSTED_KEYS`` (os.pathsep-separated), and ``extra``."""
    from device.assets import ASSETS

    sources: list[Path] = [ASSETS / "keys"]
    env = os.environ.get(TRUSTED_KEYS_ENV, "")
    sources += [Path(p) for p in env.split(os.pathsep) if p]
    sources += [Path(p) for p in extra]
    found: list[Path] = []
    for src in sources:
        if src.is_dir():
            found += sorted(src.glob("*.pem"))
        elif src.is_file():
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

    def __init__(self, root: Path, manifest: dict[str, Any], signer: str) -> None:
        self.root = root
        self.manifest = manifest
        self.signer = signer

    @classmethod
    def open(cls, root: str | Path, trusted_keys: Iterable[str | Path] = ()) -> Bundle:
        """Verify ``root`` (signature, then each file's size and sha256) and return it.

        trusted_keys: extra PEM files or folders to trust besides the package's own keys.
        Raises BundleError naming the offending file.
        """
        root = Path(root)
        manifest_path = root / MANIFEST_NAME
        sig_path = root / SIGNATURE_NAME
        for path in (manifest_path, sig_path):
            if not path.is_file():
                raise BundleError(f"{path}: missing (not a model bundle?)")
        raw = manifest_path.read_bytes()
        signer = _verify_signature(raw, sig_path, trusted_key_files(trusted_keys))
        try:
            manifest = json.loads(raw)
        except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
            raise BundleError(f"{manifest_path}: not valid JSON: {exc}") from exc
        validate("manifest", manifest, BundleFormatError, source=str(manifest_path))
        bundle = cls(root, manifest, signer)
        for variant in bundle.variants():
            _verify_file(variant.path, variant.sha256, bundle._variant_entry(variant)["bytes"])
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


def _inside(root: Path, name: str) -> Path:
    """root/name, refusing names that would leave the bundle folder."""
    path = (root / name).resolve()
    if path.parent != root.resolve():
        raise BundleError(f"{root / MANIFEST_NAME}: file name {name!r} points outside the bundle")
    return path


def _verify_file(path: Path, sha256: str, size: int) -> None:
    if not path.is_file():
        raise BundleError(f"{path}: listed in the manifest but missing")
    if path.stat().st_size != size:
        raise BundleError(f"{path}: size {path.stat().st_size} bytes, manifest says {size}: file altered")
    digest = sha256_file(path)
    if digest != sha256:
        raise BundleError(f"{path}: sha256 {digest[:16]}… does not match the manifest ({sha256[:16]}…): file altered")


def _verify_signature(manifest_raw: bytes, sig_path: Path, key_files: list[Path]) -> str:
    """Check signature.json over the manifest bytes; returns the signer's key id."""
    try:
        from cryptography.exceptions import InvalidSignature
    except ImportError:
        raise BundleError("verifying a bundle needs the cryptography package: pip install -e '.[device]'") from None

    try:
        sig = json.loads(sig_path.read_bytes())
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise BundleError(f"{sig_path}: malformed signature file: {exc}") from exc
    validate("signature", sig, BundleFormatError, source=str(sig_path))
    kid = sig["key_id"]
    signature = base64.b64decode(sig["signature"], validate=True)
    keys = _load_public_keys(key_files)
    if kid not in keys:
        raise BundleError(f"{sig_path}: signed by key {kid}, which is not trusted (trusted: {sorted(keys) or 'none'})")
    try:
        keys[kid].verify(signature, manifest_raw)
    except InvalidSignature:
        raise BundleError(
            f"{sig_path.parent / MANIFEST_NAME}: signature does not match: manifest altered or signed by another key"
        ) from None
    return kid
