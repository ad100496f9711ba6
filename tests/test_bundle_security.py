"""Bundle hardening (issue 20): unlisted files, rollback, key revocation, bounded manifests.

Every bundle here is built and signed with real Ed25519 test keys by ``export.bundle``; the
release private keys are not in the repository, so revocation lists are signed with test keys.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from device.cli import main
from device.models.bundle import (
    MAX_MANIFEST_BYTES,
    Bundle,
    BundleError,
    RollbackGuard,
    compare_versions,
)
from export.bundle import build_bundle, generate_key, sign_revocations
from tests.test_bundle import _card


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Two test key pairs: "old" (superseded) and "new" (current); public keys in one folder."""
    out = {}
    for name in ("old", "new"):
        private, public = tmp_path / "private" / f"{name}.pem", tmp_path / "trusted" / f"{name}.pem"
        generate_key(private, public)
        out[name] = (private, public)
    return out


def _build(tmp_path: Path, key: Path, version: str, name: str = "bundle") -> Path:
    out = tmp_path / name
    build_bundle(out, [_card(tmp_path / f"cards-{name}")], key, version=version)
    return out


def _key_id(public: Path) -> str:
    from cryptography.hazmat.primitives import serialization

    from device.models.bundle import key_id

    key = serialization.load_pem_public_key(public.read_bytes())
    return key_id(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


# 1. Unlisted files --------------------------------------------------------------------------


@pytest.mark.parametrize("extra", ["evil.onnx", "evil.py", ".hidden", "sub/"])
def test_unlisted_file_in_a_signed_bundle_is_refused(tmp_path: Path, keys, capsys, extra: str) -> None:
    bundle = _build(tmp_path, keys["new"][0], "2026.1.1.1")
    trust = str(tmp_path / "trusted")
    if extra.endswith("/"):
        (bundle / extra).mkdir()
        (bundle / extra / "payload.onnx").write_bytes(b"x")
    else:
        shutil.copyfile(bundle / "segmenter.onnx", bundle / extra)
    name = extra.rstrip("/")
    with pytest.raises(BundleError, match=rf"unlisted .*{name}"):
        Bundle.open(bundle, trusted_keys=[trust])
    assert main(["bundle", "verify", str(bundle), "--trust", trust]) == 4
    assert "REFUSED" in capsys.readouterr().err
    shutil.rmtree(bundle / name) if extra.endswith("/") else (bundle / name).unlink()
    assert Bundle.open(bundle, trusted_keys=[trust]).version == "2026.1.1.1"  # clean again: opens


def test_the_shipped_bundle_holds_only_listed_files_and_a_comparable_version(tmp_path: Path) -> None:
    from device.assets import default_bundle_path

    bundle = Bundle.open(default_bundle_path(), guard=RollbackGuard(tmp_path / "state.json"))
    listed = {v.path.name for v in bundle.variants()} | {"manifest.json", "signature.json"}
    assert {p.name for p in default_bundle_path().iterdir()} == listed
    assert json.loads((tmp_path / "state.json").read_text())["highest_bundle_version"] == bundle.version


# 2. Rollback ---------------------------------------------------------------------------------


def test_versions_compare_as_dotted_integers() -> None:
    assert compare_versions("2026.11.29.1625", "2026.11.29.1625") == 0
    assert compare_versions("2026.11.29.1625", "2026.2.1.0000") == 1  # 11 > 2, not "1" < "2"
    assert compare_versions("2026.11.29.1625", "2026.11.29.1625.1") == -1
    assert compare_versions("2026.01.02", "2026.1.2") == 0
    with pytest.raises(BundleError, match="not comparable"):
        compare_versions("test-1", "2026.1")


def test_an_older_signed_bundle_is_refused_unless_downgrade_is_allowed(tmp_path: Path, keys, capsys) -> None:
    trust = [str(tmp_path / "trusted")]
    state = tmp_path / "state" / "bundle-state.json"
    newer = _build(tmp_path, keys["new"][0], "2026.11.29.1625", "newer")
    older = _build(tmp_path, keys["new"][0], "2026.2.1.900", "older")
    assert Bundle.open(newer, trusted_keys=trust, guard=RollbackGuard(state)).version == "2026.11.29.1625"
    assert json.loads(state.read_text())["highest_bundle_version"] == "2026.11.29.1625"
    with pytest.raises(BundleError, match=r"2026\.2\.1\.900 is older than 2026\.11\.29\.1625.*allow_downgrade"):
        Bundle.open(older, trusted_keys=trust, guard=RollbackGuard(state))
    assert main(["bundle", "verify", str(older), "--trust", *trust, "--state", str(state)]) == 4
    assert "is older than" in capsys.readouterr().err
    # Explicitly allowed: it loads, and the device still remembers the highest version.
    allowed = Bundle.open(older, trusted_keys=trust, guard=RollbackGuard(state, allow_downgrade=True))
    assert allowed.version == "2026.2.1.900"
    assert json.loads(state.read_text())["highest_bundle_version"] == "2026.11.29.1625"
    assert main(["bundle", "verify", str(older), "--trust", *trust, "--state", str(state), "--allow-downgrade"]) == 0
    # The same version re-opens (every boot); without a guard nothing is checked.
    assert Bundle.open(newer, trusted_keys=trust, guard=RollbackGuard(state)).version == "2026.11.29.1625"
    assert Bundle.open(older, trusted_keys=trust).version == "2026.2.1.900"


def test_rollback_guard_refuses_incomparable_versions_and_a_damaged_state(tmp_path: Path, keys) -> None:
    trust = [str(tmp_path / "trusted")]
    state = tmp_path / "bundle-state.json"
    odd = _build(tmp_path, keys["new"][0], "test-1")
    with pytest.raises(BundleError, match="'test-1' is not comparable"):
        Bundle.open(odd, trusted_keys=trust, guard=RollbackGuard(state))
    assert not state.exists()  # nothing recorded for a refused bundle
    state.write_text("{not json")
    good = _build(tmp_path, keys["new"][0], "2026.1.1.1", "good")
    with pytest.raises(BundleError, match="bundle-state.json: damaged"):
        Bundle.open(good, trusted_keys=trust, guard=RollbackGuard(state))
    Bundle.open(good, trusted_keys=trust, guard=RollbackGuard(state, allow_downgrade=True))
    assert json.loads(state.read_text())["highest_bundle_version"] == "2026.1.1.1"  # rewritten


# 3. Key revocation ---------------------------------------------------------------------------


def test_a_bundle_signed_by_a_revoked_key_is_refused(tmp_path: Path, keys, capsys) -> None:
    trusted = tmp_path / "trusted"
    by_old = _build(tmp_path, keys["old"][0], "2026.1.1.1", "by-old")
    by_new = _build(tmp_path, keys["new"][0], "2026.1.1.2", "by-new")
    assert Bundle.open(by_old, trusted_keys=[trusted]).signer == _key_id(keys["old"][1])
    old_id = _key_id(keys["old"][1])
    sign_revocations(trusted / "release.revocations.json", {old_id: "superseded"}, keys["new"][0], list_version=1)
    with pytest.raises(
        BundleError, match=rf"signed by key {old_id}, which is revoked: superseded \(release\.revocations\.json\)"
    ):
        Bundle.open(by_old, trusted_keys=[trusted])
    assert main(["bundle", "verify", str(by_old), "--trust", str(trusted)]) == 4
    assert "revoked" in capsys.readouterr().err
    assert Bundle.open(by_new, trusted_keys=[trusted]).signer == _key_id(keys["new"][1])


def test_a_revocation_list_must_be_signed_by_a_trusted_unrevoked_key(tmp_path: Path, keys) -> None:
    trusted = tmp_path / "trusted"
    by_new = _build(tmp_path, keys["new"][0], "2026.1.1.2")
    new_id, old_id = _key_id(keys["new"][1]), _key_id(keys["old"][1])
    stranger_private, stranger_public = tmp_path / "stranger.pem", tmp_path / "stranger.pub.pem"
    generate_key(stranger_private, stranger_public)
    lists = tmp_path / "lists"
    lists.mkdir()
    # A list by an untrusted key (here revoking the current key) is refused, not obeyed.
    forged = sign_revocations(lists / "forged.revocations.json", {new_id: "x"}, stranger_private, list_version=1)
    with pytest.raises(BundleError, match="forged.revocations.json: signed by key .* not trusted"):
        Bundle.open(by_new, trusted_keys=[trusted, forged])
    # A list changed after signing is refused.
    honest = sign_revocations(lists / "a.revocations.json", {old_id: "superseded"}, keys["new"][0], list_version=1)
    doc = json.loads(honest.read_text())
    doc["revoked"] = []
    tampered = lists / "tampered.revocations.json"
    tampered.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="tampered.revocations.json: signature does not match"):
        Bundle.open(by_new, trusted_keys=[trusted, tampered])
    # A list signed by a key that a valid list revokes does not count: the bundle is refused.
    by_revoked = sign_revocations(lists / "b.revocations.json", {"00" * 8: "x"}, keys["old"][0], list_version=2)
    with pytest.raises(BundleError, match=rf"b.revocations.json: signed by key {old_id}, which is revoked"):
        Bundle.open(by_new, trusted_keys=[trusted, honest, by_revoked])
    # The honest list alone leaves the current key trusted.
    assert Bundle.open(by_new, trusted_keys=[trusted, honest]).signer == new_id


