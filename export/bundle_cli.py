"""``scalpedge bundle keygen|build|unpack|revoke|verify|info``: make, check and describe signed
model bundles and key-revocation lists.

verify and info run on the device (they need only the `device` extra); build needs the onnx
package (the `train` extra) to read graph I/O. ``verify --state FILE`` also checks a bundle
against a device's rollback record (without changing it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

__all__ = ["register"]

if TYPE_CHECKING:
    from device.models.bundle import Bundle


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bundle", help="signed model bundles: keygen, build, unpack, revoke, verify, info")
    bsub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    k = bsub.add_parser("keygen", help="make an Ed25519 signing key pair (PEM)")
    k.add_argument("--private", required=True, help="private key file to create (kept off devices and out of git)")
    k.add_argument("--public", required=True, help="public key file (install in device/assets/keys/ to trust it)")
    k.set_defaults(func=_run_keygen)
    b = bsub.add_parser("build", help="pack model cards into a signed bundle folder")
    b.add_argument("dir", help="output folder (absent or empty)")
    b.add_argument("--card", nargs="+", action="extend", required=True, help="model card JSON files (repeatable)")
    b.add_argument("--key", required=True, help="Ed25519 private key (PEM)")
    b.add_argument(
        "--version", type=_version, help="bundle version, dotted integers (default: UTC date and time, 2026.11.29.1625)"
    )
    b.set_defaults(func=_run_build)
    u = bsub.add_parser("unpack", help="verify a bundle and write its model cards and files (to update or re-sign)")
    u.add_argument("dir", help="bundle folder")
    u.add_argument("out", help="output folder (absent or empty)")
    u.add_argument("--trust", nargs="*", default=[], help="extra trusted public keys (PEM files or folders)")
    u.set_defaults(func=_run_unpack)
    r = bsub.add_parser("revoke", help="write a signed key-revocation list (*.revocations.json)")
    r.add_argument("out", help="list file to write; ship it in device/assets/keys/ (name ends in .revocations.json)")
    r.add_argument("--key", required=True, help="Ed25519 private key of a trusted key that stays valid (PEM)")
    r.add_argument(
        "--revoke", nargs="+", action="extend", required=True, metavar="KEY_ID=REASON", help="key ids to revoke"
    )
    r.add_argument("--list-version", type=int, required=True, help="higher than the list it replaces")
    r.set_defaults(func=_run_revoke)
    for name, helptext, func in (
        ("verify", "check signature and every file hash; exit 4 on any mismatch (REFUSED)", _run_verify),
        ("info", "verify, then describe the bundle's models and variants", _run_info),
    ):
        q = bsub.add_parser(name, help=helptext)
        q.add_argument("dir", help="bundle folder")
        q.add_argument("--trust", nargs="*", default=[], help="extra trusted public keys (PEM files or folders)")
        q.add_argument("--json", action="store_true", help="print JSON")
        q.add_argument("--state", help="a device's rollback record (bundle-state.json): refuse an older bundle")
        q.add_argument("--allow-downgrade", action="store_true", help="with --state: accept an older bundle")
        q.set_defaults(func=func)


def _version(text: str) -> str:
    from device.models.bundle import BundleError, compare_versions

    try:
        compare_versions(text, text)
    except BundleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _run_keygen(args: argparse.Namespace) -> int:
    from export.bundle import generate_key

    kid = generate_key(args.private, args.public)
    print(f"key {kid}: private {args.private}, public {args.public}")
    return 0


def _run_build(args: argparse.Namespace) -> int:
    from export.bundle import build_bundle
    from export.release import command_line, git_commit

    command = command_line()
    path = build_bundle(
        args.dir, args.card, args.key, version=args.version, provenance={"git_commit": git_commit(), "command": command}
    )
    print(f"wrote {path}")
    return 0


def _run_unpack(args: argparse.Namespace) -> int:
    from export.bundle import unpack_bundle

    cards = unpack_bundle(args.dir, args.out, trusted_keys=args.trust)  # a refused bundle: exit 4 (cli.main)
    for card in cards:
        print(f"wrote {card}")
    return 0


def _run_revoke(args: argparse.Namespace) -> int:
    from export.bundle import sign_revocations

    revoked = dict(item.partition("=")[::2] for item in args.revoke)
    # a bad key id (ContractError) or the signer revoking itself: ValueError, exit 2 (cli.main)
    path = sign_revocations(args.out, revoked, args.key, args.list_version)
    print(f"wrote {path}: revokes {', '.join(sorted(revoked))}")
    return 0


def _open(args: argparse.Namespace) -> Bundle:
    """The verified bundle; a refused one raises BundleError (exit 4, ``model bundle REFUSED: ...``)."""
    from device.models.bundle import Bundle, RollbackGuard

    guard = RollbackGuard(Path(args.state), args.allow_downgrade, record=False) if args.state else None
    return Bundle.open(args.dir, trusted_keys=args.trust, guard=guard)


def _run_verify(args: argparse.Namespace) -> int:
    bundle = _open(args)
    files = bundle.variants()
    if args.json:
        print(json.dumps({"ok": True, "signer": bundle.signer, "files": [v.path.name for v in files]}))
    else:
        print(f"OK: {Path(args.dir)} version {bundle.version}, signed by {bundle.signer}, {len(files)} files verified")
    return 0


def _run_info(args: argparse.Namespace) -> int:
    bundle = _open(args)
    if args.json:
        print(json.dumps(bundle.manifest, indent=2))
        return 0
    print(f"bundle {bundle.version} ({bundle.manifest.get('created_utc')}), signed by {bundle.signer}")
    for name in bundle.models:
        entry = bundle.model(name)
        print(f"  {name} ({entry.get('task', '?')}); preferred {entry.get('preferred', {})}")
        for v in bundle.variants(name):
            ev = next((x.get("evaluation", {}) for x in entry["variants"] if x["file"] == v.path.name), {})
            io = ", ".join(f"{k} {'x'.join(map(str, d['shape']))} {d['dtype']}" for k, d in v.inputs.items())
            print(f"    {v.path.name}: {v.precision} for {', '.join(v.targets)}; in: {io}; {ev}")
        for r in entry.get("refused", []):
            print(f"    refused {r['recipe']}: {r['gate']}")
    return 0
