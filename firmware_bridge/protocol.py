"""Frame layer of the scanner link: COBS framing, CRC-16/CCITT and a streaming decoder.

Wire format (PROTOCOL.md is the normative text)::

    0x00 | COBS(body) | 0x00
    body = version u8 | type u8 | seq u16le | ack u16le | payload (0..MAX_PAYLOAD bytes) | crc u16le

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR) over every body
byte before it. The delimiter before each frame means line garbage never swallows the next frame:
the decoder resynchronises on every 0x00 it sees.

Everything here is pure except :class:`FrameDecoder`, which holds at most ``MAX_ENCODED`` bytes of a
partial frame (bounded memory whatever it is fed) and never raises on input bytes.
"""

from __future__ import annotations

import binascii
import struct
from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum

from cobs import cobs

__all__ = [
    "CRC_SIZE",
    "DELIMITER",
    "HEADER_SIZE",
    "MAX_BODY",
    "MAX_ENCODED",
    "MAX_PAYLOAD",
    "MAX_WIRE",
    "MIN_BODY",
    "PROTOCOL_VERSION",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "FrameErrorKind",
    "SeqWindow",
    "crc16_ccitt",
    "decode_body",
    "decode_frame",
    "encode_body",
    "encode_frame",
]

PROTOCOL_VERSION = 1
"""Value of the first body byte; receivers drop frames carrying any other value."""

DELIMITER = 0x00
_HEADER = struct.Struct("<BBHH")  # version, type, seq, ack
_CRC = struct.Struct("<H")
HEADER_SIZE = _HEADER.size  # 6 bytes
CRC_SIZE = _CRC.size  # 2 bytes
MAX_PAYLOAD = 56
"""Largest payload in bytes; a body is therefore at most 64 bytes."""
MIN_BODY = HEADER_SIZE + CRC_SIZE  # 8 bytes: header and CRC, empty payload
MAX_BODY = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE  # 64 bytes
MAX_ENCODED = MAX_BODY + 1
"""Largest COBS-encoded body in bytes (COBS adds one byte per started 254-byte block)."""
MAX_WIRE = MAX_ENCODED + 2
"""Largest frame on the wire in bytes, both delimiters included."""


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (poly 0x1021, init 0xFFFF); ``crc16_ccitt(b"123456789") == 0x29B1``."""
    return binascii.crc_hqx(data, crc)


class FrameErrorKind(Enum):
    """Why a run of bytes between two delimiters was not a frame."""

    TOO_LONG = "too_long"  # more than MAX_ENCODED bytes before the next delimiter
    COBS = "cobs"  # not valid COBS (a length code points past the end, or a zero inside)
    TOO_SHORT = "too_short"  # decoded body shorter than header + CRC
    CRC = "crc"  # CRC mismatch: line noise, a dropped byte, a frame cut by garbage
    VERSION = "version"  # CRC fine but an unknown protocol version


class FrameError(ValueError):
    """Raised by the pure decoders; ``kind`` says which check failed."""

    def __init__(self, kind: FrameErrorKind, detail: str) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``type`` is an int so that frames of types this side does not know still decode (the link answers
    them with NACK UNSUPPORTED_TYPE); compare it with ``messages.MsgType`` members. ``seq`` and ``ack``
    are u16 (0..65535); ``payload`` is at most ``MAX_PAYLOAD`` bytes.
    """

    type: int
    seq: int
    ack: int = 0
    payload: bytes = b""
    version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        for name, value, top in (("version", self.version, 0xFF), ("type", self.type, 0xFF)):
            if not 0 <= value <= top:
                raise ValueError(f"{name} must be in 0..{top}, got {value}")
        for name, value in (("seq", self.seq), ("ack", self.ack)):
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} must be in 0..65535, got {value}")
        if len(self.payload) > MAX_PAYLOAD:
            raise ValueError(f"payload is {len(self.payload)} bytes, at most {MAX_PAYLOAD} allowed")


def encode_body(frame: Frame) -> bytes:
    """The unframed body of ``frame``: header, payload and little-endian CRC (8..64 bytes)."""
    head = _HEADER.pack(frame.version, frame.type, frame.seq, frame.ack) + frame.payload
    return head + _CRC.pack(crc16_ccitt(head))


