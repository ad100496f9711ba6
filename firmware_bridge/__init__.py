"""Serial link to the scanner's microcontroller (button, LED ring, battery).

- :mod:`.protocol`: pure ``encode_frame``/``decode_frame``, the streaming :class:`FrameDecoder`, CRC-16/CCITT.
- :mod:`.messages`: message types and typed payloads (:class:`Hello`, :class:`Button`, :class:`LedSet`, ...).
- :mod:`.link`: :class:`SerialLink`, the host end (reader thread, handshake, heartbeats, reopen, retries).
- :mod:`.events`: what the link delivers (:class:`ButtonEvent`, :class:`BatteryEvent`, ...).
- :mod:`.ports`: opening the real port exclusively; the pty the simulator plays on.
- :mod:`.simulator` (import it explicitly): :class:`McuSimulator`, the MCU on a pty, also a CLI.

The wire format is specified in ``PROTOCOL.md`` next to this file.
"""

from firmware_bridge import events
from firmware_bridge.events import *  # noqa: F403  (the link's config, states, events and counters)
from firmware_bridge.link import SerialLink
from firmware_bridge.messages import (
    Battery,
    Button,
    ButtonKind,
    Capability,
    ErrorReport,
    Hello,
    LedPattern,
    LedSet,
    MsgType,
    NackReason,
)
from firmware_bridge.ports import hwgrep_url, list_by_id, open_port
from firmware_bridge.protocol import Frame, FrameDecoder, FrameError, decode_frame, encode_frame

__all__ = [
    *events.__all__,
    "Battery",
    "Button",
    "ButtonKind",
    "Capability",
    "ErrorReport",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Hello",
    "LedPattern",
    "LedSet",
    "MsgType",
    "NackReason",
    "SerialLink",
    "decode_frame",
    "encode_frame",
    "hwgrep_url",
    "list_by_id",
    "open_port",
]
