"""Frame and message layer of the scanner link: byte-exact examples from PROTOCOL.md and properties.

No port here: these are the pure functions (encode/decode, CRC, payloads) and the streaming decoder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.messages import (
    Ack,
    Battery,
    Button,
    ButtonKind,
    ErrorReport,
    Heartbeat,
    Hello,
    LedPattern,
    LedSet,
    Message,
    MsgType,
    Nack,
    NackReason,
    PayloadError,
    encode_message,
    pack,
    unpack,
)
from firmware_bridge.protocol import (
    MAX_ENCODED,
    MAX_PAYLOAD,
    MAX_WIRE,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    crc16_ccitt,
    decode_body,
    decode_frame,
    encode_body,
    encode_frame,
)

PROTOCOL_MD = Path(__file__).resolve().parents[1] / "firmware_bridge" / "PROTOCOL.md"

# The messages behind each "#### Example: `name`" section of PROTOCOL.md, with (seq, ack).
EXAMPLES: dict[str, tuple[Message, int, int]] = {
    "host-hello": (Hello((0, 1, 0), 0, 0x1234ABCD, "scalpedge-host"), 1, 0),
    "mcu-hello": (Hello((1, 4, 2), 0x0F, 0xC0FFEE01, "SE-0001"), 1, 1),
    "heartbeat": (Heartbeat(1000), 2, 0),
    "button": (Button(ButtonKind.PRESS, 1, 120), 5, 0),
    "ack-button": (Ack(), 3, 5),
    "led-set": (LedSet(128, 255, 255, 255, LedPattern.PULSE, 1000), 4, 0),
    "nack-busy": (Nack(NackReason.BUSY), 6, 4),
    "battery": (Battery(3900, 67, False), 7, 0),
    "error": (ErrorReport(3, "LED overtemp"), 8, 0),
}


def _doc_examples() -> dict[str, tuple[bytes, bytes]]:
    """name -> (body, wire) as printed in PROTOCOL.md."""
    text = PROTOCOL_MD.read_text()
    found: dict[str, tuple[bytes, bytes]] = {}
    for match in re.finditer(r"#### Example: `([\w-]+)`(.*?)(?=\n#### |\n## |\Z)", text, re.S):
        body = re.search(r"^\s+body: ([0-9a-f ]+)$", match.group(2), re.M)
        wire = re.search(r"^\s+wire: ([0-9a-f ]+)$", match.group(2), re.M)
        assert body and wire, f"example {match.group(1)} lacks body: or wire: lines"
        found[match.group(1)] = (bytes.fromhex(body.group(1)), bytes.fromhex(wire.group(1)))
    return found


def test_protocol_md_examples_match_the_code_byte_for_byte() -> None:
    doc = _doc_examples()
    assert sorted(doc) == sorted(EXAMPLES)
    for name, (msg, seq, ack) in EXAMPLES.items():
        body, wire = doc[name]
        assert encode_body(pack(msg, seq, ack)) == body, name
        assert encode_message(msg, seq, ack) == wire, name
        frame = decode_frame(wire)
        assert (frame.seq, frame.ack, unpack(frame)) == (seq, ack, msg), name


def test_crc_is_ccitt_false_with_its_check_value() -> None:
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert crc16_ccitt(b"") == 0xFFFF


frames = st.builds(
    Frame,
    type=st.integers(0, 255),
    seq=st.integers(0, 0xFFFF),
    ack=st.integers(0, 0xFFFF),
    payload=st.binary(max_size=MAX_PAYLOAD),
)
u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF)
text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=32)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, st.tuples(u8, u8, u8), u16, u32, text),
    st.builds(Heartbeat, u32),
    st.builds(Button, st.sampled_from(ButtonKind), u16, u16),
    st.builds(LedSet, u8, u8, u8, u8, st.sampled_from(LedPattern), u16),
    st.builds(Battery, u16, st.integers(0, 100), st.booleans()),
    st.builds(ErrorReport, u8, text),
    st.just(Ack()),
    st.builds(Nack, st.sampled_from(NackReason)),
)


@given(frames)
def test_frame_round_trip_and_wire_shape(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert decode_frame(wire) == frame
    assert decode_body(encode_body(frame)) == frame
    # Zeros only as the two delimiters, and never longer than the documented maximum.
    assert wire[0] == wire[-1] == 0 and 0 not in wire[1:-1]
    assert len(wire) <= MAX_WIRE


@given(messages, u16, u16)
def test_message_round_trip(msg: Message, seq: int, ack: int) -> None:
    frame = decode_frame(encode_message(msg, seq, ack))
    assert (frame.type, frame.seq, frame.ack) == (msg.TYPE, seq, ack)
    assert unpack(frame) == msg


@given(st.sampled_from(MsgType), st.binary(max_size=MAX_PAYLOAD))
def test_payload_parsers_accept_canonical_bytes_or_raise_payload_error(mtype: MsgType, payload: bytes) -> None:
    try:
        msg = unpack(Frame(type=mtype, seq=1, payload=payload))
    except PayloadError:
        return
    assert msg.to_payload() == payload  # anything accepted has exactly one encoding


@given(st.binary(min_size=8, max_size=56), st.integers(0, 2**16 - 1), st.data())
def test_crc_catches_every_burst_of_up_to_16_bits(head: bytes, pattern: int, data: st.DataObject) -> None:
    """Flip 1..16 adjacent bits anywhere in a valid body: the CRC must reject it."""
    body = bytearray(encode_body(Frame(type=head[0], seq=1, payload=head[8:])))
    bits = len(body) * 8
    width = data.draw(st.integers(1, 16))
    start = data.draw(st.integers(0, bits - width))
    mask = (pattern | 1 | (1 << (width - 1))) & ((1 << width) - 1)  # burst spans exactly `width` bits
    value = int.from_bytes(body, "big") ^ (mask << (bits - start - width))
    with pytest.raises(FrameError) as err:
        decode_body(value.to_bytes(len(body), "big"))
    assert err.value.kind is FrameErrorKind.CRC


@settings(deadline=None, max_examples=200)
@given(
    st.lists(st.tuples(st.binary(max_size=24), frames), max_size=8),
    st.lists(st.integers(1, 40), min_size=1, max_size=20),
)
def test_stream_decoder_recovers_every_frame_after_garbage(items: list[tuple[bytes, Frame]], cuts: list[int]) -> None:
    """Garbage (zeros included) between frames costs only itself: each frame's leading 0x00 closes it off."""
    stream = b"".join(junk + encode_frame(frame) for junk, frame in items)
    whole = FrameDecoder().feed(stream)
    sent = [frame for _, frame in items]
    it = iter(whole)
    assert all(any(got == want for got in it) for want in sent)  # sent is a subsequence of whole
    # Garbage could only add frames by forging a CRC-valid body; never more than one per garbage run.
    assert len(whole) <= len(sent) + sum(1 + junk.count(0) for junk, _ in items if junk)
    # Feeding the same stream in arbitrary pieces gives the same frames.
    chunked, decoder, pos, i = [], FrameDecoder(), 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        chunked += decoder.feed(stream[pos : pos + step])
        pos, i = pos + step, i + 1
    assert chunked == whole


