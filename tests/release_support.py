"""Signed releases for the rollout tests (``test_rollout``, ``test_rollout_updater``): a release
key made in the test, the shipped segmenter re-signed as a newer release, and the fleet's bundle
server with one tampering mirror."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from device.assets import default_bundle_path
from export.bundle import generate_key, sign_bundle
from fleet.bundle_server import BundleServer, StagedBundle, stage_bundle

NEW = "2099.12.1.900"  # newer than the shipped bundle


def make_keys(tmp_path: Path) -> tuple[Path, Path]:
    """A release key made here: (private PEM, folder holding its public key, which devices trust)."""
    private, public = tmp_path / "keys" / "release.pem", tmp_path / "trusted" / "release.pem"
    generate_key(private, public)
    return private, public.parent


def slim_release(tmp_path: Path, private: Path, version: str = NEW) -> Path:
    """The shipped bundle's segmenter alone, as release ``version``, signed with ``private``."""
    src, out = default_bundle_path(), tmp_path / f"release-{version}"
    out.mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    segmenter = manifest["models"]["segmenter"]
    manifest.update(bundle_version=version, models={"segmenter": segmenter})
    for variant in segmenter["variants"]:
        shutil.copyfile(src / variant["file"], out / variant["file"])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(out, private)
    return out


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


class TamperingServer(BundleServer):
    """The fleet's bundle server, but one device gets a copy of a file with one flipped byte (a
    corrupted mirror or a man in the middle); it also records who fetched what."""

    def __init__(self, root: Path, victim: str, tampered: dict[str, Path]) -> None:
        super().__init__(root, "127.0.0.1", 0)
        self.victim, self.tampered = victim, tampered
        self.fetched: list[tuple[str | None, str]] = []

    def resolve(self, version: str, name: str, device: str | None) -> Path | None:
        self.fetched.append((device, name))
        if device == self.victim and name in self.tampered:
            return self.tampered[name]
        return super().resolve(version, name, device)


def serve_release(tmp_path: Path, private: Path) -> Iterator[tuple[TamperingServer, StagedBundle]]:
    """``slim_release`` staged and served (nobody's copy tampered) while the generator is open."""
    staged = stage_bundle(slim_release(tmp_path, private), tmp_path / "served")
    server = TamperingServer(tmp_path / "served", "nobody", {}).start()
    yield server, staged
    server.stop()
