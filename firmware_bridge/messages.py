"""Message types of the scanner link and their typed payloads (all integers little-endian).

Each payload dataclass knows its :class:`MsgType` (``TYPE``), packs itself with ``to_payload()`` and
parses with ``from_payload()``, which raises :class:`PayloadError` (never anything else) on bytes
that do not fit. :func:`pack`/:func:`unpack` convert between messages and :class:`~.protocol.Frame`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar

from firmware_bridge.protocol import Frame, encode_frame

__all__ = [
    "RELIABLE_TYPES",
    "Ack",
    "Battery",
    "Button",
    "ButtonKind",
    "Capability",
    "ErrorReport",
    "Heartbeat",
    "Hello",
    "LedPattern",
    "LedSet",
    "Message",
    "MsgType",
    "Nack",
    "NackReason",
    "PayloadError",
    "encode_message",
    "pack",
    "refusal_reason",
    "unpack",
]


class MsgType(IntEnum):
    """Second body byte."""

    HELLO = 0x01  # both ways: host asks, MCU answers (and sends one unasked after boot)
    HEARTBEAT = 0x02  # both ways, 1 Hz
    BUTTON = 0x10  # MCU -> host, reliable
    LED_SET = 0x20  # host -> MCU, reliable
    BATTERY = 0x30  # MCU -> host, on change and periodically
    ERROR = 0x70  # MCU -> host, a fault the firmware wants logged
    ACK = 0x7E  # header ``ack`` = seq of the reliable frame acknowledged
    NACK = 0x7F  # header ``ack`` = seq of the refused frame; payload = reason


RELIABLE_TYPES = frozenset({MsgType.BUTTON, MsgType.LED_SET})
"""Types the receiver must answer with ACK or NACK; the sender repeats them (same seq) until it does."""


class PayloadError(ValueError):
    """A payload that does not fit its message type (length, range or enum value)."""


class ButtonKind(IntEnum):
    PRESS = 1
    LONG_PRESS = 2


class LedPattern(IntEnum):
    OFF = 0
    SOLID = 1
    PULSE = 2  # brightness breathes with period ``period_ms``
    BLINK = 3  # on/off with period ``period_ms``
    SPIN = 4  # one lit segment runs round the ring once per ``period_ms``


class NackReason(IntEnum):
    BAD_PAYLOAD = 1  # not retried
    UNSUPPORTED_TYPE = 2  # not retried
    BUSY = 3  # transient: the sender retries with the same seq


class Capability(IntFlag):
    BUTTON = 0x01
    LONG_PRESS = 0x02
    LED_RING = 0x04
    BATTERY = 0x08


def _check(name: str, value: int, top: int) -> None:
    if not 0 <= value <= top:
        raise ValueError(f"{name} must be in 0..{top}, got {value}")


def _unpack(layout: struct.Struct, payload: bytes, name: str) -> tuple[int, ...]:
    if len(payload) != layout.size:
        raise PayloadError(f"{name} payload is {len(payload)} bytes, expected {layout.size}")
    return tuple(layout.unpack(payload))


def _enum(kind: type[IntEnum], value: int, name: str) -> int:
    try:
        return int(kind(value))
    except ValueError as exc:
        raise PayloadError(f"{name}: unknown {kind.__name__} {value}") from exc


def _ascii(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"{name} is not ASCII") from exc
    if not text.isprintable():
        raise PayloadError(f"{name} has control characters")
    return text


@dataclass(frozen=True)
class Hello:
    """Handshake. Payload: major u8, minor u8, patch u8, capabilities u16, boot_id u32, serial (0..32 ASCII).

    ``boot_id`` is random per boot of the sender (per link instance on the host); a new value tells
    the peer to forget the sequence numbers it has seen.
    """

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBBHI")
    MAX_SERIAL: ClassVar[int] = 32

    firmware_version: tuple[int, int, int]
    capabilities: int
    boot_id: int
    serial: str

    def __post_init__(self) -> None:
        for i, part in enumerate(self.firmware_version):
            _check(f"firmware_version[{i}]", part, 0xFF)
        _check("capabilities", self.capabilities, 0xFFFF)
        _check("boot_id", self.boot_id, 0xFFFF_FFFF)
        if len(self.serial) > self.MAX_SERIAL or not (self.serial.isascii() and self.serial.isprintable()):
            raise ValueError(f"serial must be printable ASCII of at most {self.MAX_SERIAL} characters")

    def to_payload(self) -> bytes:
        major, minor, patch = self.firmware_version
        head = self._LAYOUT.pack(major, minor, patch, self.capabilities, self.boot_id)
        return head + self.serial.encode("ascii")

    @classmethod
    def from_payload(cls, payload: bytes) -> Hello:
        size = cls._LAYOUT.size
        if not size <= len(payload) <= size + cls.MAX_SERIAL:
            raise PayloadError(f"HELLO payload is {len(payload)} bytes, expected {size}..{size + cls.MAX_SERIAL}")
        major, minor, patch, caps, boot_id = cls._LAYOUT.unpack_from(payload)
        return cls((major, minor, patch), caps, boot_id, _ascii(payload[size:], "serial"))


@dataclass(frozen=True)
class Heartbeat:
    """Liveness, 1 Hz both ways. Payload: uptime_ms u32 (sender's uptime in milliseconds, wraps)."""

    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<I")

    uptime_ms: int

    def __post_init__(self) -> None:
        _check("uptime_ms", self.uptime_ms, 0xFFFF_FFFF)

    def to_payload(self) -> bytes:
        return self._LAYOUT.pack(self.uptime_ms)

    @classmethod
    def from_payload(cls, payload: bytes) -> Heartbeat:
        return cls(*_unpack(cls._LAYOUT, payload, "HEARTBEAT"))


@dataclass(frozen=True)
class Button:
    """Trigger event. Payload: kind u8, count u16 (presses since boot, wraps), duration_ms u16 (held time)."""

    TYPE: ClassVar[MsgType] = MsgType.BUTTON
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BHH")

    kind: ButtonKind
    count: int
    duration_ms: int

    def __post_init__(self) -> None:
        _check("count", self.count, 0xFFFF)
        _check("duration_ms", self.duration_ms, 0xFFFF)

    def to_payload(self) -> bytes:
        return self._LAYOUT.pack(self.kind, self.count, self.duration_ms)

    @classmethod
    def from_payload(cls, payload: bytes) -> Button:
        kind, count, duration = _unpack(cls._LAYOUT, payload, "BUTTON")
        return cls(ButtonKind(_enum(ButtonKind, kind, "kind")), count, duration)


@dataclass(frozen=True)
class LedSet:
    """LED ring command. Payload: brightness u8 (0..255), red u8, green u8, blue u8, pattern u8, period_ms u16."""

    TYPE: ClassVar[MsgType] = MsgType.LED_SET
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBBBBH")

    brightness: int
    red: int
    green: int
    blue: int
    pattern: LedPattern = LedPattern.SOLID
    period_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("brightness", "red", "green", "blue"):
            _check(name, getattr(self, name), 0xFF)
        _check("period_ms", self.period_ms, 0xFFFF)

    def to_payload(self) -> bytes:
        return self._LAYOUT.pack(self.brightness, self.red, self.green, self.blue, self.pattern, self.period_ms)

    @classmethod
    def from_payload(cls, payload: bytes) -> LedSet:
        level, red, green, blue, pattern, period = _unpack(cls._LAYOUT, payload, "LED_SET")
        return cls(level, red, green, blue, LedPattern(_enum(LedPattern, pattern, "pattern")), period)


@dataclass(frozen=True)
class Battery:
    """Battery gauge. Payload: millivolts u16, percent u8 (0..100), charging u8 (0 or 1)."""

    TYPE: ClassVar[MsgType] = MsgType.BATTERY
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HBB")

    millivolts: int
    percent: int
    charging: bool

    def __post_init__(self) -> None:
        _check("millivolts", self.millivolts, 0xFFFF)
        _check("percent", self.percent, 100)

    def to_payload(self) -> bytes:
        return self._LAYOUT.pack(self.millivolts, self.percent, int(self.charging))

    @classmethod
    def from_payload(cls, payload: bytes) -> Battery:
        millivolts, percent, charging = _unpack(cls._LAYOUT, payload, "BATTERY")
        if percent > 100 or charging > 1:
            raise PayloadError(f"BATTERY percent {percent} or charging {charging} out of range")
        return cls(millivolts, percent, bool(charging))


@dataclass(frozen=True)
class ErrorReport:
    """A fault reported by the MCU. Payload: code u8 (firmware-defined), text (0..48 ASCII)."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    MAX_TEXT: ClassVar[int] = 48

    code: int
    text: str = ""

    def __post_init__(self) -> None:
        _check("code", self.code, 0xFF)
        if len(self.text) > self.MAX_TEXT or not (self.text.isascii() and self.text.isprintable()):
            raise ValueError(f"text must be printable ASCII of at most {self.MAX_TEXT} characters")

    def to_payload(self) -> bytes:
        return bytes([self.code]) + self.text.encode("ascii")

    @classmethod
    def from_payload(cls, payload: bytes) -> ErrorReport:
        if not 1 <= len(payload) <= 1 + cls.MAX_TEXT:
            raise PayloadError(f"ERROR payload is {len(payload)} bytes, expected 1..{1 + cls.MAX_TEXT}")
        return cls(payload[0], _ascii(payload[1:], "text"))


@dataclass(frozen=True)
class Ack:
    """Positive acknowledgement; empty payload, the acknowledged seq travels in the header ``ack`` field."""

    TYPE: ClassVar[MsgType] = MsgType.ACK

    def to_payload(self) -> bytes:
        return b""

    @classmethod
    def from_payload(cls, payload: bytes) -> Ack:
        if payload:
            raise PayloadError(f"ACK payload must be empty, got {len(payload)} bytes")
        return cls()


@dataclass(frozen=True)
class Nack:
    """Refusal of the frame whose seq is in the header ``ack`` field. Payload: reason u8."""

    TYPE: ClassVar[MsgType] = MsgType.NACK

    reason: NackReason

    def to_payload(self) -> bytes:
        return bytes([self.reason])

    @classmethod
    def from_payload(cls, payload: bytes) -> Nack:
        if len(payload) != 1:
            raise PayloadError(f"NACK payload is {len(payload)} bytes, expected 1")
        return cls(NackReason(_enum(NackReason, payload[0], "reason")))


Message = Hello | Heartbeat | Button | LedSet | Battery | ErrorReport | Ack | Nack
_BY_TYPE: dict[int, type[Message]] = {
    cls.TYPE: cls for cls in (Hello, Heartbeat, Button, LedSet, Battery, ErrorReport, Ack, Nack)
}


def pack(msg: Message, seq: int, ack: int = 0) -> Frame:
    """Frame carrying ``msg`` with sequence number ``seq`` (u16) and ``ack`` (u16, 0 = none)."""
    return Frame(type=msg.TYPE, seq=seq, ack=ack, payload=msg.to_payload())


def unpack(frame: Frame) -> Message:
    """Typed message of ``frame``; raises :class:`PayloadError` for an unknown type or a bad payload."""
    cls = _BY_TYPE.get(frame.type)
    if cls is None:
        raise PayloadError(f"unknown message type 0x{frame.type:02X}")
    return cls.from_payload(frame.payload)


def refusal_reason(frame: Frame) -> NackReason | None:
    """The NACK owed for ``frame`` once :func:`unpack` refused it: UNSUPPORTED_TYPE for an unknown
    type, BAD_PAYLOAD for a reliable type (its sender repeats it until answered), else None (drop it)."""
    if frame.type not in _BY_TYPE:
        return NackReason.UNSUPPORTED_TYPE
    return NackReason.BAD_PAYLOAD if frame.type in RELIABLE_TYPES else None


def encode_message(msg: Message, seq: int, ack: int = 0) -> bytes:
    """Wire bytes (delimiters included) of ``msg``; shorthand for ``encode_frame(pack(msg, seq, ack))``."""
    return encode_frame(pack(msg, seq, ack))
