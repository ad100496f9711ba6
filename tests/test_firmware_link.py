"""The host link against a microcontroller on a real pty (``os.openpty``): no mocked ports.

Either the test plays the MCU by hand, writing and reading bytes on the pty master, or
:class:`McuSimulator` plays it with scripted faults. Each exchange is narrated in comments.
Timing acceptance (link down within 3 s of silence, up within 2 s of replug) uses ``LinkConfig()``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from firmware_bridge import (
    Battery,
    ButtonEvent,
    ButtonKind,
    CommandStatus,
    LedPattern,
    LedSet,
    LinkConfig,
    LinkDownEvent,
    LinkEvent,
    LinkState,
    LinkUpEvent,
    NackReason,
    SerialLink,
)
from firmware_bridge.messages import Ack, Button, Heartbeat, Hello, Message, Nack, encode_message, unpack
from firmware_bridge.ports import PtyPort, open_port
from firmware_bridge.protocol import Frame, FrameDecoder, encode_frame
from firmware_bridge.simulator import McuSimulator, SimConfig

MCU_HELLO = Hello((2, 0, 1), 0x0F, 0xB007_0001, "SE-HAND-1")


@pytest.fixture
def link_path(tmp_path: Path) -> Path:
    return tmp_path / "serial" / "by-id" / "usb-ScalpEdge_Scanner_MCU-if00"


def next_event(link: SerialLink, kind: type[LinkEvent], timeout_s: float) -> LinkEvent:
    """The next event of type ``kind`` (others are skipped); fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        event = link.get_event(left)
        if isinstance(event, kind):
            return event
    raise AssertionError(f"no {kind.__name__} within {timeout_s} s")


