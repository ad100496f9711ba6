"""Watch the scanner link from a terminal: ``python -m firmware_bridge.monitor [PORT] [options]``.

Prints one line per event (seconds since start, then the event), optionally answers every button
press with an LED blink (``--ack-led``), and prints the link counters as JSON on exit. PORT is a
path (``/dev/serial/by-id/...``, the simulator's symlink) or a pyserial URL (``hwgrep://VID:PID``);
without it the first ``/dev/serial/by-id`` entry is used. Exit codes: 0 done; 2 no port given and none
found, or the port is missing or cannot be opened (the message names it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from firmware_bridge.events import (
    BatteryEvent,
    ButtonEvent,
    CommandHandle,
    LinkDownEvent,
    LinkEvent,
    LinkUpEvent,
    McuErrorEvent,
)
from firmware_bridge.link import LinkConfig, PortUnavailable, SerialLink
from firmware_bridge.messages import LedPattern, LedSet
from firmware_bridge.ports import list_by_id

__all__ = ["format_event", "main"]

ACK_BLINK = LedSet(255, 0, 255, 0, LedPattern.BLINK, 200)
"""Green blink sent for each press with ``--ack-led``."""


def format_event(event: LinkEvent) -> str:
    """One human-readable line for ``event`` (without the time stamp)."""
    if isinstance(event, ButtonEvent):
        return f"button {event.kind.name.lower()} count={event.count} held={event.duration_ms}ms seq={event.seq}"
    if isinstance(event, BatteryEvent):
        b = event.battery
        return f"battery {b.percent}% {b.millivolts}mV{' charging' if b.charging else ''}"
    if isinstance(event, LinkUpEvent):
        h = event.hello
        version = ".".join(map(str, h.firmware_version))
        return (
            f"link up: MCU {h.serial} firmware {version} boot {h.boot_id:08x}{' (new boot)' if event.new_boot else ''}"
        )
    if isinstance(event, LinkDownEvent):
        return f"link down: {event.reason}"
    if isinstance(event, McuErrorEvent):
        return f"MCU error {event.error.code}: {event.error.text}"
    raise TypeError(f"not a link event: {event!r}")


def _parse_led(text: str) -> LedSet:
    parts = [int(p) for p in text.split(",")]
    if len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError("expected R,G,B or R,G,B,BRIGHTNESS (each 0..255)")
    try:
        return LedSet(parts[3] if len(parts) == 4 else 255, parts[0], parts[1], parts[2])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("port", nargs="?", help="serial port path or pyserial URL")
    parser.add_argument("--ack-led", action="store_true", help="answer each press with a green LED blink")
    parser.add_argument("--led", type=_parse_led, help="set the ring once the link is up: R,G,B[,BRIGHTNESS]")
    parser.add_argument("--count", type=int, help="exit after this many button events")
    parser.add_argument("--seconds", type=float, help="exit after this many seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = args.port or next(iter(list_by_id()), None)
    if port is None:
        print("error: no PORT given and nothing under /dev/serial/by-id", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start = time.monotonic()
    deadline = start + args.seconds if args.seconds is not None else float("inf")
    presses = 0
    handles: list[CommandHandle] = []
    link = SerialLink(port, LinkConfig())
    try:
        link.start(require_port=True)
    except PortUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"watching {port}", flush=True)
        while not stop.is_set() and time.monotonic() < deadline:
            event = link.get_event(timeout_s=0.1)
            if event is None:
                continue
            print(f"{event.at - start:8.3f}  {format_event(event)}", flush=True)
            if isinstance(event, LinkUpEvent) and args.led is not None:
                handles.append(link.send_led(args.led))
            if isinstance(event, ButtonEvent):
                presses += 1
                if args.ack_led:
                    handles.append(link.send_led(ACK_BLINK))
                if args.count is not None and presses >= args.count:
                    break
        for handle in handles:  # let the last LED commands land before closing the port
            handle.wait(link.config.command_timeout_s)
        stats = link.stats
    finally:
        link.stop()
    print(json.dumps(dataclasses.asdict(stats)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
