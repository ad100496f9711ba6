"""The device's MQTT link: publishes the outbox with QoS 1 and answers fleet commands.

Drive it by hand (``link.step()`` in your own loop: each call waits at most ``timeout`` seconds
for network traffic) or from a thread (``link.start()`` / ``link.stop()``). Every callback runs
inside ``step``, on the thread that calls it.

Delivery: at most ``max_inflight`` results are published and unacknowledged at once. A row is
marked delivered only when the PUBACK for *its own* message id arrives with a success reason
code (MQTT 5; a broker that refuses it, e.g. ``Not authorized``, gets it back to pending and
raises a ``publish_rejected`` event). Across a reconnect paho re-sends unacknowledged messages
under the same ids; across a process restart the outbox turns inflight rows back to pending.
Results are never published while disconnected, so paho's in-memory queue holds at most
``max_inflight`` of them.

Commands: every ``cmd`` gets one reply event or more (``device.contracts.messages``), carrying
the command's ``request_id`` (rejections too, when the payload had a well-formed one) and, on
the PUBLISH, the MQTT 5 ``Correlation Data`` the command came with. The bundle commands
(``update_bundle``, ``rollback_bundle``) go to ``on_bundle`` (``BundleUpdater.submit``), which
answers later, from its own thread, with a ``bundle_*`` event; without one they are rejected.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import queue
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.contracts.config import MqttConfig
from device.contracts.messages import (
    BUNDLE_COMMANDS,
    Command,
    CommandError,
    encode,
    parse_command,
    read_temperature_c,
    topic,
)
from device.contracts.mqtt import make_client
from device.sync.outbox import Outbox
from resilience.backoff import Backoff

__all__ = ["MqttLink", "LinkState", "MQTT_TRIGGER"]

log = logging.getLogger(__name__)

UPKEEP_INTERVAL_S = 30.0  # prune the outbox and check its age alarm this often
ACK_TIMEOUT_S = 120.0  # a result connected this long without PUBACK is published again
MAX_QUEUED_EVENTS = 256  # events kept in memory while offline (they are also logged)
MQTT_TRIGGER = "mqtt"  # what a ``{"cmd": "diagnose"}`` puts on the trigger queue


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class MqttLink:
    """Outbox -> broker, plus status, telemetry, events and the ``cmd`` topic for one device.

    ``triggers``: the runtime's trigger queue, made first; ``{"cmd": "diagnose"}`` puts
    ``MQTT_TRIGGER`` on it (refused without one). ``alarms``: the outbox's alarm sink
    (``Outbox(on_alarm=alarms.append)``), published as events. ``on_config(values)``: ``config``
    keys the link does not own (it owns ``telemetry_interval_s``); raise ValueError to reject
    them; it runs on the link's thread and must return quickly. ``on_bundle(command)``: takes
    ``update_bundle`` / ``rollback_bundle`` commands (queues them and returns at once; the reply
    events are its own); None: they are rejected.
    """

    def __init__(
        self,
        config: MqttConfig,
        outbox: Outbox,
        *,
        boot_id: str,
        triggers: queue.SimpleQueue[str] | None = None,
        alarms: deque[dict[str, Any]] | None = None,
        on_config: Callable[[dict[str, Any]], None] | None = None,
        thermal_root: Path = Path("/sys/class/thermal"),
        on_bundle: Callable[[Command], None] | None = None,
    ) -> None:
        self.config = config
        self.on_bundle = on_bundle
        self.outbox = outbox
        self.boot_id = boot_id
        self.triggers = triggers
        self._alarms: deque[dict[str, Any]] = alarms if alarms is not None else deque()
        self.on_config = on_config
        self.thermal_root = thermal_root
        self.telemetry_interval_s = config.telemetry_interval_s
        self.state = LinkState.DISCONNECTED
        self.connects = 0  # successful CONNACKs, for logs and tests
        self._fleet, self._device = config.fleet, config.device_id
        self._client = make_client(config, config.resolved_client_id)
        self._client.will_set(
            self.topic("status"), self._status_payload("offline", "connection lost"), qos=1, retain=True
        )
        self._client.max_inflight_messages_set(0)  # we bound results ourselves
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._mids: dict[int, int] = {}  # paho mid -> outbox seq, results in flight
        self._sent_at: dict[int, float] = {}  # paho mid -> monotonic publish time
        self._acked: list[int] = []
        self._rejected: list[tuple[int, str]] = []
        self._events: deque[tuple[bytes, Properties | None]] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._telemetry: dict[str, Any] = {}
        self._telemetry_lock = threading.Lock()
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self._connect_started = self._next_telemetry = self._next_upkeep = self._publish_hold_until = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._closing = False

    # ----------------------------------------------------------------- public surface
    def topic(self, kind: str) -> str:
        return topic(self._fleet, self._device, kind)

    @property
    def inflight(self) -> int:
        """Results published and not yet acknowledged."""
        return len(self._mids)

    def update_telemetry(self, *, fps: float | None = None, battery: Mapping[str, Any] | float | None = None) -> None:
        """Values for the next telemetry message: live-path frames per second, battery (percent
        or the bridge's dict). Thread-safe; ``None`` leaves a value unchanged."""
        with self._telemetry_lock:
            if fps is not None:
                self._telemetry["fps"] = float(fps)
            if battery is not None:
                self._telemetry["battery"] = dict(battery) if isinstance(battery, Mapping) else float(battery)

    def publish_event(self, event: Mapping[str, Any], correlation_data: bytes | None = None) -> None:
        """Queue an event (``{"event": kind, ...}``) for the ``event`` topic; sent when connected.
        ``correlation_data``: the MQTT 5 property of the command this event answers, echoed."""
        body = {"schema": "scalpedge.event/1", "device_id": self._device, "boot_id": self.boot_id, **event}
        properties = None
        if correlation_data is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = correlation_data
        self._events.append((encode(body), properties))

    def step(self, timeout: float = 0.05) -> None:
        """One round: (re)connect when due, network I/O for up to ``timeout`` s, then bookkeeping."""
        while self._alarms:
            self.publish_event(self._alarms.popleft())
        now = time.monotonic()
        if self.state is LinkState.DISCONNECTED and self._backoff.due(now):
            self._try_connect()
        elif self.state is LinkState.CONNECTING and now - self._connect_started > self.config.connect_timeout_s * 2:
            log.warning("mqtt: no CONNACK within %.1f s, retrying", self.config.connect_timeout_s * 2)
            self._client.disconnect()
            self._set_disconnected()
        if self.state in (LinkState.CONNECTING, LinkState.CONNECTED):
            rc = self._client.loop(timeout)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self._connected_or_connecting():
                log.warning("mqtt: connection error: %s", mqtt.error_string(rc))
                self._set_disconnected()
        else:
            time.sleep(min(timeout, max(0.0, self._backoff.next_at - now)))
        self._settle()
        if self.state is LinkState.CONNECTED:
            self._publish_results()
            self._flush_events()
            if time.monotonic() >= self._next_telemetry:
                self.publish_telemetry()
        if time.monotonic() >= self._next_upkeep:
            self._next_upkeep = time.monotonic() + UPKEEP_INTERVAL_S
            self._expire_unacked()
            self.outbox.prune()
            self.outbox.check_alarms()

    def publish_telemetry(self) -> None:
        """Publish one telemetry message now (QoS 0) and schedule the next."""
        self._next_telemetry = time.monotonic() + self.telemetry_interval_s
        st = self.outbox.stats()
        with self._telemetry_lock:
            body: dict[str, Any] = {"device_id": self._device, "boot_id": self.boot_id, **self._telemetry}
        body.setdefault("fps", None)
        body.setdefault("battery", None)
        body["temperature_c"] = read_temperature_c(self.thermal_root)
        body["last_seq"] = st.last_seq
        body["delivered_upto"] = st.delivered_upto
        body["outbox"] = {
            "pending": st.pending,
            "inflight": st.inflight,
            "delivered_retained": st.delivered,
            "undelivered_bytes": st.undelivered_bytes,
            "oldest_undelivered_age_s": st.oldest_undelivered_age_s,
        }
        self._client.publish(self.topic("telemetry"), encode(body), qos=0)

    def start(self) -> None:
        """Run ``step`` on a daemon thread until ``stop``."""
        if self._thread is not None:
            raise RuntimeError("link already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-link-{self._device}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (if any) and close: ``offline`` status, flush acks, disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.close(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Graceful shutdown without a thread: publish retained ``offline``, wait for acks, disconnect.

        Records still unacknowledged stay in the outbox (pending again on the next start).
        """
        if self.state is LinkState.CLOSED:
            return
        self._closing = True
        if self.state is LinkState.CONNECTED:
            info = self._client.publish(
                self.topic("status"), self._status_payload("offline", "shutdown"), qos=1, retain=True
            )
            deadline = time.monotonic() + timeout_s
            while self.state is LinkState.CONNECTED and time.monotonic() < deadline:
                if info.is_published() and not self._mids:
                    break
                self._client.loop(0.05)
                self._settle()
            self._client.disconnect()
            self._client.loop(0.05)
        self._settle()
        if self._mids:
            self.outbox.release(list(self._mids.values()))
            self._mids.clear()
            self._sent_at.clear()
        self._client.loop(0)  # lets paho close the socket
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        self.state = LinkState.CLOSED

    # ----------------------------------------------------------------- internals
    def _connected_or_connecting(self) -> bool:
        return self.state in (LinkState.CONNECTING, LinkState.CONNECTED)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(0.05)
            except Exception:  # the link must outlive any single failure; it is logged
                log.exception("mqtt: link step failed; continuing")
                self._stop.wait(1.0)

    def _try_connect(self) -> None:
        cfg = self.config
        self.state = LinkState.CONNECTING
        self._connect_started = time.monotonic()
        try:
            self._client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
        except ssl.SSLError as exc:
            log.warning("mqtt: TLS handshake with %s:%d failed: %s", cfg.host, cfg.port, exc)
            self._set_disconnected()
        except (OSError, ValueError) as exc:
            log.info("mqtt: cannot reach %s:%d: %s (retry in %.1f s)", cfg.host, cfg.port, exc, self._backoff.delay_s)
            self._set_disconnected()

    def _set_disconnected(self) -> None:
        if self.state is LinkState.CLOSED:
            return
        self.state = LinkState.DISCONNECTED
        self._backoff.failed(time.monotonic())

    def _status_payload(self, state: str, reason: str | None = None) -> bytes:
        body: dict[str, Any] = {"schema": "scalpedge.status/1", "state": state, "device_id": self._device}
        body["boot_id"] = self.boot_id
        if reason:
            body["reason"] = reason
        if state == "online":
            st = self.outbox.stats()
            body["last_seq"], body["delivered_upto"] = st.last_seq, st.delivered_upto
        return encode(body)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.error("mqtt: broker refused the connection: %s", reason)
            self._set_disconnected()
            return
        self.state = LinkState.CONNECTED
        self.connects += 1
        self._backoff.reset()
        log.info("mqtt: connected to %s:%d (connect #%d)", self.config.host, self.config.port, self.connects)
        now = time.monotonic()
        self._sent_at = {mid: now for mid in self._sent_at}  # ack timeouts count from this connect
        client.subscribe(self.topic("cmd"), qos=1)
        client.publish(self.topic("status"), self._status_payload("online"), qos=1, retain=True)
        self._next_telemetry = 0.0

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if self._closing:
            log.info("mqtt: disconnected: %s", reason)
        elif self.state is LinkState.CONNECTED:
            log.warning("mqtt: disconnected: %s; %d results in flight kept for resend", reason, len(self._mids))
        self._set_disconnected()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        seq = self._mids.pop(mid, None)
        self._sent_at.pop(mid, None)
        if seq is None:
            return  # status, event or a stale id
        if reason.is_failure:
            self._rejected.append((seq, str(reason)))
        else:
            self._acked.append(seq)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None)  # MQTT 5, optional
        correlation = bytes(correlation) if correlation is not None else None
        try:
            command = dataclasses.replace(parse_command(bytes(msg.payload)), correlation_data=correlation)
        except CommandError as exc:
            log.warning("mqtt: cmd rejected on %s: %s", msg.topic, exc)
            self.publish_event({"event": "cmd_rejected", "reason": str(exc), **exc.reply}, correlation)
            return
        try:
            self._handle(command)
        except Exception as exc:  # a command handler must not take the link down
            log.exception("mqtt: cmd %s failed", command.name)
            self._reply(command, "cmd_failed", reason=f"{type(exc).__name__}: {exc}")

    def _handle(self, command: Command) -> None:
        if command.name == "resend":
            res = self.outbox.requeue(command.args["from_seq"], command.args["to_seq"])
            log.info("mqtt: resend %s..%s: %d requeued", command.args["from_seq"], command.args["to_seq"], res.requeued)
            self._reply(command, "resend", requeued=res.requeued, from_seq=command.args["from_seq"])
            if res.unavailable:
                log.warning("mqtt: resend asked for seqs no longer stored: %s", res.unavailable)
                self._reply(command, "resend_unavailable", ranges=[list(r) for r in res.unavailable])
        elif command.name == "diagnose":
            if self.triggers is None:
                self._reply(command, "cmd_rejected", reason="diagnose is not available on this device")
                return
            self.triggers.put(MQTT_TRIGGER)
            self._reply(command, "diagnose_accepted")
        elif command.name in BUNDLE_COMMANDS:
            if self.on_bundle is None:
                self._reply(command, "cmd_rejected", reason="model rollouts are not enabled on this device")
                return
            log.info(
                "mqtt: %s %s queued",
                command.name,
                command.args.get("bundle_version") or command.args.get("from_version"),
            )
            self.on_bundle(command)
        else:
            values = dict(command.args["set"])
            if "telemetry_interval_s" in values:
                interval = values.pop("telemetry_interval_s")
                if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
                    self._reply(command, "cmd_rejected", reason="telemetry_interval_s must be a number > 0")
                    return
                self.telemetry_interval_s = float(interval)
                self._next_telemetry = time.monotonic() + self.telemetry_interval_s
            if values:
                if self.on_config is None:
                    self._reply(command, "cmd_rejected", reason=f"unknown config key(s): {', '.join(sorted(values))}")
                    return
                try:
                    self.on_config(values)
                except ValueError as exc:
                    self._reply(command, "cmd_rejected", reason=str(exc))
                    return
            self._reply(command, "config_applied")

    def _reply(self, command: Command, event: str, **fields: Any) -> None:
        body: dict[str, Any] = {"event": event, "cmd": command.name, **fields}
        if command.request_id is not None:
            body["request_id"] = command.request_id
        self.publish_event(body, command.correlation_data)

    def _settle(self) -> None:
        """Commit acknowledgements gathered by callbacks; put rejected rows back to pending."""
        if self._acked:
            acked, self._acked = self._acked, []
            self.outbox.mark_delivered(acked)
        if self._rejected:
            rejected, self._rejected = self._rejected, []
            self.outbox.release([seq for seq, _ in rejected])
            self._publish_hold_until = time.monotonic() + self.config.reconnect_max_s
            log.error("mqtt: broker refused %d results (%s); holding them", len(rejected), rejected[0][1])
            self.publish_event(
                {"event": "publish_rejected", "severity": "error", "reason": rejected[0][1], "seqs": len(rejected)}
            )

    def _publish_results(self) -> None:
        room = self.config.max_inflight - len(self._mids)
        if room <= 0 or time.monotonic() < self._publish_hold_until:
            return
        failed: list[int] = []
        for row in self.outbox.claim(room):
            info = self._client.publish(self.topic("result"), row.payload, qos=self.config.qos)
            if info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                self._mids[info.mid] = row.seq  # NO_CONN: paho keeps it and sends it on reconnect
                self._sent_at[info.mid] = time.monotonic()
            else:
                failed.append(row.seq)
        if failed:
            log.warning("mqtt: %d publishes failed locally; back to pending", len(failed))
            self.outbox.release(failed)

    def _expire_unacked(self) -> None:
        """Results without PUBACK for ACK_TIMEOUT_S go back to pending (a late PUBACK is ignored)."""
        if self.state is not LinkState.CONNECTED:
            return
        old = [mid for mid, t in self._sent_at.items() if time.monotonic() - t > ACK_TIMEOUT_S]
        if old:
            log.warning("mqtt: %d results without PUBACK for %.0f s; publishing them again", len(old), ACK_TIMEOUT_S)
            self.outbox.release([self._mids.pop(mid) for mid in old])
            for mid in old:
                del self._sent_at[mid]

    def _flush_events(self) -> None:
        while self._events and self.state is LinkState.CONNECTED:
            payload, properties = self._events.popleft()
            self._client.publish(self.topic("event"), payload, qos=1, properties=properties)