# 5. Bounded manifest -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["manifest.json", "signature.json"])
def test_an_oversized_manifest_is_refused_before_it_is_read(tmp_path: Path, keys, name: str) -> None:
    bundle = _build(tmp_path, keys["new"][0], "2026.1.1.1")
    with open(bundle / name, "r+b") as f:  # 256 MiB, sparse: no time spent writing it
        f.truncate(256 << 20)
    start = time.perf_counter()
    with pytest.raises(BundleError, match=rf"{name}: 268435456 bytes, more than the .* limit"):
        Bundle.open(bundle, trusted_keys=[tmp_path / "trusted"])
    assert time.perf_counter() - start < 1.0
    assert MAX_MANIFEST_BYTES < 256 << 20


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO")
def test_a_manifest_that_is_not_a_plain_file_is_refused(tmp_path: Path, keys) -> None:
    bundle = _build(tmp_path, keys["new"][0], "2026.1.1.1")
    (bundle / "manifest.json").unlink()
    os.mkfifo(bundle / "manifest.json")  # reading it would block forever
    with pytest.raises(BundleError, match="manifest.json: missing"):
        Bundle.open(bundle, trusted_keys=[tmp_path / "trusted"])


def test_cli_revoke_writes_a_list_the_device_obeys(tmp_path: Path, keys, capsys) -> None:
    trusted = tmp_path / "trusted"
    by_old = _build(tmp_path, keys["old"][0], "2026.1.1.1")
    old_id, new_id = _key_id(keys["old"][1]), _key_id(keys["new"][1])
    out = trusted / "release.revocations.json"
    own = ["bundle", "revoke", str(out), "--key", str(keys["new"][0]), "--list-version", "1"]
    assert main([*own, "--revoke", f"{new_id}=oops"]) == 2  # a list may not revoke its own signer
    assert "cannot revoke the key that signs it" in capsys.readouterr().err and not out.exists()
    assert main([*own, "--revoke", f"{old_id}=superseded by {new_id}"]) == 0
    assert main(["bundle", "verify", str(by_old), "--trust", str(trusted)]) == 4
    assert f"signed by key {old_id}, which is revoked: superseded by {new_id}" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a version rollback protection could not compare
        main(["bundle", "build", str(tmp_path / "x"), "--card", "c.json", "--key", "k.pem", "--version", "test-1"])
    assert "is not comparable" in capsys.readouterr().err


