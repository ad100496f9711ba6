"""Reference fleet consumer: stores results idempotently and asks devices to resend what is missing.

PUBACK only tells a device that the broker has a record; a broker killed before forwarding it
loses it. The consumer closes the loop end to end:

- every payload is read as strict JSON (at most ``max_payload_bytes``, nested at most
  ``max_json_depth`` deep, no ``NaN``/``Infinity``) and validated against its schema
  (``device.contracts.validation``); a bad one is logged in one short line and kept in the
  ``rejected`` table (reason naming the field, the payload's first KiB, size and SHA-256);
  result records of version 1 and 2 (``device.contracts.records.SCHEMA_IDS``) are both accepted,
  a version 2 record's session tags stored in their own columns;
- each result is stored once by ``msg_id`` (``fleet.store``; a redelivery is counted as a
  duplicate; the same ``(device, seq)`` under another ``msg_id`` is a *conflict*, kept in its
  own table and logged as an error, never merged);
- per device it tracks the seqs held as ranges (``fleet.gaps``); ``last_seq`` from the
  retained status and the telemetry reveals records missing at the end of a stream;
- a gap at or below the device's ``delivered_upto`` (every seq up to it acknowledged by the
  broker; seqs above it are still queued on the device) that persists ``gap_grace_s`` is
  requested with ``{"cmd": "resend", "from_seq", "to_seq"}`` on the device's ``cmd`` topic, in
  commands of at most ``resend_chunk_seqs`` seqs, at most ``resend_max_commands`` per
  ``resend_interval_s``, and not while the previous resend is still arriving; a gap of more
  than ``max_gap`` seqs is flagged as a ``seq_jump`` anomaly instead, never requested;
- ranges the device reports as gone (``resend_unavailable``, ``seqs_lost``) are recorded as
  unrecoverable, as ranges;
- status (retained, and the last will), telemetry and events are stored too (``fleet.store``):
  each device's online/offline state, battery, last seen, last error.

Everything goes through ``fleet.store.Store``: SQLite (``db``) or PostgreSQL (``store``).

**Replicas.** With ``share_group`` set, several consumers (each its own ``client_id``) share
results, telemetry and events through MQTT 5 shared subscriptions
(``$share/<group>/scalpedge/v1/<fleet>/+/<kind>``): the broker hands each message to one of
them. Status stays a plain subscription, so every replica gets each device's retained status
(a shared subscription is never sent retained messages). A replica sees only part of each
device's stream, so before asking for a gap it folds in what the store holds
(``Store.refresh``) and claims the request in the store (``Store.claim_resend``), so one
replica asks, once per ``resend_interval_s``. A replica killed mid-stream loses nothing: what
the broker redelivers is absorbed by the idempotent store, and what it drops (Mosquitto drops
a dead member's unacknowledged messages) is past the device's ``delivered_upto`` and comes back
through a resend.

The MQTT session is persistent (clean start off, ``session_expiry_s``; by default 3600 s for a
lone consumer, so the broker queues results while it restarts, 0 in a share group); the resend
path covers whatever a broker crash loses.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.contracts.config import MqttConfig
from device.contracts.messages import parse_topic, resend_command, topic
from device.contracts.mqtt import make_client
from device.contracts.records import session_tags, validate_record
from device.contracts.validation import ContractError, parse_json, validate
from fleet.config import FleetConfig
from fleet.gaps import ResendPlan, SeqTrack, plan_resend
from fleet.ranges import add, fmt
from fleet.store import describe_url, open_store
from resilience import Backoff

__all__ = ["FleetConsumer", "UNRECOVERABLE_EVENTS"]

log = logging.getLogger(__name__)

GAP_CHECK_INTERVAL_S = 0.25
PRUNE_INTERVAL_S = 3600.0  # telemetry older than ``telemetry_keep_s`` is deleted this often
MAX_LOGGED_CHARS = 300  # a reason, topic or device message in a log line or row is cut here
#: Device events whose ``ranges`` name seqs the device no longer has (pruned, lost to storage damage).
UNRECOVERABLE_EVENTS = ("resend_unavailable", "seqs_lost")


class FleetConsumer:
    """Subscribes to ``scalpedge/v1/<fleet>/+/{result,status,telemetry,event}`` and stores them.

    Drive with ``step()`` or ``start()``/``stop()`` like ``MqttLink``. Connection settings
    (host, port, TLS, username/password) come from ``mqtt_config``; its device_id is unused.
    """

    def __init__(self, mqtt_config: MqttConfig, fleet_config: FleetConfig) -> None:
        self.mqtt_config = mqtt_config
        self.config = fleet_config
        self._lock = threading.RLock()
        self._store = open_store(fleet_config.store_url)
        log.info("fleet: store %s (%s)", describe_url(fleet_config.store_url), self._store.backend)
        self.tracks: dict[str, SeqTrack] = {
            device: SeqTrack(
                held=d.held,
                received=d.received,
                unavailable=d.unavailable,
                known_last=d.known_last,
                delivered_upto=d.delivered_upto,
            )
            for device, d in self._store.load().items()
        }
        self._client = make_client(mqtt_config, fleet_config.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self.connected = False
        self.connects = 0
        self._backoff = Backoff(mqtt_config.reconnect_min_s, mqtt_config.reconnect_max_s)
        self._next_gap_check = 0.0
        self._next_prune = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ----------------------------------------------------------------- driving
    def step(self, timeout: float = 0.05) -> None:
        """Connect when due, handle traffic for up to ``timeout`` s, then check for gaps."""
        now = time.monotonic()
        if not self.connected and self._client.socket() is None and self._backoff.due(now):
            self._connect()
        if self._client.socket() is not None:
            rc = self._client.loop(timeout)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lost(mqtt.error_string(rc))
        else:
            time.sleep(timeout)
        if self.connected and time.monotonic() >= self._next_gap_check:
            self._next_gap_check = time.monotonic() + GAP_CHECK_INTERVAL_S
            self.check_gaps()
        if self.config.telemetry_keep_s and time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
            with self._lock:
                self._store.prune_telemetry(time.time() - self.config.telemetry_keep_s)

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("consumer already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fleet-consumer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, disconnect (the broker keeps the session) and close the database."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._client.socket() is not None:
            self._client.disconnect()
            self._client.loop(0.05)
        sock = self._client.socket()
        if sock is not None:
            sock.close()
        with self._lock:
            self._store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(0.05)
            except Exception:  # keep consuming; the failure is logged
                log.exception("fleet: step failed; continuing")
                self._stop.wait(1.0)

    # ----------------------------------------------------------------- gaps and reports
    def check_gaps(self) -> None:
        """Ask devices to resend seq ranges missing for longer than ``gap_grace_s`` (chunked and
        capped); flag gaps larger than ``max_gap`` as seq jumps instead. A gap is first checked
        against the store (another replica may hold it; one query for all devices due) and the
        request claimed there (one replica asks)."""
        now = time.monotonic()
        cfg = self.config
        with self._lock:
            due: list[str] = []
            for device, tr in self.tracks.items():
                plan = self._plan(tr)
                if not plan.wanted:
                    tr.gap_since = None
                elif tr.gap_since is None:
                    tr.gap_since = now
                if plan.jumps or (
                    tr.gap_since is not None
                    and now - tr.gap_since >= cfg.gap_grace_s
                    and now - tr.last_request >= cfg.resend_interval_s
                    and now - tr.resend_progress >= cfg.gap_grace_s  # the last resend still arriving
                ):
                    due.append(device)
            if not due:
                return
            stored = self._store.refresh({device: self.tracks[device].contig for device in due})
            for device in due:
                tr, d = self.tracks[device], stored[device]
                tr.merge(d.held, d.unavailable, d.known_last, d.delivered_upto)
                self._request(device, tr, now)

    def _request(self, device: str, tr: SeqTrack, now: float) -> None:
        """Flag seq jumps and ask for the gaps left after the merge (when this replica wins the claim)."""
        cfg = self.config
        plan = self._plan(tr)
        for lo, hi in plan.jumps:
            self._flag_jump(device, tr, lo, hi)
        if not plan.wanted:
            tr.gap_since = None
            return
        tr.last_request = now
        if not self._store.claim_resend(device, cfg.resend_interval_s):
            return  # another replica asked within the interval
        tr.requested = plan.commands
        for lo, hi in plan.commands:
            self._client.publish(topic(self.mqtt_config.fleet, device, "cmd"), resend_command(lo, hi), qos=1)
        self._store.count_resend_requests(device, len(plan.commands))
        log.warning("fleet: %s: seq gap(s) %s: asked to resend %s", device, fmt(plan.wanted), fmt(plan.commands))

    def _plan(self, tr: SeqTrack) -> ResendPlan:
        cfg = self.config
        return plan_resend(tr.requestable(), tr.jumps, cfg.max_gap, cfg.resend_chunk_seqs, cfg.resend_max_commands)

    def _flag_jump(self, device: str, tr: SeqTrack, lo: int, hi: int) -> None:
        """Record a suspicious gap once (extending the jump it touches); it is never requested."""
        if add(tr.jumps, lo, hi) == 0:
            return
        whole = next(r for r in tr.jumps if r[0] <= lo <= r[1])
        self._store.flag(device, "seq_jump", *whole)
        log.warning(
            "fleet: %s: seq jump: %d seqs missing (%s), more than max_gap %d: flagged, not requested",
            device,
            hi - lo + 1,
            fmt([whole]),
            self.config.max_gap,
        )

    def report(self) -> dict[str, Any]:
        """Per device: records held, seq bounds, missing, unrecoverable and flagged ranges,
        duplicates, conflicts, resend requests, and records per boot."""
        out: dict[str, Any] = {"devices": {}}
        with self._lock:
            for device, tr in sorted(self.tracks.items()):
                out["devices"][device] = {
                    "received": tr.received,
                    "max_seq": tr.max_seq,
                    "known_last_seq": tr.known_last,
                    "contiguous_upto": tr.contig,
                    "missing": [list(r) for r in tr.missing()],
                    "unrecoverable": [list(r) for r in tr.unavailable],
                    "seq_jumps": [list(r) for r in tr.jumps],
                    **self._store.device_report(device),
                }
            out["rejected"] = self._store.rejected_count()
        return out

    # ----------------------------------------------------------------- MQTT callbacks
    def _connect(self) -> None:
        cfg = self.mqtt_config
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.resolved_session_expiry_s
        try:
            self._client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=props)
        except (OSError, ValueError) as exc:
            log.info("fleet: cannot reach %s:%d: %s", cfg.host, cfg.port, exc)
            self._lost(str(exc))

    def _lost(self, reason: str) -> None:
        if self.connected:
            log.warning("fleet: disconnected: %s", reason)
        self.connected = False
        self._backoff.failed(time.monotonic())

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            log.error("fleet: broker refused the connection: %s", reason)
            return
        self.connected = True
        self.connects += 1
        self._backoff.reset()
        client.subscribe([(name, 1) for name in self.subscriptions()])
        log.info("fleet: connected (session present: %s)", flags.session_present)

    def subscriptions(self) -> list[str]:
        """The topic filters: shared (``$share/<group>/...``) for results, telemetry and events
        when ``share_group`` is set; status always plain (retained status reaches every replica)."""
        fleet, group = self.mqtt_config.fleet, self.config.share_group
        shared = [topic(fleet, "+", k) for k in ("result", "telemetry", "event")]
        if group:
            shared = [f"$share/{group}/{name}" for name in shared]
        return [*shared, topic(fleet, "+", "status")]

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._lost(str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(msg.topic)
        if parsed is None or parsed[2] == "cmd":
            return
        _, device, kind = parsed
        payload = bytes(msg.payload)
        try:
            body = parse_json(payload, self.config.max_payload_bytes, self.config.max_json_depth)
            if kind == "result":
                validate_record(body)
            else:
                validate(kind, body)
            if body["device_id"] != device:
                raise ContractError(f"{kind}: device_id: {_cut(repr(body['device_id']))} is not the topic's device")
            with self._lock:
                if kind == "result":
                    self._result(device, body, payload)
                elif kind == "event":
                    self._store.record_event(device, body, payload)
                    self._event(device, body)
                else:
                    if kind == "status":
                        self._store.record_status(device, body)
                    else:
                        self._store.record_telemetry(device, body)
                    self._seen_last_seq(device, body.get("last_seq"), body.get("delivered_upto"))
        except ValueError as exc:  # not strict JSON, or a ContractError naming the field
            self._reject(msg.topic, _cut(str(exc)), payload)
        except Exception:  # storage trouble must not stop the consumer; resends cover the record
            log.exception("fleet: failed to handle message on %s", _cut(msg.topic))

    def _reject(self, topic_name: str, reason: str, payload: bytes) -> None:
        log.error("fleet: rejected message on %s: %s", _cut(topic_name), reason)
        try:
            with self._lock:
                self._store.reject(topic_name, reason, payload)
        except Exception:  # the store is unreachable: the log line above is all there is
            log.exception("fleet: could not record a rejected message")

    # ----------------------------------------------------------------- state
    def _track(self, device: str) -> SeqTrack:
        tr = self.tracks.get(device)
        if tr is None:
            tr = self.tracks[device] = SeqTrack()
            self._store.add_device(device)
        return tr

    def _result(self, device: str, rec: dict[str, Any], payload: bytes) -> None:
        """Store a validated result record once (duplicates counted, conflicts kept apart)."""
        seq, msg_id = int(rec["seq"]), str(rec["msg_id"])
        tr = self._track(device)
        outcome, stored = self._store.store_result(
            device,
            seq,
            msg_id,
            rec["boot_id"],
            rec["captured_at"],
            payload.decode(),
            rec["schema"],
            session_tags(rec),
            rec["bundle_version"],
            self.config.client_id,
        )
        if outcome == "new":
            tr.hold(seq, time.monotonic())
        elif outcome == "duplicate":
            log.debug("fleet: %s seq %d: duplicate (same msg_id)", device, seq)
        else:
            log.error("fleet: %s seq %d: conflict (msg_id %s, stored %s)", device, seq, msg_id, stored)

    def _seen_last_seq(self, device: str, last_seq: int | None, delivered_upto: int | None) -> None:
        """Raise this replica's marks (the store raised its own in ``record_status``/``record_telemetry``)."""
        if delivered_upto is not None:
            tr = self._track(device)
            tr.delivered_upto = max(tr.delivered_upto or 0, delivered_upto)
        if last_seq is not None:
            tr = self._track(device)
            tr.known_last = max(tr.known_last, last_seq)

    def _event(self, device: str, body: dict[str, Any]) -> None:
        kind = body["event"]
        if kind in UNRECOVERABLE_EVENTS:
            ranges = [(int(lo), int(hi)) for lo, hi in body.get("ranges", [])]
            for i, (lo, hi) in enumerate(ranges):
                if lo > hi:
                    raise ContractError(f"event: ranges/{i}: from_seq {lo} is above to_seq {hi}")
            tr = self._track(device)
            for lo, hi in ranges:
                if tr.lose(lo, hi):
                    self._store.add_unavailable(device, lo, hi)
            log.error("fleet: %s: seqs %s are no longer on the device (%s): unrecoverable", device, fmt(ranges), kind)
        elif body.get("severity") in ("warning", "error"):
            log.warning("fleet: %s event %s: %s", device, kind, _cut(str(body.get("message") or body.get("reason"))))


def _cut(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut) for a log line or row."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
