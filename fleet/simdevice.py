"""Simulated scanners for the fleet load test: each publishes schema-valid result records over
its own MQTT connection the way a scanner does, with none of the scanner's runtime.

A ``SimDevice`` keeps its records in memory (its "outbox": nothing is lost while the process
lives) and speaks the scanner's protocol (``device.contracts``; the fleet may import no other
device code):

- results on ``.../result`` with QoS 1, at most ``max_inflight`` unacknowledged (paho queues the
  rest, and after a reconnect sends its unacknowledged messages again, flagged DUP);
- ``delivered_upto``: the highest seq such that every seq up to it was acknowledged (PUBACK);
- status ``online`` (retained, with ``last_seq`` and ``delivered_upto``) on every connect, and
  ``offline`` as the last will and on a clean stop;
- telemetry (QoS 0) every ``telemetry_interval_s`` with the same marks;
- ``resend`` commands answered by publishing the seqs again (same ``msg_id``) and a ``resend``
  reply event; other commands are ignored.

``produce()`` and ``step()`` are called from one producer thread; paho's callbacks run on each
device's network thread: ``on_publish`` only queues the acknowledged message id (paho calls it
holding its own lock, so it must not wait for ours), which ``step()`` then reads.
Times: ``time.time()`` (epoch s).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device.contracts.messages import CommandError, encode, parse_command, topic
from device.contracts.records import build_record, condition, dumps_record, metric, new_boot_id, utc_timestamp

__all__ = ["SimDevice", "sample_measurements"]


def sample_measurements(i: int) -> dict[str, Any]:
    """Plausible measurement fields for the ``i``-th result of a device (varying a little)."""
    return {
        "metrics": {
            "hair_count": metric(40 + i % 17, "count"),
            "thickness_median": metric(62.5 + (i % 7), "um"),
            "thin_ratio": metric(round(0.1 + (i % 5) / 100, 3), "ratio"),
            "density": metric(180.0 + i % 11, "per_cm2"),
        },
        "conditions": {
            "dandruff": condition([0.7, 0.2, 0.07, 0.03]),
            "sebum": condition([0.1, 0.6, 0.2, 0.1]),
        },
        "quality": {"accepted": True, "reason": None, "focus": 210.0, "exposure": 0.46, "motion": 1.2},
        "timings_ms": {"segment": 41.0, "metrics": 6.5, "classify": 12.0, "total": 64.0},
        "frame": {"width": 640, "height": 480, "source": "loadtest://"},
    }


class SimDevice:
    """One simulated scanner ``device_id`` of ``fleet`` producing ``results`` records."""

    def __init__(
        self,
        device_id: str,
        fleet: str,
        port: int,
        results: int,
        *,
        host: str = "127.0.0.1",
        max_inflight: int = 20,
        telemetry_interval_s: float = 10.0,  # MqttConfig's default
        bundle_version: str = "loadtest",
    ) -> None:
        self.device_id = device_id
        self.fleet = fleet
        self.results = results
        self.boot_id = new_boot_id()
        self.bundle_version = bundle_version
        self.telemetry_interval_s = telemetry_interval_s
        self.produced_at: dict[str, float] = {}  # msg_id -> epoch s of its first publish
        self._payloads: list[bytes] = []  # index seq - 1
        self._acked: list[bool] = []  # index seq - 1
        self._mid_seq: dict[int, int] = {}  # paho message id of a first publish -> its seq, until acknowledged
        self._acks: deque[int] = deque()  # acknowledged message ids, from the network thread
        self.delivered_upto = 0
        self.resent = 0  # records published again on request
        self._next_telemetry = 0.0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"scalpedge-{device_id}", protocol=mqtt.MQTTv5
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)  # unbounded: the records live here until acknowledged
        self._client.reconnect_delay_set(1, 2)
        self._client.will_set(self._topic("status"), self._status("offline", "connection lost"), qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._host, self._port = host, port

    # ----------------------------------------------------------------- driving
    def start(self) -> None:
        """Connect (asynchronously; paho reconnects by itself) and start the network thread."""
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    @property
    def produced(self) -> int:
        return len(self._payloads)

    @property
    def done(self) -> bool:
        """Every record produced and acknowledged by the broker."""
        return self.produced == self.results and self.delivered_upto == self.results

    def produce(self) -> None:
        """Create the next record and publish it (QoS 1)."""
        seq = len(self._payloads) + 1
        if seq > self.results:
            raise RuntimeError(f"{self.device_id}: all {self.results} results produced")
        now = time.time()
        record = build_record(
            device_id=self.device_id,
            boot_id=self.boot_id,
            seq=seq,
            bundle_version=self.bundle_version,
            captured_at=utc_timestamp(),
            validate=False,  # the consumer validates; every field is built from the contracts
            **sample_measurements(seq),
        )
        self._payloads.append(dumps_record(record))
        self._acked.append(False)
        self.produced_at[record["msg_id"]] = now
        self._mid_seq[self._publish(seq)] = seq

    def step(self, now: float) -> None:
        """Advance ``delivered_upto`` over acknowledged seqs; telemetry when due."""
        while self._acks:
            seq = self._mid_seq.pop(self._acks.popleft(), None)
            if seq is not None:
                self._acked[seq - 1] = True
        while self.delivered_upto < len(self._acked) and self._acked[self.delivered_upto]:
            self.delivered_upto += 1
        if now >= self._next_telemetry and self._client.is_connected():
            self._next_telemetry = now + self.telemetry_interval_s
            pending = self.produced - self.delivered_upto
            body = {
                "device_id": self.device_id,
                "boot_id": self.boot_id,
                "fps": None,
                "battery": 80.0,
                "temperature_c": None,
                "last_seq": self.produced,
                "delivered_upto": self.delivered_upto,
                "outbox": {
                    "pending": pending,
                    "inflight": min(pending, len(self._mid_seq)),
                    "delivered_retained": self.delivered_upto,
                    "undelivered_bytes": 0,
                    "oldest_undelivered_age_s": None,
                },
            }
            self._client.publish(self._topic("telemetry"), encode(body), qos=0)

    def stop(self) -> None:
        """Publish ``offline`` (shutdown), disconnect and stop the network thread."""
        if self._client.is_connected():
            info = self._client.publish(self._topic("status"), self._status("offline", "shutdown"), qos=1, retain=True)
            info.wait_for_publish(2.0)
            self._client.disconnect()
        self._client.loop_stop()

    # ----------------------------------------------------------------- MQTT
    def _topic(self, kind: str) -> str:
        return topic(self.fleet, self.device_id, kind)

    def _status(self, state: str, reason: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "schema": "scalpedge.status/1",
            "state": state,
            "device_id": self.device_id,
            "boot_id": self.boot_id,
        }
        if state == "online":
            body["last_seq"], body["delivered_upto"] = self.produced, self.delivered_upto
        if reason:
            body["reason"] = reason
        return encode(body)

    def _publish(self, seq: int) -> int:
        """Publish seq (QoS 1; paho queues it while disconnected); returns its message id."""
        return self._client.publish(self._topic("result"), self._payloads[seq - 1], qos=1).mid

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        if not reason.is_failure:
            self._acks.append(mid)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe(self._topic("cmd"), qos=1)
        client.publish(self._topic("status"), self._status("online"), qos=1, retain=True)
        self._next_telemetry = 0.0

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            command = parse_command(bytes(msg.payload))
        except CommandError:
            return
        if command.name != "resend":
            return
        produced = self.produced
        lo = int(command.args["from_seq"])
        hi = min(int(command.args["to_seq"] or produced), produced)
        for seq in range(lo, hi + 1):
            self._publish(seq)
        n = max(0, hi - lo + 1)
        self.resent += n
        reply = {
            "schema": "scalpedge.event/1",
            "device_id": self.device_id,
            "boot_id": self.boot_id,
            "event": "resend",
            "cmd": "resend",
            "requeued": n,
            "from_seq": lo,
        }
        client.publish(self._topic("event"), encode(reply), qos=1)
