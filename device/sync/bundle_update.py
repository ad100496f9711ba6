"""Model rollouts on the device: download a signed bundle, verify, self-test, switch, report.

The fleet sends ``update_bundle`` (version, manifest SHA-256, folder URL) or ``rollback_bundle``
(``from_version``) on the ``cmd`` topic; the MQTT link hands it to ``BundleUpdater.submit``, whose
worker thread does the work and publishes one event: ``bundle_switched``, ``bundle_refused``
(the stage and the reason; the old bundle keeps running) or ``bundle_unchanged``. What lives
under ``home`` (``$SCALPEDGE_HOME``, else ``~/.local/state/scalpedge``)::

    bundles/active.json                    the pointer: the bundle to run, the one before it
    bundles/<version>/                     verified bundles: the active one and the one before it
    bundles/.staging-<version>-<random>/   a download in progress (removed at the next start)

An update, in order: manifest.json (at most ``MAX_MANIFEST_BYTES``) must have the announced
SHA-256; signature.json must verify against the trusted keys (less revoked ones) before any
model file is fetched; the version must be the announced one and not older than the newest the
device accepted (``RollbackGuard``, checked here without recording); every listed file is
fetched within its manifest size and checked against its SHA-256 while it streams; then
``Bundle.open`` verifies the whole folder again (no unlisted file), ``self_test`` runs its
segmenter, the folder is renamed to ``bundles/<version>``, ``activate`` hands it to the runtime,
the guard records it and the pointer is replaced (``os.replace``). A tampered, unsigned or
untrusted bundle is never loaded: nothing of it runs before the signature and every hash check.

A rollback goes to the bundle the pointer names as the one before ``from_version`` and only if
that is older: a bundle this device verified and ran before, kept in place, verified again and
required to have the manifest SHA-256 it had then. That is the one downgrade the guard allows
(``device.sync.bundle_pointer.open_active_bundle`` allows it again at boot, for a pointer a
rollback wrote); the guard's record is never lowered, so a fleet cannot make a device load an old
bundle it never ran.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from device.contracts.messages import Command
from device.contracts.validation import validate
from device.models.bundle import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE_NAME,
    Bundle,
    BundleError,
    BundleFormatError,
    RollbackGuard,
    compare_versions,
    default_state_path,
)
from device.models.bundle_trust import Trust, decode_json, read_bounded
from device.sync.bundle_pointer import BundleRef, Pointer, bundles_root, fsync_dir, read_pointer, write_pointer
from device.sync.bundle_selftest import SelfTestError, self_test

__all__ = ["BundleUpdater", "UpdateRefused"]

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
MAX_QUEUED_COMMANDS = 8
SPACE_MARGIN_BYTES = 16 << 20  # left free on the disk besides the bundle's files
_CHUNK = 1 << 20


class UpdateRefused(Exception):
    """An update or rollback was not done; ``stage`` names where it stopped (the event's)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class BundleUpdater:
    """Runs ``update_bundle`` / ``rollback_bundle`` commands for one device, one at a time.

    active: the bundle the device runs now (what ``open_active_bundle`` gave at boot).
    trusted_keys, guard_path: as for ``Bundle.open`` and ``RollbackGuard`` (the same the boot uses).
    activate(bundle): starts using a verified, self-tested bundle (the runtime swaps its
    pipeline and stamps later records with its version); raise to refuse it. Called on the
    updater's thread; None: nothing runs models (``DeviceSync.attach_bundles`` sets one).
    report(event, correlation_data): publishes an event (``MqttLink.publish_event``).
    frames: self-test images (default: the shipped samples). timeout_s: per HTTP request.
    """

    def __init__(
        self,
        device_id: str,
        active: Bundle,
        *,
        home: str | Path | None = None,
        trusted_keys: Iterable[str | Path] = (),
        guard_path: str | Path | None = None,
        activate: Callable[[Bundle], None] | None = None,
        report: Callable[[dict[str, Any], bytes | None], None] | None = None,
        frames: Iterable[str | Path] | None = None,
        timeout_s: float = 30.0,
        max_bundle_bytes: int = 1 << 30,
    ) -> None:
        self.device_id = device_id
        self.root = bundles_root(home)
        self.trusted_keys = [Path(p) for p in trusted_keys]
        self.guard_path = Path(guard_path) if guard_path else default_state_path()
        self.activate = activate
        self.report = report
        self.frames = None if frames is None else [Path(p) for p in frames]
        self.timeout_s = timeout_s
        self.max_bundle_bytes = max_bundle_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._active = active
        pointer = read_pointer(self.root)
        matches = pointer is not None and pointer.active.manifest_sha256 == active.manifest_sha256
        self._previous = pointer.previous if pointer is not None and matches else None
        self._jobs: queue.Queue[Command | None] = queue.Queue(MAX_QUEUED_COMMANDS)
        self._thread: threading.Thread | None = None
        for stale in self.root.glob(STAGING_PREFIX + "*"):  # a download cut short by a crash or power loss
            log.info("bundles: removing an unfinished download %s", stale)
            shutil.rmtree(stale, ignore_errors=True)

    @property
    def active(self) -> Bundle:
        """The bundle in use now."""
        with self._lock:
            return self._active

    # ------------------------------------------------------------------ commands
    def submit(self, command: Command) -> None:
        """Queue a bundle command (from the link's thread; returns at once). With no worker
        thread started it runs here. A full queue refuses it (event ``bundle_refused``)."""
        if self._thread is None:
            self._publish(self.handle(command), command)
            return
        try:
            self._jobs.put_nowait(command)
        except queue.Full:
            refused = UpdateRefused("command", f"{MAX_QUEUED_COMMANDS} bundle commands already queued")
            self._publish(self._refused(command, refused), command)

    def start(self) -> BundleUpdater:
        """Run queued commands on a daemon thread until ``stop``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"bundles-{self.device_id}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish the command in progress, drop the queued ones, stop the thread."""
        if self._thread is None:
            return
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        self._jobs.put(None)
        self._thread.join(timeout_s)
        self._thread = None

    def handle(self, command: Command) -> dict[str, Any]:
        """Run one command now; returns its event (``bundle_switched`` / ``_refused`` / ``_unchanged``)."""
        t0 = time.monotonic()
        try:
            if command.name == "update_bundle":
                event = self._update(command)
            elif command.name == "rollback_bundle":
                event = self._rollback(command)
            else:
                raise UpdateRefused("command", f"not a bundle command: {command.name}")
        except UpdateRefused as exc:
            log.error("bundles: %s refused at %s: %s", command.name, exc.stage, exc.reason)
            return self._refused(command, exc)
        log.info("bundles: %s %s in %.1f s", command.name, event["event"], time.monotonic() - t0)
        return event

    def _run(self) -> None:
        while (command := self._jobs.get()) is not None:
            try:
                self._publish(self.handle(command), command)
            except Exception as exc:  # the worker must outlive any single failure; it is reported
                log.exception("bundles: %s failed", command.name)
                self._publish(self._refused(command, UpdateRefused("switch", f"{type(exc).__name__}: {exc}")), command)

    def _publish(self, event: dict[str, Any], command: Command) -> None:
        if command.request_id is not None:
            event["request_id"] = command.request_id
        if self.report is not None:
            self.report(event, command.correlation_data)

    def _event(self, kind: str, command: Command, version: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"event": kind, "cmd": command.name, "bundle_version": version}
        if command.args.get("rollout_id"):
            body["rollout_id"] = command.args["rollout_id"]
        return body | {"active_bundle_version": self.active.version, **fields}

    def _refused(self, command: Command, exc: UpdateRefused) -> dict[str, Any]:
        version = command.args.get("bundle_version") or command.args.get("from_version") or "unknown"
        return self._event(
            "bundle_refused", command, version, severity="error", stage=exc.stage, reason=exc.reason[:1000]
        )

    # ------------------------------------------------------------------ update
    def _update(self, command: Command) -> dict[str, Any]:
        version, digest, url = (command.args[k] for k in ("bundle_version", "manifest_sha256", "url"))
        active = self.active
        if active.version == version and active.manifest_sha256 == digest:
            return self._event("bundle_unchanged", command, version, reason=f"{version} is already active")
        if active.version == version:  # never replace the running bundle's folder under the same version
            raise UpdateRefused("verify", f"{version} is active with another manifest; a release needs a new version")
        staging = self.root / f"{STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            staged = self._fetch(url, version, digest, staging)
            try:
                summary = self_test(staged, self.frames)
            except SelfTestError as exc:
                raise UpdateRefused("selftest", str(exc)) from None
            log.info("bundles: %s passed its self-test: %s", version, summary)
            final = self.root / version
            if final.exists():  # an earlier copy that is not active (a rollback left it)
                shutil.rmtree(final)
            os.rename(staging, final)
            fsync_dir(self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        try:
            bundle = Bundle.open(final, self.trusted_keys, RollbackGuard(self.guard_path, record=False))
        except BundleError as exc:
            shutil.rmtree(final, ignore_errors=True)
            raise UpdateRefused("verify", str(exc)) from None
        self._switch(bundle, "update", command)
        return self._event("bundle_switched", command, version, previous_bundle_version=active.version)

    def _fetch(self, url: str, version: str, digest: str, staging: Path) -> Bundle:
        """Download into ``staging`` checking as it goes; the verified bundle there, or UpdateRefused."""
        staging.mkdir(parents=True)
        manifest_path, sig_path = staging / MANIFEST_NAME, staging / SIGNATURE_NAME
        got = self._download(url, MANIFEST_NAME, manifest_path, MAX_MANIFEST_BYTES)
        if got != digest:
            raise UpdateRefused("verify", f"{MANIFEST_NAME} has sha256 {got}, the update announced {digest}")
        self._download(url, SIGNATURE_NAME, sig_path, MAX_SIGNATURE_BYTES)
        try:
            raw = read_bounded(manifest_path, MAX_MANIFEST_BYTES)
            sig = decode_json(read_bounded(sig_path, MAX_SIGNATURE_BYTES), sig_path)
            Trust.load(self.trusted_keys).verify(raw, sig, sig_path, manifest_path)  # before any model is fetched
            manifest = decode_json(raw, manifest_path)
            validate("manifest", manifest, BundleFormatError, source=str(manifest_path))
            if manifest["bundle_version"] != version:
                raise BundleError(
                    f"{manifest_path}: version {manifest['bundle_version']}, the update announced {version}"
                )
            highest = RollbackGuard(self.guard_path, record=False).highest()
            if highest is not None and compare_versions(version, highest) < 0:
                raise BundleError(f"version {version} is older than {highest}, the newest this device accepted")
        except BundleError as exc:
            raise UpdateRefused("verify", str(exc)) from None
        files = {v["file"]: v for model in manifest["models"].values() for v in model["variants"]}
        total = sum(int(v["bytes"]) for v in files.values())
        if total > self.max_bundle_bytes:
            raise UpdateRefused(
                "download", f"{total} bytes of model files, more than the {self.max_bundle_bytes} allowed"
            )
        free = shutil.disk_usage(self.root).free
        if free < total + SPACE_MARGIN_BYTES:
            raise UpdateRefused("download", f"needs {total >> 20} MiB and a margin; {free >> 20} MiB free")
        for name, entry in sorted(files.items()):
            if "/" in name or name.startswith(".") or name in (MANIFEST_NAME, SIGNATURE_NAME):
                raise UpdateRefused("verify", f"{manifest_path}: file name {name!r} is not allowed in a bundle")
            got = self._download(url, name, staging / name, int(entry["bytes"]))
            if got != entry["sha256"]:
                raise UpdateRefused("verify", f"{name}: sha256 {got[:16]}… does not match the manifest: file altered")
        try:
            return Bundle.open(staging, self.trusted_keys, RollbackGuard(self.guard_path, record=False))
        except BundleError as exc:
            raise UpdateRefused("verify", str(exc)) from None

    def _download(self, base: str, name: str, dest: Path, limit: int) -> str:
        """GET base + name into ``dest``, at most ``limit`` bytes; returns its hex sha256."""
        url = urllib.parse.urljoin(base, urllib.parse.quote(name))
        request = urllib.request.Request(url, headers={"User-Agent": f"scalpedge-device/{self.device_id}"})
        digest, size = hashlib.sha256(), 0
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response, open(dest, "wb") as out:
                while block := response.read(_CHUNK):
                    size += len(block)
                    if size > limit:
                        raise UpdateRefused("verify", f"{name}: more than the {limit} bytes expected; refused")
                    digest.update(block)
                    out.write(block)
        except urllib.error.HTTPError as exc:
            raise UpdateRefused("download", f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpdateRefused("download", f"{url}: {reason}") from None
        return digest.hexdigest()

    # ------------------------------------------------------------------ rollback
    def _rollback(self, command: Command) -> dict[str, Any]:
        from_version = command.args["from_version"]
        active = self.active
        if active.version != from_version:
            return self._event(
                "bundle_unchanged", command, from_version, reason=f"runs {active.version}, not {from_version}"
            )
        target = self._previous
        if target is None:
            raise UpdateRefused("command", f"no bundle before {from_version} is kept on this device")
        try:
            if compare_versions(target.version, from_version) >= 0:
                raise UpdateRefused("command", f"the bundle before {from_version} is {target.version}, not older")
            # guard=None: the one downgrade allowed, to a bundle this device verified and ran before
            bundle = Bundle.open(target.path, self.trusted_keys)
        except BundleError as exc:
            raise UpdateRefused("verify", str(exc)) from None
        if bundle.manifest_sha256 != target.manifest_sha256:
            raise UpdateRefused("verify", f"{target.path}: manifest differs from the one this device ran")
        self._switch(bundle, "rollback", command)
        return self._event("bundle_switched", command, from_version, previous_bundle_version=active.version)

    # ------------------------------------------------------------------ switch
    def _switch(self, bundle: Bundle, reason: str, command: Command) -> None:
        """Activate ``bundle``, record it with the guard (updates) and replace the pointer; on a
        failure after activation the old bundle is activated again."""
        old = self.active
        try:
            if self.activate is not None:
                self.activate(bundle)
        except Exception as exc:
            if reason == "update":
                shutil.rmtree(bundle.root, ignore_errors=True)
            raise UpdateRefused("activate", f"{type(exc).__name__}: {exc}") from None
        try:
            if reason == "update":
                RollbackGuard(self.guard_path).admit(bundle)
            pointer = Pointer(
                BundleRef.of(bundle), BundleRef.of(old), reason, command.args.get("rollout_id"), _utc_now()
            )
            write_pointer(self.root, pointer)
        except (BundleError, OSError) as exc:
            if self.activate is not None:
                self.activate(old)
            raise UpdateRefused("switch", f"{type(exc).__name__}: {exc}") from None
        with self._lock:
            self._active, self._previous = bundle, pointer.previous
        self._prune({Path(bundle.root).resolve(), Path(old.root).resolve()})
        log.info("bundles: switched %s -> %s (%s)", old.version, bundle.version, reason)

    def _prune(self, keep: set[Path]) -> None:
        """Delete bundle folders under the root other than ``keep`` (the active one and the one before)."""
        for entry in self.root.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and entry.resolve() not in keep:
                log.info("bundles: removing %s (neither active nor the one before)", entry)
                shutil.rmtree(entry, ignore_errors=True)
