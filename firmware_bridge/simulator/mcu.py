"""A scriptable stand-in for the scanner's microcontroller, on a real pty.

:class:`McuSimulator` runs a thread that speaks the MCU side of PROTOCOL.md on the master end of a
:class:`~.ports.PtyPort`; the host opens the stable symlink ``link_path``. Like the firmware it
answers HELLO, sends 1 Hz heartbeats and battery reports, sends each button press as a BUTTON frame
and repeats it (same seq) every ``retransmit_s`` until the host ACKs it, and applies each LED_SET
once, re-ACKing repeats. Faults to script: dropped bytes each way, garbage spliced into its output,
silence, unplug/replug (optionally as a reboot), NACKs, ERROR reports, a draining battery.

Command line: ``python -m firmware_bridge.simulator --help`` (see :mod:`.cli`).
"""

from __future__ import annotations

import random
import secrets
import select
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge import messages
from firmware_bridge._worker import Worker
from firmware_bridge.ports import PtyPort
from firmware_bridge.protocol import Frame, FrameDecoder

__all__ = ["McuSimulator", "SimConfig", "SimStats"]

_ALL_CAPS = (
    messages.Capability.BUTTON
    | messages.Capability.LONG_PRESS
    | messages.Capability.LED_RING
    | messages.Capability.BATTERY
)


@dataclass
class SimConfig:
    """Simulated firmware identity and timing (seconds); fault rates are fractions in 0..1."""

    serial: str = "SE-SIM-0001"
    firmware_version: tuple[int, int, int] = (1, 4, 2)
    capabilities: int = int(_ALL_CAPS)
    heartbeat_interval_s: float = 1.0
    host_timeout_s: float = 2.5  # host counts as gone after this long without a frame from it
    retransmit_s: float = 0.1  # repeat an un-ACKed BUTTON after this long
    max_in_flight: int = 16  # un-ACKed BUTTON frames at once; later presses wait in the queue
    battery_interval_s: float = 5.0
    battery_percent: float = 87.0
    press_ms: int = 120  # held time of a short press
    long_press_ms: int = 1500
    tx_drop: float = 0.0  # fraction of MCU -> host bytes lost
    rx_drop: float = 0.0  # fraction of host -> MCU bytes lost
    garbage: float = 0.0  # chance that 1..16 random bytes are spliced into a transmitted frame
    seed: int | None = None


@dataclass
class SimStats:
    """What the simulated MCU saw and did since it was created."""

    presses: int = 0  # BUTTON events created
    buttons_acked: int = 0
    buttons_refused: int = 0  # given up after NACKs (never for a healthy host)
    button_retransmits: int = 0
    host_hellos: int = 0
    host_heartbeats: int = 0
    led_applied: int = 0  # LED_SET commands applied (once per seq)
    led_duplicates: int = 0  # LED_SET repeats re-ACKed without applying
    nacks_sent: int = 0
    bytes_dropped: int = 0
    garbage_bytes: int = 0
    frames_rx: int = 0
    led_history: list[messages.LedSet] = field(default_factory=list, repr=False)


