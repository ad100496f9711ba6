"""Bundles on the fleet server: stage a signed bundle for a rollout and serve its files over HTTP.

``stage_bundle`` copies a bundle folder (manifest.json, signature.json and the files its
manifest lists, each checked against its size and SHA-256) to ``<serve_root>/<version>/``
and returns its version and the SHA-256 of its manifest.json, which the update command
carries: the device refuses a manifest with another digest, and the manifest pins every file's
digest, so one hash names the whole bundle. The fleet does not judge the signature (it holds
no trusted keys): every device verifies it against its own before it fetches a model file.

``BundleServer`` is a small threaded ``http.server`` answering ``GET``/``HEAD`` of
``/bundles/<version>/<file>`` from the staging root (plain files only; anything else is 404;
no listings). It logs each download with the device named by its User-Agent
(``scalpedge-device/<id>``). Integrity does not depend on the transport (every file is checked
on the device), so plain HTTP inside the clinic network is enough; put TLS (a reverse proxy)
in front for confidentiality, or serve the staging root from any static file server or CDN
under the same paths for a large fleet.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import re
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BundleServer", "StagedBundle", "bundle_url", "stage_bundle"]

log = logging.getLogger(__name__)

MANIFEST, SIGNATURE = "manifest.json", "signature.json"
VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,15}")
FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DEVICE_AGENT = re.compile(r"scalpedge-device/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})")


@dataclass(frozen=True)
class StagedBundle:
    """A bundle ready to serve: version, hex SHA-256 of manifest.json, its folder, its files."""

    version: str
    manifest_sha256: str
    folder: Path
    files: tuple[str, ...]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_manifest(bundle_dir: Path) -> tuple[dict[str, Any], bytes]:
    path = bundle_dir / MANIFEST
    if not path.is_file() or not (bundle_dir / SIGNATURE).is_file():
        raise ValueError(f"{bundle_dir}: not a signed bundle (needs {MANIFEST} and {SIGNATURE})")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
        version = manifest["bundle_version"]
        files = {v["file"]: v for model in manifest["models"].values() for v in model["variants"]}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a bundle manifest ({exc})") from None
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise ValueError(f"{path}: bundle_version {version!r}: a rollout needs dotted integers (2026.11.29.1625)")
    for name, entry in files.items():
        if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or name in (MANIFEST, SIGNATURE):
            raise ValueError(f"{path}: file name {name!r} cannot be served")
        src = bundle_dir / name
        if not src.is_file() or src.stat().st_size != entry.get("bytes") or _sha256(src) != entry.get("sha256"):
            raise ValueError(f"{src}: missing or not the file the manifest lists (size or sha256)")
    return {"version": version, "files": sorted(files)}, raw


def stage_bundle(bundle_dir: str | Path, serve_root: str | Path) -> StagedBundle:
    """Copy ``bundle_dir`` to ``<serve_root>/<version>/`` (written beside, then renamed) and
    describe it. A version already staged is reused when its manifest is the same; with another
    manifest it is a ValueError (a release is never replaced under the same version)."""
    bundle_dir, serve_root = Path(bundle_dir), Path(serve_root)
    info, raw = _read_manifest(bundle_dir)
    digest = hashlib.sha256(raw).hexdigest()
    version, files = info["version"], tuple(info["files"])
    dest = serve_root / version
    if dest.exists():
        staged = _sha256(dest / MANIFEST) if (dest / MANIFEST).is_file() else None
        if staged != digest:
            raise ValueError(f"{dest}: version {version} is already staged with another manifest; bump the version")
        return StagedBundle(version, digest, dest, files)
    serve_root.mkdir(parents=True, exist_ok=True)
    tmp = serve_root / f".{version}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        for name in (MANIFEST, SIGNATURE, *files):
            shutil.copyfile(bundle_dir / name, tmp / name)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("rollout: staged bundle %s (manifest sha256 %s) in %s", version, digest[:16], dest)
    return StagedBundle(version, digest, dest, files)


def bundle_url(base_url: str, version: str) -> str:
    """The folder URL of a staged version as devices see it: ``<base_url>/bundles/<version>/``."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url {base_url!r} must start with http:// or https://")
    return f"{base_url.rstrip('/')}/bundles/{version}/"


class BundleServer:
    """Serves ``<root>/<version>/<file>`` as ``/bundles/<version>/<file>`` on ``bind:port``
    (port 0: a free one) from a daemon thread: ``start()``, ``url``, ``stop()``."""

    def __init__(self, root: str | Path, bind: str = "0.0.0.0", port: int = 0) -> None:
        self.root = Path(root)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "scalpedge-bundles/1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._answer(self, body=True)

            def do_HEAD(self) -> None:  # noqa: N802
                server._answer(self, body=False)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
                log.debug("bundles http: " + format, *args)

        self._httpd = http.server.ThreadingHTTPServer((bind, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://<host>:<port>`` (127.0.0.1 when bound to every address)."""
        host = str(self._httpd.server_address[0])
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{self.port}"

    def start(self) -> BundleServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bundle-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5.0)

    def resolve(self, version: str, name: str, device: str | None) -> Path | None:
        """The file to send for ``/bundles/<version>/<name>`` to ``device`` (None: 404). Names
        are checked before this is called; override it to serve from elsewhere."""
        path = self.root / version / name
        return path if path.is_file() and not path.is_symlink() else None

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, body: bool) -> None:
        parts = handler.path.split("?", 1)[0].split("/")
        agent = DEVICE_AGENT.fullmatch(handler.headers.get("User-Agent", ""))
        device = agent.group(1) if agent else None
        path = None
        if len(parts) == 4 and parts[:2] == ["", "bundles"] and VERSION.fullmatch(parts[2]):
            if FILE_NAME.fullmatch(parts[3]):
                path = self.resolve(parts[2], parts[3], device)
        if path is None:
            handler.send_error(404, "no such bundle file")
            return
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the copy
        except OSError:
            handler.send_error(404, "no such bundle file")
            return
        with f:
            size = path.stat().st_size
            handler.send_response(200)
            handler.send_header(
                "Content-Type", "application/json" if path.suffix == ".json" else "application/octet-stream"
            )
            handler.send_header("Content-Length", str(size))
            handler.end_headers()
            if body:
                try:
                    shutil.copyfileobj(f, handler.wfile, 1 << 20)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    log.warning("rollout: %s/%s to %s cut short: %s", parts[2], parts[3], device, exc)
                    return
        log.info(
            "rollout: served %s/%s (%d bytes) to %s", parts[2], parts[3], size, device or handler.client_address[0]
        )
