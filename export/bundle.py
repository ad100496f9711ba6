"""Pack models into a signed bundle (server side). The device reads it with ``device.models.bundle``.

Input is one *model card* per model: a JSON file written by export or calibration that says
what the model is and lists its files::

    {"name": "segmenter", "task": "hair-segmentation",
     "preprocessing": {...}, "thresholds": {...}, "class_names": null,
     "provenance": {...}, "evaluation": {...},
     "variants": [{"file": "segmenter.onnx", "precision": "fp32",
                   "targets": ["onnxruntime-cpu", "tensorrt"], "quantization": null,
                   "evaluation": {...}}, ...],
     "preferred": {"onnxruntime-cpu": "segmenter.onnx", "tensorrt": "segmenter.onnx"},
     "refused": [...]}

Cards follow ``device/contracts/schemas/card-1.schema.json``. Variant files are found next to
their card. ``build_bundle`` copies them, reads each graph's I/O names, shapes and dtypes from
the ONNX itself, hashes every file, checks the manifest against ``manifest-1.schema.json``,
writes it and signs its exact bytes with Ed25519. ``sign_revocations`` writes a signed
key-revocation list (``revocation-1.schema.json``) that devices read beside their trusted keys.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.contracts.validation import validate
from device.models.bundle import (
    BUNDLE_SCHEMA,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    SIGNATURE_NAME,
    BundleError,
    BundleFormatError,
    key_id,
    sha256_file,
)
from device.models.bundle_trust import REVOCATIONS_SCHEMA, canonical_json

__all__ = [
    "generate_key",
    "load_private_key",
    "graph_io",
    "build_bundle",
    "sign_bundle",
    "sign_revocations",
    "unpack_bundle",
]

_BUILT_VARIANT_KEYS = ("sha256", "bytes", "inputs", "outputs")  # added by build_bundle, not part of a card
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16"}


def generate_key(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair as PEM (private file mode 0600); returns the key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    private_path.touch(mode=0o600)
    private_path.write_bytes(pem)
    pub = key.public_key()
    public_path.write_bytes(
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def load_private_key(path: str | Path) -> Any:
    """An Ed25519 private key from a PEM file (unencrypted)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"signing key not found: {path} (make one with `scalpedge bundle keygen`)")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def graph_io(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """({input name: {"shape", "dtype"}}, {output name: ...}) read from the ONNX graph.
    Initialisers listed as inputs (old exporters) are skipped; symbolic dims stay strings."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}

    def describe(values: Any) -> dict[str, Any]:
        out = {}
        for v in values:
            if v.name in inits:
                continue
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
            out[v.name] = {"shape": shape, "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type))}
        return out

    return describe(graph.input), describe(graph.output)


def _read_card(path: Path) -> dict[str, Any]:
    try:
        card: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"model card {path}: {exc}") from exc
    validate("card", card, source=str(path))
    for v in card["variants"]:
        if not (path.parent / v["file"]).is_file():
            raise FileNotFoundError(f"model card {path}: variant file {v['file']} not found next to it")
    return card


def build_bundle(
    out_dir: str | Path,
    cards: list[str | Path],
    private_key: str | Path,
    version: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a signed bundle to ``out_dir`` (created; must be empty or absent) from model cards.
    Returns the manifest path."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; bundles are written to a fresh folder")
    key = load_private_key(private_key)
    read = [(path, _read_card(path)) for path in map(Path, cards)]  # every card checked before writing
    out.mkdir(parents=True, exist_ok=True)
    models: dict[str, Any] = {}
    for card_path, card in read:
        if card["name"] in models:
            raise ValueError(f"two model cards name {card['name']!r}")
        variants = []
        for v in card["variants"]:
            src = card_path.parent / v["file"]
            dst = out / src.name
            if dst.exists():
                raise ValueError(f"two variants would write {dst.name}")
            shutil.copyfile(src, dst)
            inputs, outputs = graph_io(dst)
            variants.append(
                {**v, "file": dst.name, "sha256": sha256_file(dst), "bytes": dst.stat().st_size}
                | {"inputs": inputs, "outputs": outputs}
            )
        models[card["name"]] = {**{k: v for k, v in card.items() if k != "name"}, "variants": variants}
    created = datetime.now(timezone.utc)
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "bundle_version": version or created.strftime("%Y.%m.%d.%H%M"),
        "created_utc": created.isoformat(timespec="seconds"),
        "provenance": provenance or {},
        "models": models,
    }
    manifest_path = out / MANIFEST_NAME
    validate("manifest", manifest, BundleFormatError, source=str(manifest_path))
    text = json.dumps(manifest, indent=2) + "\n"
    if len(text.encode()) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path}: {len(text.encode())} bytes; devices refuse over {MAX_MANIFEST_BYTES}")
    manifest_path.write_text(text)
    sign_bundle(out, key)
    return manifest_path


def sign_bundle(bundle_dir: str | Path, private_key: Any) -> Path:
    """(Re)write signature.json over the exact bytes of bundle_dir/manifest.json."""
    bundle_dir = Path(bundle_dir)
    if isinstance(private_key, (str, Path)):
        private_key = load_private_key(private_key)
    manifest_path = bundle_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing")
    path = bundle_dir / SIGNATURE_NAME
    path.write_text(json.dumps(_signature(private_key, manifest_path.read_bytes()), indent=2) + "\n")
    return path


def _signature(private_key: Any, data: bytes) -> dict[str, str]:
    """signature-1.schema.json over ``data`` with an Ed25519 private key."""
    from cryptography.hazmat.primitives import serialization

    raw_pub = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signature = base64.b64encode(private_key.sign(data)).decode()
    return {"algorithm": "ed25519", "key_id": key_id(raw_pub), "signature": signature}


def sign_revocations(path: str | Path, revoked: Mapping[str, str], private_key: Any, list_version: int) -> Path:
    """Write a key-revocation list to ``path`` (name it ``*.revocations.json``): ``revoked`` maps
    key id -> reason; signed with ``private_key`` (PEM path or key), which must stay trusted and
    must not be in the list. Each new list carries every revocation so far and a higher
    ``list_version``. Returns the path."""
    if isinstance(private_key, (str, Path)):
        private_key = load_private_key(private_key)
    path = Path(path)
    body = {
        "schema": REVOCATIONS_SCHEMA,
        "list_version": list_version,
        "issued_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "revoked": [{"key_id": kid, "reason": reason} for kid, reason in sorted(revoked.items())],
    }
    signature = _signature(private_key, canonical_json(body))
    if signature["key_id"] in revoked:
        raise ValueError(f"{path}: a revocation list cannot revoke the key that signs it")
    doc = {**body, "signature": signature}
    validate("revocation", doc, BundleFormatError, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def unpack_bundle(
    bundle_dir: str | Path, out_dir: str | Path, trusted_keys: list[str | Path] | None = None
) -> list[Path]:
    """Verify a bundle, then write one model card per model (``<name>.card.json``) and copy its
    files into ``out_dir`` (absent or empty). ``build_bundle`` on those cards rebuilds the same
    models: replace one card to update a single model, or re-sign with a rotated key. Returns the
    card paths."""
    from device.models.bundle import Bundle

    bundle = Bundle.open(bundle_dir, trusted_keys=trusted_keys or ())
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; unpack into a fresh folder")
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for name, entry in bundle.manifest["models"].items():
        variants = []
        for v in entry["variants"]:
            shutil.copyfile(bundle.root / v["file"], out / v["file"])
            variants.append({k: val for k, val in v.items() if k not in _BUILT_VARIANT_KEYS})
        card = {"name": name, **{k: val for k, val in entry.items() if k != "variants"}, "variants": variants}
        path = out / f"{name}.card.json"
        validate("card", card, source=str(path))
        path.write_text(json.dumps(card, indent=2) + "\n")
        cards.append(path)
    return cards
