"""What the device runtime uses for sync: one object holding the outbox, the link and the identity.

::

    cfg = load_sync_config("scanner.toml")
    triggers = queue.SimpleQueue()                 # the runtime's trigger queue, made first
    sync = DeviceSync.from_config(cfg, bundle_version=bundle.version, triggers=triggers)
    sync.start()                                   # link thread; or call sync.link.step() yourself
    row = sync.submit(metrics=..., conditions=..., quality=..., timings_ms=...)   # durable on return
    sync.update_telemetry(fps=live_fps, battery=bridge_status)
    sync.attach_bundles(BundleUpdater(device_id, bundle, ...))   # optional: model rollouts
    ...
    sync.close()                                   # offline status, flush acks, close the database

``submit`` raises ``OutboxFull`` (an ``outbox_full`` event is also published) when the outbox
refuses a record, and ``RecordError`` for an invalid record; in both cases nothing is stored.
On full storage the outbox evicts the oldest records first (``seqs_lost`` events; see
``device.sync.outbox``). Records carry ``bundle_version``, the version of the bundle that
measured them: ``set_bundle_version`` changes it when the runtime switches bundles (a model
rollout: ``attach_bundles``). Opening repairs what it can (a damaged file is quarantined, seqs lost
to a torn WAL are reported) and raises ``OutboxError`` only when the outbox cannot be used.
"""

from __future__ import annotations

import logging
import queue
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device.contracts.records import RecordFactory
from device.sync.config import SyncConfig
from device.sync.mqtt_link import MAX_QUEUED_EVENTS, MqttLink
from device.sync.outbox import Outbox, OutboxRow

if TYPE_CHECKING:
    from device.models.bundle import Bundle
    from device.sync.bundle_update import BundleUpdater

__all__ = ["DeviceSync"]

log = logging.getLogger(__name__)


class DeviceSync:
    """Outbox + MQTT link + record factory for one device and one boot."""

    def __init__(self, outbox: Outbox, link: MqttLink, factory: RecordFactory) -> None:
        self.outbox = outbox
        self.link = link
        self.factory = factory
        self._updater: BundleUpdater | None = None

    @classmethod
    def from_config(
        cls,
        config: SyncConfig,
        *,
        bundle_version: str,
        triggers: queue.SimpleQueue[str] | None = None,
        on_config: Callable[[dict[str, Any]], None] | None = None,
        boot_id: str | None = None,
        thermal_root: Path = Path("/sys/class/thermal"),
    ) -> DeviceSync:
        """Open (or create) the outbox at ``config.outbox.path`` and build the link (not started).

        triggers: the runtime's trigger queue; an MQTT ``diagnose`` command puts a trigger on it.
        The outbox's alarms go to a sink made here first and handed to both (the link publishes them).
        """
        factory = RecordFactory(config.mqtt.device_id, bundle_version, boot_id)
        alarms: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED_EVENTS)
        outbox = Outbox(config.outbox.path, config.outbox, device_id=config.mqtt.device_id, on_alarm=alarms.append)
        link = MqttLink(
            config.mqtt,
            outbox,
            boot_id=factory.boot_id,
            triggers=triggers,
            alarms=alarms,
            on_config=on_config,
            thermal_root=thermal_root,
        )
        log.info(
            "sync: device %s boot %s, outbox %s (last seq %d)",
            factory.device_id,
            factory.boot_id,
            outbox.path,
            outbox.stats().last_seq,
        )
        return cls(outbox, link, factory)

    @property
    def boot_id(self) -> str:
        return self.factory.boot_id

    def submit(self, **fields: Any) -> OutboxRow:
        """Build, validate and durably store one result; it is published by the link.

        ``fields`` are those of ``records.build_record`` besides the identity and seq:
        metrics, conditions, quality, timings_ms and optionally captured_at, frame.
        """
        return self.outbox.add(lambda seq: self.factory.build(seq, **fields))

    @property
    def bundle_version(self) -> str:
        """The version later records carry."""
        return self.factory.bundle_version

    def set_bundle_version(self, version: str) -> None:
        """Records submitted from now on carry ``version`` (call it where the pipeline switches,
        on the frame loop's thread, so no record names a bundle that did not measure it)."""
        self.factory.bundle_version = version

    def attach_bundles(self, updater: BundleUpdater) -> None:
        """Take model rollouts: the link hands ``update_bundle`` / ``rollback_bundle`` to
        ``updater`` (started here), whose events go out through the link. An updater without an
        ``activate`` gets one that only stamps later records with the new version (a device
        whose runtime swaps its own pipeline sets ``activate`` to do that and this together)."""
        if updater.activate is None:
            updater.activate = self._stamp
        updater.report = self.link.publish_event
        self.link.on_bundle = updater.submit
        self._updater = updater.start()

    def _stamp(self, bundle: Bundle) -> None:
        self.set_bundle_version(bundle.version)

    def update_telemetry(self, *, fps: float | None = None, battery: Any = None) -> None:
        """Live-path FPS and the battery reading from the serial bridge (percent or its dict)."""
        self.link.update_telemetry(fps=fps, battery=battery)

    def start(self) -> None:
        self.link.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the link thread if any, publish ``offline``, then close the outbox database."""
        try:
            if self._updater is not None:
                self._updater.stop(timeout_s)
            self.link.stop(timeout_s)
        finally:
            self.outbox.close()

    def __enter__(self) -> DeviceSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
