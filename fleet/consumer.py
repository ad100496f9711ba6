"""Reference fleet consumer: stores results idempotently and asks devices to resend what is missing.

PUBACK only tells a device that the broker has a record; a broker killed before forwarding it
loses it. The consumer closes the loop end to end:

- every payload is validated against its schema (``device.contracts.validation``; a bad one is
  logged and kept in the ``rejected`` table with the reason naming the field);
- each result is stored once by ``msg_id`` (a redelivery is
  counted as a duplicate; the same ``(device, seq)`` under another ``msg_id`` is a *conflict*,
  kept in its own table and logged as an error, never merged);
- per device it tracks the seqs held; ``last_seq`` from the retained status and the telemetry
  reveals records missing at the end of a stream;
- a gap at or below the device's ``delivered_upto`` (every seq up to it acknowledged by the
  broker; seqs above it are still queued on the device) that persists ``gap_grace_s`` is
  requested with ``{"cmd": "resend", "from_seq", "to_seq"}`` on the device's ``cmd`` topic, at
  most once per ``resend_interval_s`` and not while the previous resend is still arriving;
  ranges the device reports as pruned (``resend_unavailable``) are recorded as unrecoverable.

The MQTT session is persistent (clean start off, ``session_expiry_s``) so the broker queues
results while the consumer restarts; the resend path covers whatever a broker crash loses.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device.contracts.config import MqttConfig
from device.contracts.messages import missing_ranges, parse_topic, resend_command, topic
from device.contracts.mqtt import make_client
from device.contracts.records import validate_record
from device.contracts.validation import validate
from fleet.config import FleetConfig
from resilience import Backoff

__all__ = ["FleetConsumer"]

log = logging.getLogger(__name__)

GAP_CHECK_INTERVAL_S = 0.25
MAX_RANGES_PER_REQUEST = 16
_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    msg_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL, boot_id TEXT NOT NULL,
    captured_at TEXT NOT NULL, received_at REAL NOT NULL, payload TEXT NOT NULL, UNIQUE (device_id, seq));
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, deliveries INTEGER NOT NULL DEFAULT 0, duplicates INTEGER NOT NULL DEFAULT 0,
    known_last_seq INTEGER NOT NULL DEFAULT 0, resend_requests INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS conflicts (
    msg_id TEXT NOT NULL, device_id TEXT NOT NULL, seq INTEGER NOT NULL, stored_msg_id TEXT,
    received_at REAL NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (received_at REAL NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS unavailable (device_id TEXT NOT NULL, from_seq INTEGER NOT NULL, to_seq INTEGER NOT NULL);
"""


@dataclass
class _Track:
    """What the consumer knows about one device's seq stream."""

    seqs: set[int] = field(default_factory=set)
    contig: int = 0  # every seq <= contig is held or known unrecoverable
    known_last: int = 0  # highest seq the device says it has allocated
    delivered_upto: int | None = None  # device says: every seq up to this was acknowledged (None: unknown)
    unavailable: set[int] = field(default_factory=set)
    gap_since: float | None = None
    last_request: float = float("-inf")
    requested: list[tuple[int, int]] = field(default_factory=list)  # ranges of the last request
    resend_progress: float = float("-inf")  # when a requested seq last arrived

    def note_arrival(self, seq: int, now: float) -> None:
        if any(lo <= seq <= hi for lo, hi in self.requested):
            self.resend_progress = now

    def advance(self) -> None:
        while self.contig + 1 in self.seqs or self.contig + 1 in self.unavailable:
            self.contig += 1

    def missing(self) -> list[tuple[int, int]]:
        """Seq ranges not held, up to the highest seq known to exist."""
        hi = max(self.known_last, max(self.seqs, default=0))
        present = sorted(s for s in self.seqs | self.unavailable if s > self.contig)
        return missing_ranges(present, self.contig + 1, hi)

    def requestable(self) -> list[tuple[int, int]]:
        """Missing ranges the device has already had acknowledged (a broker lost them, or we
        were not subscribed): the rest is still queued on the device and will come by itself."""
        if self.delivered_upto is None:
            return self.missing()
        limit = self.delivered_upto
        return [(lo, min(hi, limit)) for lo, hi in self.missing() if lo <= limit]