class HandMcu:
    """The test's own MCU: raw bytes on the pty master, decoded with the real decoder."""

    def __init__(self, pty: PtyPort) -> None:
        self.pty, self.decoder, self.seq = pty, FrameDecoder(), 0

    def send(self, msg: Message, ack: int = 0, seq: int | None = None) -> int:
        self.seq = self.seq + 1 if seq is None else seq
        self.pty.write(encode_message(msg, self.seq, ack))
        return self.seq

    def expect(self, kind: type[Message], timeout_s: float = 2.0) -> tuple[Frame, Message]:
        """Next frame from the host whose message is a ``kind`` (heartbeats etc. are skipped)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for frame in self.decoder.feed(self.pty.read()):
                msg = unpack(frame)
                if isinstance(msg, kind):
                    return frame, msg
            time.sleep(0.005)
        raise AssertionError(f"host sent no {kind.__name__} within {timeout_s} s")


@pytest.fixture
def hand(link_path: Path) -> Iterator[HandMcu]:
    pty = PtyPort(link_path)
    pty.plug()
    yield HandMcu(pty)
    pty.unplug()


def test_handshake_acks_and_duplicates_byte_by_byte(hand: HandMcu, link_path: Path) -> None:
    with SerialLink(str(link_path)) as link:
        # Host -> MCU: HELLO (its boot_id, no capabilities), repeated until answered.
        frame, host_hello = hand.expect(Hello)
        assert isinstance(host_hello, Hello) and host_hello.capabilities == 0
        assert link.state is LinkState.HANDSHAKE
        # A BUTTON before the handshake is ignored (no ACK): the host cannot yet tell which boot it is from.
        hand.send(Button(ButtonKind.PRESS, 1, 100), seq=40)
        # MCU -> host: HELLO answering it (ack = the request's seq). The link is up.
        hand.send(MCU_HELLO, ack=frame.seq, seq=41)
        up = next_event(link, LinkUpEvent, 2.0)
        assert isinstance(up, LinkUpEvent) and up.hello == MCU_HELLO and up.new_boot
        assert link.hello == MCU_HELLO
        # Host -> MCU: HEARTBEAT right after coming up.
        hand.expect(Heartbeat)
        # MCU -> host: the pending BUTTON again (seq 40); host -> MCU: ACK with ack=40, byte for byte.
        hand.send(Button(ButtonKind.PRESS, 1, 100), seq=40)
        ack_frame, _ = hand.expect(Ack)
        assert encode_frame(ack_frame) == encode_message(Ack(), ack_frame.seq, 40)
        press = next_event(link, ButtonEvent, 1.0)
        assert isinstance(press, ButtonEvent) and (press.count, press.seq, press.kind) == (1, 40, ButtonKind.PRESS)
        # MCU -> host: seq 40 once more (our ACK "was lost"); host ACKs again but delivers nothing.
        hand.send(Button(ButtonKind.PRESS, 1, 100), seq=40)
        assert hand.expect(Ack)[0].ack == 40
        # MCU -> host: an unknown type 0x55 and a BUTTON with a 2-byte payload: NACKs with reasons.
        hand.pty.write(encode_frame(Frame(type=0x55, seq=42)))
        unsupported = hand.expect(Nack)
        hand.pty.write(encode_frame(Frame(type=0x10, seq=43, payload=b"\x01\x00")))
        bad = hand.expect(Nack)
        assert (unsupported[0].ack, unsupported[1]) == (42, Nack(NackReason.UNSUPPORTED_TYPE))
        assert (bad[0].ack, bad[1]) == (43, Nack(NackReason.BAD_PAYLOAD))
        # Such a frame is a corrupted copy that slipped past the CRC: the real seq 43 is still welcome.
        hand.send(Button(ButtonKind.LONG_PRESS, 2, 1500), seq=43)
        assert hand.expect(Ack)[0].ack == 43
        second = next_event(link, ButtonEvent, 1.0)
        assert isinstance(second, ButtonEvent) and (second.count, second.seq) == (2, 43)
        # MCU -> host: BATTERY; the link keeps the latest reading.
        hand.send(Battery(3950, 72, True))
        deadline = time.monotonic() + 1.0
        while link.battery is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.battery == Battery(3950, 72, True)
        stats = link.stats
        assert (stats.buttons_delivered, stats.duplicates_dropped, stats.bad_payloads) == (2, 1, 2)
        # The port is held exclusively: a second opener is refused instead of sharing the bytes.
        with pytest.raises(serial.SerialException):
            open_port(str(link_path))


def test_simulator_handshake_and_heartbeats_both_ways(link_path: Path) -> None:
    with McuSimulator(str(link_path), SimConfig(seed=1)) as mcu:
        link = SerialLink(str(link_path)).start()
        # Host HELLO -> MCU HELLO (+ BATTERY): up at once.
        assert link.wait_up(2.0)
        assert link.hello == Hello(mcu.config.firmware_version, mcu.config.capabilities, mcu.boot_id, "SE-SIM-0001")
        # Then 1 Hz HEARTBEATs each way; after 2.2 s each side has seen at least two.
        time.sleep(2.2)
        assert link.stats.heartbeats_rx >= 2 and mcu.stats.host_heartbeats >= 2
        assert link.battery == mcu.battery and mcu.host_alive
        # The host goes away: the MCU notices within its 2.5 s host timeout.
        link.stop()
        deadline = time.monotonic() + 3.0
        while mcu.host_alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not mcu.host_alive


def test_thousand_presses_exactly_once_through_garbage_and_5pct_byte_loss(link_path: Path) -> None:
    config = SimConfig(seed=7, retransmit_s=0.05, max_in_flight=48)
    with McuSimulator(str(link_path), config) as mcu, SerialLink(str(link_path)) as link:
        assert link.wait_up(3.0)
        # From here the line is bad both ways: 5% of bytes lost, random bytes spliced into 5% of frames.
        mcu.set_faults(tx_drop=0.05, rx_drop=0.05, garbage=0.05)
        # MCU -> host: 1000 BUTTON frames, each repeated every 50 ms until the host's ACK gets through;
        # host -> MCU: an ACK for every copy it decodes, but one ButtonEvent per seq.
        mcu.press(1000)
        presses: list[ButtonEvent] = []
        deadline = time.monotonic() + 60.0
        while len(presses) < 1000 and time.monotonic() < deadline:
            event = link.get_event(0.5)
            if isinstance(event, ButtonEvent):
                presses.append(event)
        assert mcu.wait_idle(10.0), ("the MCU still has un-ACKed presses", len(presses), link.stats, mcu.stats)
        time.sleep(0.3)  # any late duplicate would show up now
        presses += [e for e in iter(lambda: link.get_event(0), None) if isinstance(e, ButtonEvent)]
        missing = sorted(set(range(1, 1001)) - {p.count for p in presses})
        assert len(presses) == 1000 and not missing, f"missing counts {missing[:20]}; {link.stats}; {mcu.stats}"
        assert sorted(p.count for p in presses) == list(range(1, 1001))
        assert len({p.seq for p in presses}) == 1000
        # The faults really happened, and the host really dropped repeats of delivered presses.
        stats = link.stats
        assert mcu.stats.bytes_dropped > 500 and mcu.stats.garbage_bytes > 100
        assert stats.bad_frames > 100 and stats.duplicates_dropped > 10 and mcu.stats.button_retransmits > 100


def test_led_commands_acked_or_retried_to_success(link_path: Path) -> None:
    config = LinkConfig(ack_timeout_s=0.05)  # quicker retries so that the test stays short
    with McuSimulator(str(link_path), SimConfig(seed=3)) as mcu, SerialLink(str(link_path), config) as link:
        assert link.wait_up(3.0)
        mcu.set_faults(tx_drop=0.05, rx_drop=0.05)
        # Host -> MCU: LED_SET; MCU -> host: NACK BUSY three times (host repeats the same seq), then ACK.
        mcu.nack_next(NackReason.BUSY, 3)
        commands = [LedSet(10 * i, 255 - i, i, 128, LedPattern(i % 5), 100 * i) for i in range(20)]
        for led in commands:
            handle = link.send_led(led)
            assert handle.wait(6.0) is CommandStatus.ACKED, handle
        # Lost LED_SETs were repeated, lost ACKs made the MCU see repeats, yet each applied exactly once.
        assert mcu.stats.led_history == commands and mcu.led == commands[-1]
        stats = link.stats
        assert mcu.stats.nacks_sent == 3 and stats.retransmits >= 3 and mcu.stats.led_duplicates > 0
        # Refusals, on a clean line. BAD_PAYLOAD is repeated once (the MCU may have seen a corrupted
        # copy that passed the CRC); the MCU gives the repeat the same answer, and that is final.
        mcu.set_faults(tx_drop=0.0, rx_drop=0.0)
        mcu.nack_next(NackReason.BAD_PAYLOAD)
        handle = link.send_led(LedSet(1, 2, 3, 4))
        assert handle.wait(2.0) is CommandStatus.NACKED
        assert (handle.nack_reason, handle.attempts) == (NackReason.BAD_PAYLOAD, 2)
        # UNSUPPORTED_TYPE is final at once: one transmission.
        mcu.nack_next(NackReason.UNSUPPORTED_TYPE)
        handle = link.send_led(LedSet(5, 6, 7, 8))
        assert handle.wait(2.0) is CommandStatus.NACKED
        assert (handle.nack_reason, handle.attempts) == (NackReason.UNSUPPORTED_TYPE, 1)
        assert mcu.led == commands[-1] and mcu.stats.led_applied == len(commands)


def test_silence_link_down_within_3s_and_back_on_resume(link_path: Path) -> None:
    with McuSimulator(str(link_path), SimConfig(seed=4)) as mcu, SerialLink(str(link_path), LinkConfig()) as link:
        assert link.wait_up(3.0)
        time.sleep(0.2)
        # The MCU hangs: no heartbeat, no answer. The host gives up on it after 2.5 s without a frame.
        mcu.go_silent()
        silent_at = time.monotonic()
        down = next_event(link, LinkDownEvent, 4.0)
        assert isinstance(down, LinkDownEvent) and down.reason == "heartbeat timeout"
        assert down.at - silent_at < 3.0
        assert link.state is LinkState.HANDSHAKE
        # The MCU wakes up: the host's repeated HELLO gets its answer; same boot, so no reset.
        mcu.resume()
        up = next_event(link, LinkUpEvent, 2.0)
        assert isinstance(up, LinkUpEvent) and not up.new_boot


def test_unplug_replug_recovers_within_2s_and_keeps_presses(link_path: Path) -> None:
    with McuSimulator(str(link_path), SimConfig(seed=5)) as mcu, SerialLink(str(link_path), LinkConfig()) as link:
        assert link.wait_up(3.0)
        mcu.press(2)
        assert [next_event(link, ButtonEvent, 2.0) for _ in range(2)]
        # The cable is pulled: the pty closes and the by-id path vanishes; the host's read fails.
        mcu.unplug()
        down = next_event(link, LinkDownEvent, 2.0)
        assert isinstance(down, LinkDownEvent) and down.reason.startswith("port lost")
        assert not link_path.exists()
        # Presses while unplugged wait in the MCU; the host retries the missing path with backoff.
        mcu.press(3)
        time.sleep(1.5)
        assert link.state is LinkState.DISCONNECTED and link.stats.open_failures >= 2
        # Plugged back in at the same path (a new /dev/pts behind the symlink): up within 2 s.
        mcu.replug()
        replugged_at = time.monotonic()
        up = next_event(link, LinkUpEvent, 3.0)
        assert isinstance(up, LinkUpEvent) and up.at - replugged_at < 2.0 and not up.new_boot
        # The three presses made while unplugged arrive once each after the handshake.
        counts = sorted(e.count for e in [next_event(link, ButtonEvent, 2.0) for _ in range(3)])
        assert counts == [3, 4, 5]
        # A replug that reboots the MCU: seqs restart at 1, the host forgets the old ones, press 1 arrives.
        mcu.unplug()
        mcu.replug(reboot=True)
        up = next_event(link, LinkUpEvent, 3.0)
        assert isinstance(up, LinkUpEvent) and up.new_boot and up.hello.boot_id == mcu.boot_id
        mcu.press(1)
        press = next_event(link, ButtonEvent, 2.0)
        assert isinstance(press, ButtonEvent) and press.count == 1


def test_hwgrep_url_without_device_keeps_retrying_and_fails_commands() -> None:
    # pyserial resolves hwgrep:// on every open; with no such USB device each open fails, nothing escapes.
    with SerialLink("hwgrep://1209:C0DE", LinkConfig(command_timeout_s=0.3)) as link:
        handle = link.send_led(LedSet(255, 255, 255, 255))
        assert handle.wait(2.0) is CommandStatus.FAILED and handle.attempts == 0
        assert link.state is LinkState.DISCONNECTED and link.stats.open_failures >= 1
    assert link.state is LinkState.STOPPED
