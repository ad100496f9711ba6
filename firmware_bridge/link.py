"""The host end of the scanner link: :class:`SerialLink` owns the serial port and a reader thread.

It opens the port exclusively (a ``/dev/serial/by-id/...`` path or a pyserial URL such as
``hwgrep://VID:PID``), says HELLO until the MCU answers, exchanges 1 Hz heartbeats, declares the link
down after ``heartbeat_timeout_s`` without a valid frame, reopens the port with backoff after an
unplug, ACKs and de-duplicates BUTTON frames by seq, and retries LED commands until acknowledged.
Events come out of :attr:`SerialLink.events` (a queue) and/or callbacks (:meth:`~SerialLink.add_listener`).
Only the link's thread touches the port; without the thread, call :meth:`~SerialLink.loop_once` by hand.

A port that cannot be opened is never silent: ``start(require_port=True)`` raises :class:`PortUnavailable`
naming it; later failed opens are retried with backoff, the first of each outage logged as a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from firmware_bridge._worker import Worker
from firmware_bridge.events import (
    BatteryEvent,
    ButtonEvent,
    CommandHandle,
    CommandStatus,
    EventSink,
    LinkConfig,
    LinkDownEvent,
    LinkEvent,
    LinkState,
    LinkStats,
    LinkUpEvent,
    McuErrorEvent,
)
from firmware_bridge.messages import (
    Ack,
    Battery,
    Button,
    ErrorReport,
    Heartbeat,
    Hello,
    LedSet,
    Message,
    Nack,
    NackReason,
    PayloadError,
    encode_message,
    refusal_reason,
    unpack,
)
from firmware_bridge.ports import PortUnavailable, open_port
from firmware_bridge.protocol import Frame, FrameDecoder, SeqWindow
from resilience import Backoff

__all__ = ["LinkConfig", "PortUnavailable", "SerialLink"]

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    handle: CommandHandle
    wire: bytes
    deadline: float
    next_at: float = 0.0
    refused_once: bool = False


class SerialLink(Worker):
    """Serial link to the scanner MCU. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(self, port: str, config: LinkConfig | None = None) -> None:
        super().__init__()
        self.url = port
        self.config = config or LinkConfig()
        self._sink = EventSink(self.config.event_queue_size)
        self.events: queue.Queue[LinkEvent] = self._sink.queue
        """Events in arrival order; drain it with ``get()`` or :meth:`get_event`."""
        self._lock = threading.RLock()
        self._port: Any = None
        self._decoder = FrameDecoder()
        self._state = LinkState.STOPPED
        self._up = threading.Event()
        self._boot_id = secrets.randbits(32)
        self._started = time.monotonic()
        self._seq = 0
        self._seen = SeqWindow(self.config.dedupe_window)
        self._mcu_boot: int | None = None
        self._hello: Hello | None = None
        self._battery: Battery | None = None
        self._pending: dict[int, _Pending] = {}
        self._stats = LinkStats()
        self._reopen = Backoff(self.config.reopen_backoff_s, self.config.reopen_backoff_max_s)
        self._opened_at = self._last_rx = self._next_hello_at = self._next_heartbeat_at = 0.0
        self._open_failing = False  # an outage's first failed open is a warning, the retries debug

    def start(self, require_port: bool = False) -> SerialLink:
        """Start the reader thread (it opens the port); returns self. ``require_port``: open the port
        here first, raising :class:`PortUnavailable` (nothing started) when that fails."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("link already started")
            self._set_state(LinkState.DISCONNECTED)
            if require_port:
                try:
                    self._open(raise_errors=True)
                except PortUnavailable:
                    self._set_state(LinkState.STOPPED)
                    raise
            self._spawn(f"serial-link {self.url}")
        return self

    def stop(self) -> None:
        """Stop the thread, close the port and fail the commands still pending."""
        self._join()
        with self._lock:
            self._close_port()
            self._leave_up("stopped")
            self._set_state(LinkState.STOPPED)
            for pending in self._pending.values():
                pending.handle.finish(CommandStatus.FAILED, "link stopped")
                self._stats.commands_failed += 1
            self._pending.clear()
        self._sink.flush()

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def hello(self) -> Hello | None:
        """The MCU's last HELLO (firmware version, serial number, capabilities, boot_id)."""
        return self._hello

    @property
    def battery(self) -> Battery | None:
        """Latest battery reading, or None before the first one."""
        return self._battery

    @property
    def stats(self) -> LinkStats:
        """A snapshot of the counters."""
        with self._lock:
            bad = sum(self._decoder.errors.values())
            return dataclasses.replace(self._stats, bad_frames=bad, events_dropped=self._sink.dropped)

    def wait_up(self, timeout_s: float | None = None) -> bool:
        """Block until the link is UP (True) or ``timeout_s`` seconds pass (False)."""
        return self._up.wait(timeout_s)

    def get_event(self, timeout_s: float | None = None) -> LinkEvent | None:
        """Next event, waiting at most ``timeout_s`` seconds; None when there is none."""
        return self._sink.get(timeout_s)

    def add_listener(self, callback: Callable[[LinkEvent], None]) -> None:
        """Call ``callback(event)`` on the link's thread for every event; it must return quickly."""
        self._sink.add_listener(callback)

    def send_led(self, led: LedSet) -> CommandHandle:
        """Queue an LED ring command; it is sent while the link is UP and retried until ACKed."""
        with self._lock:
            seq = self._next_seq()
            handle = CommandHandle(seq)
            deadline = time.monotonic() + self.config.command_timeout_s
            self._pending[seq] = _Pending(handle, encode_message(led, seq), deadline)
        return handle

    def loop_once(self) -> None:
        """One step: (re)open the port if due, read for at most ``poll_interval_s``, run the timers."""
        port = self._port
        if port is None:
            wait = self._reopen.next_at - time.monotonic()
            if wait > 0:
                self._stop.wait(min(wait, self.config.poll_interval_s))
            else:
                self._open()
            with self._lock:
                self._service_commands(time.monotonic())  # deadlines run out while unplugged too
            self._sink.flush()
            return
        try:
            data: bytes = port.read(max(1, port.in_waiting))
            waiting = port.in_waiting
            if waiting:
                data += port.read(waiting)
        except OSError as exc:  # serial.SerialException is an OSError; unplug reads as one
            with self._lock:
                self._port_lost(exc)
            self._sink.flush()
            return
        now = time.monotonic()
        with self._lock:
            for frame in self._decoder.feed(data):
                self._handle(frame, now)
            self._timers(now)
        self._sink.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.loop_once()
            except Exception:  # a bug must not kill the link: log it, drop the port, go on
                log.exception("serial link step failed; reopening the port")
                with self._lock:
                    self._port_lost(RuntimeError("internal error"))
                self._stop.wait(self.config.poll_interval_s)

    def _open(self, raise_errors: bool = False) -> None:
        try:
            cfg = self.config
            port = open_port(self.url, cfg.baudrate, cfg.poll_interval_s, cfg.write_timeout_s)
        except (OSError, ValueError) as exc:
            with self._lock:
                self._stats.open_failures += 1
                delay = self._reopen.failed(time.monotonic())
                first, self._open_failing = not self._open_failing, True
            if raise_errors:
                raise PortUnavailable(self.url, exc) from exc
            level = logging.WARNING if first else logging.DEBUG  # the outage's first failure is said
            log.log(level, "cannot open %s: %s (retrying in %.1f s)", self.url, exc, delay)
            return
        self._open_failing = False
        now = time.monotonic()
        with self._lock:
            self._port = port
            self._decoder.reset()
            self._stats.opens += 1
            self._opened_at = self._last_rx = self._next_hello_at = now
            self._set_state(LinkState.HANDSHAKE)
            self._timers(now)
        log.info("opened %s", self.url)

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(OSError):
                port.close()

    def _port_lost(self, exc: BaseException) -> None:
        log.warning("port %s lost: %s", self.url, exc)
        self._stats.port_errors += 1
        self._close_port()
        self._leave_up(f"port lost: {exc}")
        self._set_state(LinkState.DISCONNECTED)
        self._reopen.failed(time.monotonic())

    def _write(self, wire: bytes) -> None:
        if self._port is None:
            return
        try:
            self._port.write(wire)
            self._stats.frames_tx += 1
        except OSError as exc:
            self._port_lost(exc)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1  # 1..65535; 0 means "no seq" in the ack field
        return self._seq

    def _send(self, msg: Message, ack: int = 0) -> None:
        self._write(encode_message(msg, self._next_seq(), ack))

    def _set_state(self, state: LinkState) -> None:
        self._state = state
        if state is LinkState.UP:
            self._up.set()
        else:
            self._up.clear()

    def _leave_up(self, reason: str) -> None:
        if self._state is LinkState.UP:
            log.info("link %s down: %s", self.url, reason)
            self._stats.link_downs += 1
            self._sink.post(LinkDownEvent(reason, time.monotonic()))

    def _timers(self, now: float) -> None:
        if self._state is LinkState.UP and now - self._last_rx > self.config.heartbeat_timeout_s:
            self._leave_up("heartbeat timeout")
            self._set_state(LinkState.HANDSHAKE)
            self._next_hello_at = now
        if self._state is LinkState.HANDSHAKE:
            if now - max(self._last_rx, self._opened_at) > self.config.reopen_after_silence_s:
                self._port_lost(TimeoutError(f"silent for {self.config.reopen_after_silence_s} s, reopening"))
                return
            if now >= self._next_hello_at:
                self._next_hello_at = now + self.config.hello_interval_s
                cfg = self.config
                self._send(Hello(cfg.host_version, 0, self._boot_id, cfg.host_serial))
        elif self._state is LinkState.UP and now >= self._next_heartbeat_at:
            self._next_heartbeat_at = now + self.config.heartbeat_interval_s
            self._stats.heartbeats_tx += 1
            self._send(Heartbeat(int((now - self._started) * 1000) & 0xFFFF_FFFF))
        self._service_commands(now)

    def _service_commands(self, now: float) -> None:
        for seq, pending in list(self._pending.items()):
            handle = pending.handle
            if now >= pending.deadline:
                timeout = self.config.command_timeout_s
                self._settle(seq, CommandStatus.FAILED, f"no ACK within {timeout} s ({handle.attempts} attempts)")
            elif self._state is LinkState.UP and now >= pending.next_at:
                if handle.attempts >= self.config.max_attempts:
                    self._settle(seq, CommandStatus.FAILED, f"no ACK after {handle.attempts} attempts")
                    continue
                if handle.attempts:
                    self._stats.retransmits += 1
                handle.attempts += 1
                pending.next_at = now + self.config.ack_timeout_s
                self._write(pending.wire)

    def _settle(self, seq: int, status: CommandStatus, detail: str = "", reason: NackReason | None = None) -> None:
        pending = self._pending.pop(seq, None)
        if pending is None:
            return
        if status is CommandStatus.ACKED:
            self._stats.commands_acked += 1
        else:
            self._stats.commands_failed += 1
        pending.handle.finish(status, detail, reason)

    def _handle(self, frame: Frame, now: float) -> None:
        self._stats.frames_rx += 1
        self._last_rx = now
        try:
            msg = unpack(frame)
        except PayloadError as exc:
            self._stats.bad_payloads += 1
            log.debug("bad payload in type 0x%02X seq %d: %s", frame.type, frame.seq, exc)
            reason = refusal_reason(frame)
            if reason is not None:
                self._send(Nack(reason), ack=frame.seq)
            return
        if isinstance(msg, Hello):
            self._on_hello(msg, now)
        elif isinstance(msg, Heartbeat):
            self._stats.heartbeats_rx += 1
        elif isinstance(msg, Button):
            self._on_button(msg, frame.seq, now)
        elif isinstance(msg, Battery):
            if msg != self._battery:
                self._battery = msg
                self._sink.post(BatteryEvent(msg, now))
        elif isinstance(msg, ErrorReport):
            log.warning("MCU error %d: %s", msg.code, msg.text)
            self._sink.post(McuErrorEvent(msg, now))
        elif isinstance(msg, Ack):
            self._settle(frame.ack, CommandStatus.ACKED)
        elif isinstance(msg, Nack):
            self._on_nack(msg, frame.ack, now)
        else:  # LED_SET travels host -> MCU only
            self._send(Nack(NackReason.UNSUPPORTED_TYPE), ack=frame.seq)

    def _on_hello(self, hello: Hello, now: float) -> None:
        new_boot = hello.boot_id != self._mcu_boot
        if new_boot:
            self._seen.clear()  # a rebooted MCU counts its seqs from scratch
        self._mcu_boot, self._hello = hello.boot_id, hello
        if self._state is not LinkState.UP or new_boot:
            if self._state is not LinkState.UP:
                self._stats.link_ups += 1
                log.info("link %s up: MCU %s firmware %s", self.url, hello.serial, hello.firmware_version)
            self._set_state(LinkState.UP)
            self._reopen.reset()
            self._next_heartbeat_at = now
            self._sink.post(LinkUpEvent(hello, new_boot, now))

    def _on_button(self, button: Button, seq: int, now: float) -> None:
        if self._state is not LinkState.UP:
            return  # no ACK: the MCU repeats it once the handshake says which boot it belongs to
        self._send(Ack(), ack=seq)  # ACK duplicates too: our earlier ACK may have been lost
        if not self._seen.add(seq):
            self._stats.duplicates_dropped += 1
            return
        self._stats.buttons_delivered += 1
        self._sink.post(ButtonEvent(button.kind, button.count, button.duration_ms, seq, now))

    def _on_nack(self, nack: Nack, seq: int, now: float) -> None:
        pending = self._pending.get(seq)
        if pending is None:
            return
        if nack.reason is NackReason.BUSY:
            self._stats.busy_nacks += 1
            pending.next_at = now + self.config.ack_timeout_s  # retried with the same seq
        elif nack.reason is NackReason.BAD_PAYLOAD and not pending.refused_once:
            # Our payload is valid by construction: the MCU may have got a corrupted copy that passed
            # the CRC (about 1 in 65536 corrupted frames does). Repeat once; a second refusal is final.
            pending.refused_once = True
            pending.next_at = now
        else:
            self._settle(seq, CommandStatus.NACKED, f"refused: {nack.reason.name}", nack.reason)