def decode_body(body: bytes) -> Frame:
    """Check and parse an unframed body (COBS already removed); raises :class:`FrameError`."""
    if len(body) < MIN_BODY:
        raise FrameError(FrameErrorKind.TOO_SHORT, f"{len(body)} bytes, need at least {MIN_BODY}")
    if len(body) > MAX_BODY:
        raise FrameError(FrameErrorKind.TOO_LONG, f"{len(body)} bytes, at most {MAX_BODY} allowed")
    (got,) = _CRC.unpack_from(body, len(body) - CRC_SIZE)
    want = crc16_ccitt(body[:-CRC_SIZE])
    if got != want:
        raise FrameError(FrameErrorKind.CRC, f"crc 0x{got:04X} != computed 0x{want:04X}")
    version, mtype, seq, ack = _HEADER.unpack_from(body)
    if version != PROTOCOL_VERSION:
        raise FrameError(FrameErrorKind.VERSION, f"version {version}, this side speaks {PROTOCOL_VERSION}")
    return Frame(type=mtype, seq=seq, ack=ack, payload=bytes(body[HEADER_SIZE:-CRC_SIZE]), version=version)


def encode_frame(frame: Frame) -> bytes:
    """Wire bytes of ``frame``: 0x00, COBS(body), 0x00 (11..67 bytes, no zero in between)."""
    encoded: bytes = cobs.encode(encode_body(frame))
    return b"\x00" + encoded + b"\x00"


def decode_frame(data: bytes) -> Frame:
    """Decode one frame's wire bytes, with or without its surrounding 0x00 delimiters.

    Raises :class:`FrameError` for anything that is not exactly one valid frame.
    """
    core = bytes(data).strip(b"\x00")
    if len(core) > MAX_ENCODED:
        raise FrameError(FrameErrorKind.TOO_LONG, f"{len(core)} encoded bytes, at most {MAX_ENCODED} allowed")
    if not core or b"\x00" in core:
        raise FrameError(FrameErrorKind.COBS, "expected exactly one non-empty frame between delimiters")
    return decode_body(_cobs_decode(core))


def _cobs_decode(core: bytes) -> bytes:
    try:
        body: bytes = cobs.decode(core)
    except cobs.DecodeError as exc:
        raise FrameError(FrameErrorKind.COBS, str(exc)) from exc
    return body


class FrameDecoder:
    """Streaming decoder: feed any chunks of the byte stream, get back the whole valid frames in them.

    Every 0x00 ends the bytes gathered so far: they are decoded if non-empty, and any error is counted
    in :attr:`errors` (never raised). Runs longer than ``MAX_ENCODED`` bytes are discarded as they
    arrive, so the decoder holds at most ``MAX_ENCODED`` bytes whatever it is fed.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.frames = 0
        """Valid frames returned so far."""
        self.errors: Counter[FrameErrorKind] = Counter()
        """Rejected runs of bytes, by reason."""
        self.last_error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of a partial frame held right now (0..MAX_ENCODED)."""
        return len(self._buf)

    def reset(self) -> None:
        """Drop any partial frame (after the port was reopened)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return the frames it completed, in stream order."""
        frames: list[Frame] = []
        view = memoryview(data)
        start = 0
        while start <= len(view):
            end = data.find(DELIMITER, start)
            piece = view[start:] if end < 0 else view[start:end]
            if not self._overflow:
                if len(self._buf) + len(piece) > MAX_ENCODED:
                    self._overflow = True
                    self._buf.clear()
                else:
                    self._buf += piece
            if end < 0:
                break
            self._finish_run(frames)
            start = end + 1
        return frames

    def _finish_run(self, frames: list[Frame]) -> None:
        if self._overflow:
            self._reject(FrameError(FrameErrorKind.TOO_LONG, f"run longer than {MAX_ENCODED} bytes"))
        elif self._buf:
            try:
                frames.append(decode_body(_cobs_decode(bytes(self._buf))))
                self.frames += 1
            except FrameError as exc:
                self._reject(exc)
        self._buf.clear()
        self._overflow = False

    def _reject(self, exc: FrameError) -> None:
        self.errors[exc.kind] += 1
        self.last_error = exc


class SeqWindow:
    """The last ``size`` sequence numbers seen, for dropping retransmitted duplicates."""

    def __init__(self, size: int) -> None:
        self._order: deque[int] = deque()
        self._members: set[int] = set()
        self._size = size

    def add(self, seq: int) -> bool:
        """Remember ``seq``; False when it was already there (a duplicate)."""
        if seq in self._members:
            return False
        self._order.append(seq)
        self._members.add(seq)
        if len(self._order) > self._size:
            self._members.discard(self._order.popleft())
        return True

    def clear(self) -> None:
        self._order.clear()
        self._members.clear()