class FleetConsumer:
    """Subscribes to ``scalpedge/v1/<fleet>/+/{result,status,telemetry,event}`` and stores results.

    Drive with ``step()`` or ``start()``/``stop()`` like ``MqttLink``. Connection settings
    (host, port, TLS, username/password) come from ``mqtt_config``; its device_id is unused.
    """

    def __init__(self, mqtt_config: MqttConfig, fleet_config: FleetConfig) -> None:
        self.mqtt_config = mqtt_config
        self.config = fleet_config
        self._lock = threading.RLock()
        Path(fleet_config.db).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(fleet_config.db, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.tracks: dict[str, _Track] = {}
        self._load()
        self._client = make_client(mqtt_config, fleet_config.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self.connected = False
        self.connects = 0
        self._backoff = Backoff(mqtt_config.reconnect_min_s, mqtt_config.reconnect_max_s)
        self._next_gap_check = 0.0
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
            self._db.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(0.05)
            except Exception:  # keep consuming; the failure is logged
                log.exception("fleet: step failed; continuing")
                self._stop.wait(1.0)

    # ----------------------------------------------------------------- gaps and reports
    def check_gaps(self) -> None:
        """Ask devices to resend seq ranges missing for longer than ``gap_grace_s``."""
        now = time.monotonic()
        with self._lock:
            for device, tr in self.tracks.items():
                missing = tr.requestable()
                if not missing:
                    tr.gap_since = None
                    continue
                if tr.gap_since is None:
                    tr.gap_since = now
                    log.info("fleet: %s: seq gap(s) %s", device, _fmt(missing))
                grace = self.config.gap_grace_s
                if now - tr.gap_since < grace or now - tr.last_request < self.config.resend_interval_s:
                    continue
                if now - tr.resend_progress < grace:
                    continue  # the last resend is still arriving: asking again would only duplicate
                tr.last_request = now
                tr.requested = missing[:MAX_RANGES_PER_REQUEST]
                for lo, hi in missing[:MAX_RANGES_PER_REQUEST]:
                    payload = resend_command(lo, hi)
                    self._client.publish(topic(self.mqtt_config.fleet, device, "cmd"), payload, qos=1)
                n = min(len(missing), MAX_RANGES_PER_REQUEST)
                self._db.execute(
                    "UPDATE devices SET resend_requests = resend_requests + ? WHERE device_id = ?", (n, device)
                )
                log.warning("fleet: %s: asked to resend %s", device, _fmt(missing[:MAX_RANGES_PER_REQUEST]))

    def report(self) -> dict[str, Any]:
        """Per device: records held, seq bounds, missing and unrecoverable ranges, duplicates,
        conflicts, resend requests, and records per boot."""
        out: dict[str, Any] = {"devices": {}}
        with self._lock:
            for device, tr in sorted(self.tracks.items()):
                row = self._db.execute(
                    "SELECT deliveries, duplicates, resend_requests FROM devices WHERE device_id = ?", (device,)
                ).fetchone() or (0, 0, 0)
                boots = {
                    b: {"records": n, "first_seq": lo, "last_seq": hi}
                    for b, n, lo, hi in self._db.execute(
                        "SELECT boot_id, count(*), min(seq), max(seq) FROM results WHERE device_id = ? "
                        "GROUP BY boot_id ORDER BY min(seq)",
                        (device,),
                    )
                }
                conflicts = self._db.execute("SELECT count(*) FROM conflicts WHERE device_id = ?", (device,)).fetchone()
                out["devices"][device] = {
                    "received": len(tr.seqs),
                    "max_seq": max(tr.seqs, default=0),
                    "known_last_seq": tr.known_last,
                    "contiguous_upto": tr.contig,
                    "missing": [list(r) for r in tr.missing()],
                    "unrecoverable": _ranges(sorted(tr.unavailable)),
                    "deliveries": row[0],
                    "duplicates": row[1],
                    "conflicts": conflicts[0],
                    "resend_requests": row[2],
                    "boots": boots,
                }
            out["rejected"] = self._db.execute("SELECT count(*) FROM rejected").fetchone()[0]
        return out

    # ----------------------------------------------------------------- MQTT callbacks
    def _connect(self) -> None:
        cfg = self.mqtt_config
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.config.session_expiry_s
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
        fleet = self.mqtt_config.fleet
        client.subscribe([(topic(fleet, "+", k), 1) for k in ("result", "status", "telemetry", "event")])
        log.info("fleet: connected (session present: %s)", flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._lost(str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parsed = parse_topic(msg.topic)
        if parsed is None:
            return
        _, device, kind = parsed
        payload = bytes(msg.payload)
        try:
            body = json.loads(payload)
            if kind == "result":
                validate_record(body)
            elif kind in ("status", "telemetry", "event"):
                validate(kind, body)
            else:
                return
            with self._lock:
                if kind == "result":
                    self._store(device, body, payload)
                elif kind == "event":
                    self._event(device, body)
                else:
                    self._seen_last_seq(device, body.get("last_seq"), body.get("delivered_upto"))
        except ValueError as exc:  # not JSON, or a ContractError naming the field
            log.error("fleet: rejected message on %s: %s", msg.topic, exc)
            self._reject(msg.topic, str(exc), payload)
        except Exception:  # storage trouble must not stop the consumer; resends cover the record
            log.exception("fleet: failed to handle message on %s", msg.topic)

    def _reject(self, topic_name: str, reason: str, payload: bytes) -> None:
        try:
            with self._lock:
                self._db.execute("INSERT INTO rejected VALUES (?, ?, ?, ?)", (time.time(), topic_name, reason, payload))
        except sqlite3.Error:
            log.exception("fleet: could not record a rejected message")

    # ----------------------------------------------------------------- storage
    def _track(self, device: str) -> _Track:
        tr = self.tracks.get(device)
        if tr is None:
            tr = self.tracks[device] = _Track()
            self._db.execute("INSERT OR IGNORE INTO devices (device_id) VALUES (?)", (device,))
        return tr

    def _store(self, device: str, rec: dict[str, Any], payload: bytes) -> None:
        """Store a validated result record once (duplicates counted, conflicts kept apart)."""
        if rec["device_id"] != device:
            raise ValueError(f"record device_id {rec['device_id']!r} does not match its topic's device {device!r}")
        seq, msg_id = int(rec["seq"]), str(rec["msg_id"])
        tr = self._track(device)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("UPDATE devices SET deliveries = deliveries + 1 WHERE device_id = ?", (device,))
            held = db.execute("SELECT msg_id FROM results WHERE device_id = ? AND seq = ?", (device, seq)).fetchone()
            same_id = db.execute("SELECT device_id, seq FROM results WHERE msg_id = ?", (msg_id,)).fetchone()
            if held is None and same_id is None:
                db.execute(
                    "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (msg_id, device, seq, rec["boot_id"], rec["captured_at"], time.time(), payload.decode()),
                )
            elif held is not None and held[0] == msg_id:
                log.debug("fleet: %s seq %d: duplicate (same msg_id)", device, seq)
                db.execute("UPDATE devices SET duplicates = duplicates + 1 WHERE device_id = ?", (device,))
            else:
                log.error("fleet: %s seq %d: conflict (msg_id %s, stored %s)", device, seq, msg_id, held or same_id)
                db.execute(
                    "INSERT INTO conflicts VALUES (?, ?, ?, ?, ?, ?)",
                    (msg_id, device, seq, held[0] if held else None, time.time(), payload.decode()),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if held is None and same_id is None:
            tr.seqs.add(seq)
            tr.note_arrival(seq, time.monotonic())
            tr.advance()

    def _seen_last_seq(self, device: str, last_seq: int | None, delivered_upto: int | None) -> None:
        if delivered_upto is not None:
            tr = self._track(device)
            tr.delivered_upto = max(tr.delivered_upto or 0, delivered_upto)
        if last_seq is not None:
            tr = self._track(device)
            if last_seq > tr.known_last:
                tr.known_last = last_seq
                self._db.execute("UPDATE devices SET known_last_seq = ? WHERE device_id = ?", (last_seq, device))

    def _event(self, device: str, body: dict[str, Any]) -> None:
        kind = body.get("event")
        if kind == "resend_unavailable":
            tr = self._track(device)
            for lo, hi in body["ranges"]:
                tr.unavailable.update(range(lo, hi + 1))
                self._db.execute("INSERT INTO unavailable VALUES (?, ?, ?)", (device, lo, hi))
            tr.advance()
            log.error("fleet: %s: seqs %s are no longer on the device: unrecoverable", device, body.get("ranges"))
        elif body.get("severity") in ("warning", "error"):
            log.warning("fleet: %s event %s: %s", device, kind, body.get("message") or body.get("reason"))

    def _load(self) -> None:
        for device, known in self._db.execute("SELECT device_id, known_last_seq FROM devices"):
            self.tracks[device] = _Track(known_last=int(known))
        for device, seq in self._db.execute("SELECT device_id, seq FROM results"):
            self._track(device).seqs.add(int(seq))
        for device, lo, hi in self._db.execute("SELECT device_id, from_seq, to_seq FROM unavailable"):
            self._track(device).unavailable.update(range(int(lo), int(hi) + 1))
        for tr in self.tracks.values():
            tr.advance()


def _ranges(values: list[int]) -> list[list[int]]:
    """Sorted integers grouped into inclusive ``[lo, hi]`` runs."""
    out: list[list[int]] = []
    for v in values:
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


def _fmt(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