def test_device_run_refuses_a_bundle_older_than_the_scanner_accepted(tmp_path: Path, capsys) -> None:
    """``device run`` keeps the rollback record beside its outbox: with a record newer than the
    shipped bundle it exits 4 naming both versions; ``--allow-downgrade`` runs and keeps the record."""
    out = tmp_path / "demo"
    out.mkdir()
    state = out / "bundle-state.json"
    state.write_text(json.dumps({"highest_bundle_version": "2099.1.1.1"}))
    assert main(["device", "run", "--demo", "--out", str(out), "--max-diagnoses", "1"]) == 4
    err = capsys.readouterr().err
    assert "is older than 2099.1.1.1" in err and "allow_downgrade" in err
    assert not (out / "outbox.sqlite").exists()  # refused before anything was stored
    argv = ["device", "run", "--demo", "--out", str(out), "--max-diagnoses", "1", "--allow-downgrade"]
    assert main(argv) == 0
    assert json.loads(state.read_text())["highest_bundle_version"] == "2099.1.1.1"


def test_the_shipped_trust_set_holds_only_the_current_release_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The shipped bundle is signed by scalpedge-release-2026i (82c6793e33ff0986), the only key in
    the package's trusted keys. The earlier keys are retired and revoked by a signed list shipped
    beside it (the private keys of 2026c, 2026d, 2026e, 2026f, 2026g and 2026h were lost with a
    machine's disk or checkout), so a scanner that still trusts one of them (an older install, a key folder in
    $SCALPEDGE_TRUSTED_KEYS) refuses what it signs."""
    from device.assets import default_bundle_path
    from device.models.bundle_trust import Trust, _load_public_keys, trusted_key_files

    monkeypatch.delenv("SCALPEDGE_TRUSTED_KEYS", raising=False)
    assert sorted(_load_public_keys(trusted_key_files())) == ["82c6793e33ff0986"]
    signer = json.loads((default_bundle_path() / "signature.json").read_text())["key_id"]
    assert signer == "82c6793e33ff0986"
    trust = Trust.load()
    revoked = [
        "149733915853b7cf",
        "552128577c8f9cfa",
        "5a1d5c3dc5f1a006",
        "7548c8b1ec095bae",
        "9ca7acde371fe870",
        "9d97e8a58fe36189",
        "b1bfcb76d93eab49",
        "d34704f2bd57b670",
    ]
    assert sorted(trust.revoked) == revoked
    assert "superseded by 82c6793e33ff0986" in trust.revoked["5a1d5c3dc5f1a006"]
    assert "superseded by 5a1d5c3dc5f1a006" in trust.revoked["9d97e8a58fe36189"]
    assert "superseded by 9d97e8a58fe36189" in trust.revoked["552128577c8f9cfa"]
    assert "superseded by 552128577c8f9cfa" in trust.revoked["7548c8b1ec095bae"]
    assert "superseded by 7548c8b1ec095bae" in trust.revoked["b1bfcb76d93eab49"]
    assert "superseded by b1bfcb76d93eab49" in trust.revoked["149733915853b7cf"]
    assert "superseded by 149733915853b7cf" in trust.revoked["9ca7acde371fe870"]
    assert Bundle.open(default_bundle_path()).signer == signer  # the list does not touch the current key