@settings(deadline=None, max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=12))
def test_stream_decoder_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    decoder = FrameDecoder()
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            assert decode_frame(encode_frame(frame)) == frame  # only valid frames come out
        assert decoder.buffered <= MAX_ENCODED


def test_without_the_leading_delimiter_garbage_eats_the_next_frame() -> None:
    """Why every frame starts with 0x00: line noise before a frame otherwise fuses with it."""
    frame = Frame(type=MsgType.BUTTON, seq=9, payload=Button(ButtonKind.PRESS, 1, 100).to_payload())
    noise = b"\x13\x37\xff"
    assert FrameDecoder().feed(noise + encode_frame(frame)) == [frame]
    decoder = FrameDecoder()
    assert decoder.feed(noise + encode_frame(frame)[1:]) == []  # the same bytes minus the leading 0x00
    assert sum(decoder.errors.values()) == 1


def test_decoder_discards_overlong_runs_then_resyncs() -> None:
    frame = Frame(type=MsgType.HEARTBEAT, seq=1, payload=b"\x01\x00\x00\x00")
    decoder = FrameDecoder()
    assert decoder.feed(b"\x55" * 10_000) == []
    assert decoder.buffered == 0  # the run was dropped once it passed MAX_ENCODED, not kept
    assert decoder.feed(encode_frame(frame)) == [frame]
    assert decoder.errors[FrameErrorKind.TOO_LONG] == 1


@pytest.mark.parametrize(
    ("wire", "kind"),
    [
        (b"\x00\x00", FrameErrorKind.COBS),  # empty
        (b"\x00\x05\x01\x00", FrameErrorKind.COBS),  # length code runs past the end
        (encode_frame(Frame(2, 1)) + encode_frame(Frame(2, 2)), FrameErrorKind.COBS),  # two frames
        (b"\x00" + b"\x07" * 70 + b"\x00", FrameErrorKind.TOO_LONG),
        (b"\x00\x04\x01\x02\x03\x00", FrameErrorKind.TOO_SHORT),
        (encode_frame(Frame(2, 1, version=2)), FrameErrorKind.VERSION),
    ],
)
def test_decode_frame_rejects(wire: bytes, kind: FrameErrorKind) -> None:
    with pytest.raises(FrameError) as err:
        decode_frame(wire)
    assert err.value.kind is kind


def test_frame_and_message_fields_are_range_checked() -> None:
    with pytest.raises(ValueError):
        Frame(type=1, seq=1, payload=bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ValueError):
        Frame(type=1, seq=0x10000)
    with pytest.raises(ValueError):
        Battery(4000, 101, False)
    with pytest.raises(ValueError):
        Hello((1, 0, 0), 0, 1, "é")
    with pytest.raises(PayloadError):
        unpack(Frame(type=0x55, seq=1))  # unknown type
    with pytest.raises(PayloadError):
        LedSet.from_payload(bytes([1, 2, 3, 4, 9, 0, 0]))  # pattern 9 does not exist
