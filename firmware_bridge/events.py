"""The serial link's vocabulary: its config, the events and state it reports, command handles, counters.

Times (``at``) are ``time.monotonic()`` seconds on the host.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from firmware_bridge.messages import Battery, ButtonKind, ErrorReport, Hello, NackReason

log = logging.getLogger(__name__)

__all__ = [
    "BatteryEvent",
    "ButtonEvent",
    "CommandHandle",
    "CommandStatus",
    "LinkConfig",
    "LinkDownEvent",
    "LinkEvent",
    "LinkState",
    "LinkStats",
    "LinkUpEvent",
    "McuErrorEvent",
]


@dataclass(frozen=True)
class LinkConfig:
    """Link timing and limits; all durations in seconds. The defaults are the production settings."""

    baudrate: int = 115200
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 2.5  # no valid frame for this long -> link down (two missed heartbeats)
    hello_interval_s: float = 0.1  # HELLO repeat while waiting for the MCU's answer
    ack_timeout_s: float = 0.2  # resend a command after this long without ACK/NACK
    max_attempts: int = 20  # transmissions of one command before it FAILS
    command_timeout_s: float = 5.0  # a command not ACKed this long after send_led() FAILS
    reopen_backoff_s: float = 0.1  # first wait before reopening a lost port; doubles per failure
    reopen_backoff_max_s: float = 1.0  # cap of that wait (bounds recovery after a replug)
    reopen_after_silence_s: float = 10.0  # close and reopen a port that stays silent this long
    poll_interval_s: float = 0.02  # longest the reader blocks; bounds timer and command latency
    write_timeout_s: float = 0.5
    dedupe_window: int = 1024  # BUTTON seqs remembered per MCU boot
    event_queue_size: int = 4096  # oldest events are dropped (and counted) beyond this
    host_serial: str = ""  # serial field of the host's HELLO; short HELLOs survive a noisy line better
    host_version: tuple[int, int, int] = (0, 1, 0)


class LinkState(Enum):
    """Where the link stands. Only UP delivers button events and sends commands."""

    STOPPED = "stopped"  # not started, or stopped
    DISCONNECTED = "disconnected"  # no port open: waiting to (re)open it with backoff
    HANDSHAKE = "handshake"  # port open, HELLO sent, no HELLO back yet (or the MCU went silent)
    UP = "up"  # HELLO exchanged and frames arriving within the heartbeat timeout


@dataclass(frozen=True)
class ButtonEvent:
    """One trigger press, delivered exactly once per MCU press (duplicates by seq are dropped).

    ``count`` is the MCU's press counter since boot (u16, wraps): a jump of more than one means presses
    the MCU itself lost. ``duration_ms`` is how long the button was held.
    """

    kind: ButtonKind
    count: int
    duration_ms: int
    seq: int
    at: float


@dataclass(frozen=True)
class BatteryEvent:
    """The battery reading changed (also sent once after each handshake)."""

    battery: Battery  # the new reading
    at: float


@dataclass(frozen=True)
class LinkUpEvent:
    """Handshake done."""

    hello: Hello  # the MCU's HELLO: firmware version, serial number, capabilities, boot_id
    new_boot: bool  # the MCU's boot_id differs from the previous session's (it rebooted)
    at: float


@dataclass(frozen=True)
class LinkDownEvent:
    """The link left UP."""

    reason: str  # e.g. "heartbeat timeout" or "port lost: <error>"
    at: float


@dataclass(frozen=True)
class McuErrorEvent:
    """The MCU reported a fault with an ERROR frame."""

    error: ErrorReport  # the MCU's error code and text
    at: float


LinkEvent = ButtonEvent | BatteryEvent | LinkUpEvent | LinkDownEvent | McuErrorEvent


class CommandStatus(Enum):
    PENDING = "pending"
    ACKED = "acked"
    NACKED = "nacked"  # refused with a reason that retrying cannot fix
    FAILED = "failed"  # no ACK within the retries or the command timeout, or the link was stopped


class CommandHandle:
    """Returned by ``SerialLink.send_led``: wait on it like a paho ``MQTTMessageInfo``."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        """Sequence number of the command frame (the same for every retransmission)."""
        self.attempts = 0
        """Transmissions so far."""
        self.nack_reason: NackReason | None = None
        self.detail = ""
        self._status = CommandStatus.PENDING
        self._done = threading.Event()

    @property
    def status(self) -> CommandStatus:
        return self._status

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout_s: float | None = None) -> CommandStatus:
        """Block until ACKED/NACKED/FAILED or ``timeout_s`` seconds; returns the status (maybe PENDING)."""
        self._done.wait(timeout_s)
        return self._status

    def finish(self, status: CommandStatus, detail: str = "", reason: NackReason | None = None) -> None:
        """Settle the command (called by the link's thread); later calls are ignored."""
        if self._done.is_set():
            return
        self._status, self.detail, self.nack_reason = status, detail, reason
        self._done.set()

    def __repr__(self) -> str:
        return f"CommandHandle(seq={self.seq}, status={self._status.value}, attempts={self.attempts})"


@dataclass
class LinkStats:
    """Counters since the link was created (a copy is returned by ``SerialLink.stats``)."""

    opens: int = 0
    open_failures: int = 0
    port_errors: int = 0  # read/write failures that closed the port (unplug)
    link_ups: int = 0
    link_downs: int = 0
    frames_rx: int = 0
    frames_tx: int = 0
    bad_frames: int = 0  # runs of bytes the decoder rejected (CRC, COBS, length, version)
    bad_payloads: int = 0  # valid frames whose payload or type did not parse
    heartbeats_rx: int = 0
    heartbeats_tx: int = 0
    buttons_delivered: int = 0
    duplicates_dropped: int = 0  # BUTTON frames re-sent by the MCU after we had delivered them
    retransmits: int = 0  # command frames sent again for want of an ACK
    busy_nacks: int = 0
    commands_acked: int = 0
    commands_failed: int = 0  # FAILED or NACKED
    events_dropped: int = 0  # oldest events discarded because nobody drained the queue


class EventSink:
    """A bounded queue plus callbacks. Events are posted under the link's lock and dispatched outside it."""

    def __init__(self, maxsize: int) -> None:
        self.queue: queue.Queue[LinkEvent] = queue.Queue(maxsize=maxsize)
        self.dropped = 0
        """Oldest events discarded because nobody drained the queue."""
        self._posted: list[LinkEvent] = []
        self._listeners: list[Callable[[LinkEvent], None]] = []
        self._lock = threading.Lock()

    def post(self, event: LinkEvent) -> None:
        with self._lock:
            self._posted.append(event)

    def add_listener(self, callback: Callable[[LinkEvent], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def get(self, timeout_s: float | None) -> LinkEvent | None:
        try:
            return self.queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def flush(self) -> None:
        """Queue the posted events and call the listeners with each (a failing listener is logged)."""
        with self._lock:
            out, self._posted = self._posted, []
            listeners = list(self._listeners)
        for event in out:
            try:
                self.queue.put_nowait(event)
            except queue.Full:
                self.queue.get_nowait()  # drop the oldest: a stalled consumer must not stall the link
                self.queue.put_nowait(event)
                self.dropped += 1
            for callback in listeners:
                try:
                    callback(event)
                except Exception:
                    log.exception("link event listener failed on %r", event)