class McuSimulator(Worker):
    """The MCU on a pty. ``with McuSimulator(path) as mcu: mcu.press(3)``; every method is thread-safe."""

    def __init__(self, link_path: str, config: SimConfig | None = None) -> None:
        super().__init__()
        self.config = config or SimConfig()
        self.pty = PtyPort(link_path)
        self.stats = SimStats()
        self.tx_drop, self.rx_drop, self.garbage = self.config.tx_drop, self.config.rx_drop, self.config.garbage
        self.led: messages.LedSet | None = None
        self._rng = random.Random(self.config.seed)
        self._lock = threading.RLock()
        self._decoder = FrameDecoder()
        self._silent = False
        self._queued: deque[tuple[float, messages.ButtonKind, int]] = deque()  # (due, kind, held ms)
        # seq -> [wire, next send time, refused once with BAD_PAYLOAD]
        self._in_flight: OrderedDict[int, list[Any]] = OrderedDict()
        self._answers: OrderedDict[int, messages.Message] = OrderedDict()  # host command seq -> our reply
        self._nack_plan: deque[messages.NackReason] = deque()
        self._charging = False
        self._drain_per_s = 0.0
        self._battery_sent: messages.Battery | None = None
        self._host_boot: int | None = None
        self._last_host_rx = -1e9
        self._boot()

    # ---- lifecycle -------------------------------------------------------------------------------
    def _boot(self) -> None:
        self.boot_id = secrets.randbits(32)
        self._booted = time.monotonic()
        self._seq = self._count = 0
        self._in_flight.clear()
        self._answers.clear()
        self._percent = self.config.battery_percent
        self._next_heartbeat = self._next_battery = self._last_tick = time.monotonic()

    def start(self) -> McuSimulator:
        """Plug in (create the pty and the symlink) and start the firmware thread; returns self."""
        with self._lock:
            self.pty.plug()
            self._spawn("mcu-simulator")
        return self

    def stop(self) -> None:
        """Stop the thread and unplug (closes the pty, removes the symlink)."""
        self._join()
        with self._lock:
            self.pty.unplug()

    # ---- script ----------------------------------------------------------------------------------
    def press(self, count: int = 1, interval_s: float = 0.0, long: bool = False) -> None:
        """Queue ``count`` presses, ``interval_s`` seconds apart (0: as fast as the link takes them)."""
        kind = messages.ButtonKind.LONG_PRESS if long else messages.ButtonKind.PRESS
        held = self.config.long_press_ms if long else self.config.press_ms
        with self._lock:
            start = time.monotonic()
            self._queued.extend((start + i * interval_s, kind, held) for i in range(count))

    def long_press(self) -> None:
        self.press(1, long=True)

    def drain_battery(self, percent_per_s: float) -> None:
        """Let the charge fall by ``percent_per_s`` percent per second (0 stops it; negative charges)."""
        with self._lock:
            self._drain_per_s = percent_per_s

    def set_battery(self, percent: float, charging: bool = False) -> None:
        with self._lock:
            self._percent, self._charging = max(0.0, min(100.0, percent)), charging

    def set_faults(
        self, tx_drop: float | None = None, rx_drop: float | None = None, garbage: float | None = None
    ) -> None:
        """Change the byte-drop fractions and the garbage chance; None leaves one as it is."""
        with self._lock:
            self.tx_drop = self.tx_drop if tx_drop is None else tx_drop
            self.rx_drop = self.rx_drop if rx_drop is None else rx_drop
            self.garbage = self.garbage if garbage is None else garbage

    def inject_garbage(self, nbytes: int) -> None:
        """Write ``nbytes`` random bytes (zeros included) to the host right now, between frames."""
        with self._lock:
            self.stats.garbage_bytes += nbytes
            self.pty.write(self._rng.randbytes(nbytes))

    def go_silent(self) -> None:
        """Hang: send nothing and ignore everything until :meth:`resume`."""
        with self._lock:
            self._silent = True

    def resume(self) -> None:
        with self._lock:
            self._silent = False
            self._next_heartbeat = time.monotonic()

    def unplug(self) -> None:
        """Pull the cable: the pty closes and the stable path disappears."""
        with self._lock:
            self.pty.unplug()
            self._decoder.reset()
            self._last_host_rx = -1e9

    def replug(self, reboot: bool = False) -> None:
        """Plug back in at the same path; ``reboot`` also restarts the firmware (new boot_id, seq 1)."""
        with self._lock:
            if reboot:
                self._boot()
            self.pty.plug()
            if reboot:
                self._send(self._hello())  # firmware announces itself after boot

    def nack_next(self, reason: messages.NackReason, count: int = 1) -> None:
        """Refuse the next ``count`` new LED commands with ``reason`` (BUSY ones will be retried)."""
        with self._lock:
            self._nack_plan.extend([reason] * count)

    def report_error(self, code: int, text: str) -> None:
        with self._lock:
            self._send(messages.ErrorReport(code, text))

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every queued press was sent and ACKed; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queued and not self._in_flight:
                    return True
            time.sleep(0.01)
        return False

    @property
    def host_alive(self) -> bool:
        """True while the host has sent a frame within ``host_timeout_s``."""
        return time.monotonic() - self._last_host_rx < self.config.host_timeout_s

    @property
    def battery(self) -> messages.Battery:
        with self._lock:
            percent = int(round(self._percent))
            return messages.Battery(3300 + 9 * percent, percent, self._charging)  # ~3.3 V empty .. 4.2 V full

    # ---- firmware loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            fd = self.pty.master_fd
            if fd is None:
                self._stop.wait(0.02)
                continue
            try:
                readable, _, _ = select.select([fd], [], [], 0.01)
            except (OSError, ValueError):  # closed by unplug() meanwhile
                continue
            with self._lock:
                if readable and self.pty.master_fd == fd:
                    self._receive(self.pty.read())
                self._tick(time.monotonic())

    def _receive(self, data: bytes) -> None:
        if self._silent or not data:
            return
        if self.rx_drop:
            kept = bytes(b for b in data if self._rng.random() >= self.rx_drop)
            self.stats.bytes_dropped += len(data) - len(kept)
            data = kept
        for frame in self._decoder.feed(data):
            self._on_frame(frame)

    def _tick(self, now: float) -> None:
        self._percent = max(0.0, min(100.0, self._percent - self._drain_per_s * (now - self._last_tick)))
        self._last_tick = now
        if self._silent or not self.pty.plugged:
            return
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_interval_s
            self._send(messages.Heartbeat(int((now - self._booted) * 1000) & 0xFFFF_FFFF))
        battery = self.battery
        if now >= self._next_battery or battery != self._battery_sent:
            self._send_battery(now)
        while self._queued and self._queued[0][0] <= now and len(self._in_flight) < self.config.max_in_flight:
            _, kind, held = self._queued.popleft()
            self._count = self._count % 0xFFFF + 1
            self.stats.presses += 1
            seq = self._next_seq()
            wire = messages.encode_message(messages.Button(kind, self._count, held), seq)
            self._in_flight[seq] = [wire, now + self.config.retransmit_s, False]
            self._tx(wire)
        if self.host_alive:  # no point repeating into a cable nobody listens on
            for entry in self._in_flight.values():
                if now >= entry[1]:
                    entry[1] = now + self.config.retransmit_s
                    self.stats.button_retransmits += 1
                    self._tx(entry[0])

    def _send_battery(self, now: float) -> None:
        self._battery_sent = self.battery
        self._next_battery = now + self.config.battery_interval_s
        self._send(self._battery_sent)

    def _hello(self) -> messages.Hello:
        cfg = self.config
        return messages.Hello(cfg.firmware_version, cfg.capabilities, self.boot_id, cfg.serial)

    def _on_frame(self, frame: Frame) -> None:
        self.stats.frames_rx += 1
        self._last_host_rx = time.monotonic()
        try:
            msg = messages.unpack(frame)
        except messages.PayloadError:
            reason = messages.refusal_reason(frame)
            if reason is not None:
                self._nack(frame.seq, reason)
            return
        if isinstance(msg, messages.Hello):
            self.stats.host_hellos += 1
            if msg.boot_id != self._host_boot:  # a new host session: forget its old seqs
                self._host_boot = msg.boot_id
                self._answers.clear()
            self._send(self._hello(), ack=frame.seq)
            self._send_battery(time.monotonic())
        elif isinstance(msg, messages.Heartbeat):
            self.stats.host_heartbeats += 1
        elif isinstance(msg, messages.LedSet):
            self._on_led(msg, frame.seq)
        elif isinstance(msg, messages.Ack):
            if self._in_flight.pop(frame.ack, None) is not None:
                self.stats.buttons_acked += 1
        elif isinstance(msg, messages.Nack):
            self._on_nack(msg.reason, frame.ack)
        else:
            self._nack(frame.seq, messages.NackReason.UNSUPPORTED_TYPE)

    def _on_nack(self, reason: messages.NackReason, seq: int) -> None:
        entry = self._in_flight.get(seq)
        if entry is None or reason is messages.NackReason.BUSY:
            return  # BUSY: the normal retransmit timer repeats it
        if reason is messages.NackReason.BAD_PAYLOAD and not entry[2]:
            entry[2] = True  # the host saw a corrupted copy that passed its CRC: repeat once, now
            entry[1] = 0.0
            return
        del self._in_flight[seq]  # refused for good: a press the host will never see
        self.stats.buttons_refused += 1

    def _on_led(self, led: messages.LedSet, seq: int) -> None:
        answer = self._answers.get(seq)
        if answer is not None:  # a repeat: our reply was lost; answer again, apply nothing
            self.stats.led_duplicates += 1
            self._send(answer, ack=seq)
            return
        if self._nack_plan:
            reason = self._nack_plan.popleft()
            self._nack(seq, reason)
            if reason is not messages.NackReason.BUSY:  # BUSY is not final: the repeat gets a fresh decision
                self._remember(seq, messages.Nack(reason))
            return
        self.led = led
        self.stats.led_applied += 1
        self.stats.led_history.append(led)
        self._remember(seq, messages.Ack())
        self._send(messages.Ack(), ack=seq)

    def _remember(self, seq: int, answer: messages.Message) -> None:
        self._answers[seq] = answer
        while len(self._answers) > 64:
            self._answers.popitem(last=False)

    def _nack(self, seq: int, reason: messages.NackReason) -> None:
        self.stats.nacks_sent += 1
        self._send(messages.Nack(reason), ack=seq)

    def _next_seq(self) -> int:
        self._seq = self._seq % 0xFFFF + 1
        return self._seq

    def _send(self, msg: messages.Message, ack: int = 0) -> None:
        if not self._silent:
            self._tx(messages.encode_message(msg, self._next_seq(), ack))

    def _tx(self, wire: bytes) -> None:
        """Transmit with the configured faults: splice garbage in, then drop bytes."""
        if self.garbage and self._rng.random() < self.garbage:
            junk = self._rng.randbytes(self._rng.randint(1, 16))
            at = self._rng.randint(0, len(wire))
            wire = wire[:at] + junk + wire[at:]
            self.stats.garbage_bytes += len(junk)
        if self.tx_drop:
            kept = bytes(b for b in wire if self._rng.random() >= self.tx_drop)
            self.stats.bytes_dropped += len(wire) - len(kept)
            wire = kept
        self.pty.write(wire)
