"""Command line of the MCU simulator: ``python -m firmware_bridge.simulator [options]``.

It plugs a simulated scanner MCU in at ``--link`` (a symlink, like ``/dev/serial/by-id/...``), runs the
``--script`` steps in order and then keeps the MCU running until Ctrl-C or SIGTERM (``--exit``: stop
after the script). Steps are separated by ``;`` or newlines::

    python -m firmware_bridge.simulator --drop 0.05 --garbage 0.05 \\
        --script "wait 2; press 3 0.5; long; drain 2; wait 3; garbage 64; silent 4; unplug 2; press 5"
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from firmware_bridge.messages import NackReason
from firmware_bridge.simulator.mcu import McuSimulator, SimConfig

__all__ = ["DEFAULT_LINK", "STEPS", "STEP_USAGE", "main", "parse_script", "run_step"]

DEFAULT_LINK = "/tmp/scalpedge-sim/by-id/usb-ScalpEdge_Scanner_MCU_SE-SIM-0001-if00"

STEP_USAGE = """\
press [N] [INTERVAL_S]: N short presses (default 1), INTERVAL_S seconds apart
long [N]: N long presses
wait S: sleep S seconds
idle [TIMEOUT_S]: wait until every press was ACKed by the host
drain P: battery falls P percent per second (0 stops, negative charges)
battery PCT [charging]: set the gauge
garbage N: write N random bytes between frames
drop F: lose fraction F of the bytes each way
silent S: hang for S seconds (send nothing, ignore everything)
unplug S: pull the cable for S seconds, then plug back in at the same path
reboot [S]: unplug for S seconds (default 0.5) and come back as a fresh boot
busy [N]: answer the next N LED commands with NACK BUSY
error CODE [TEXT]: send an ERROR report"""
"""One line a step: the verb, its arguments ([optional]), a colon and what it does."""


def _step(usage: str) -> tuple[str, tuple[int, int, str]]:
    """(verb, (min args, max args, usage)) of one ``STEP_USAGE`` line."""
    verb, *args = usage.split(":")[0].split()
    return verb, (sum(not a.startswith("[") for a in args), len(args), usage)


STEPS: dict[str, tuple[int, int, str]] = dict(_step(line) for line in STEP_USAGE.splitlines())
"""verb -> (min args, max args, usage)."""


def parse_script(text: str) -> list[tuple[str, list[str]]]:
    """Split a script into (verb, args) steps; raises ValueError naming the first bad step."""
    steps: list[tuple[str, list[str]]] = []
    for raw in text.replace("\n", ";").split(";"):
        words = raw.split()
        if not words:
            continue
        verb, args = words[0].lower(), words[1:]
        if verb == "error" and len(args) > 2:
            args = [args[0], " ".join(args[1:])]
        if verb not in STEPS:
            raise ValueError(f"unknown step {verb!r}; known: {', '.join(STEPS)}")
        low, high, usage = STEPS[verb]
        if not low <= len(args) <= high:
            raise ValueError(f"step {raw.strip()!r}: usage {usage}")
        steps.append((verb, args))
    return steps


def run_step(mcu: McuSimulator, verb: str, args: list[str], stop: threading.Event) -> None:
    """Carry out one parsed step; waits end early when ``stop`` is set."""
    if verb == "press":
        mcu.press(int(args[0]) if args else 1, float(args[1]) if len(args) > 1 else 0.0)
    elif verb == "long":
        mcu.press(int(args[0]) if args else 1, long=True)
    elif verb == "wait":
        stop.wait(float(args[0]))
    elif verb == "idle":
        mcu.wait_idle(float(args[0]) if args else 60.0)
    elif verb == "drain":
        mcu.drain_battery(float(args[0]))
    elif verb == "battery":
        mcu.set_battery(float(args[0]), charging=len(args) > 1 and args[1].lower() in ("charging", "1", "yes"))
    elif verb == "garbage":
        mcu.inject_garbage(int(args[0]))
    elif verb == "drop":
        mcu.set_faults(tx_drop=float(args[0]), rx_drop=float(args[0]))
    elif verb == "silent":
        mcu.go_silent()
        stop.wait(float(args[0]))
        mcu.resume()
    elif verb in ("unplug", "reboot"):
        mcu.unplug()
        stop.wait(float(args[0]) if args else 0.5)
        mcu.replug(reboot=verb == "reboot")
    elif verb == "busy":
        mcu.nack_next(NackReason.BUSY, int(args[0]) if args else 1)
    elif verb == "error":
        mcu.report_error(int(args[0]), args[1] if len(args) > 1 else "")


def build_parser() -> argparse.ArgumentParser:
    steps = "\n".join(f"  {usage}" for _, _, usage in STEPS.values())
    parser = argparse.ArgumentParser(
        prog="python -m firmware_bridge.simulator",
        description="Play the scanner's microcontroller on a pty.",
        epilog=f"script steps:\n{steps}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Options default to None and are dropped, so SimConfig holds the only defaults.
    parser.add_argument("--link", default=DEFAULT_LINK, help="stable path (symlink) to publish the port at")
    parser.add_argument("--serial", help="serial number in HELLO")
    parser.add_argument("--drop", type=float, help="fraction of bytes lost each way")
    parser.add_argument("--tx-drop", type=float, help="fraction of MCU -> host bytes lost")
    parser.add_argument("--rx-drop", type=float, help="fraction of host -> MCU bytes lost")
    parser.add_argument("--garbage", type=float, help="chance of garbage spliced into each frame sent")
    parser.add_argument("--seed", type=int, help="seed of the fault generator")
    parser.add_argument("--heartbeat-interval-s", type=float)
    parser.add_argument("--retransmit-s", type=float)
    parser.add_argument("--battery-percent", type=float)
    parser.add_argument("--script", default="", help="steps to run, separated by ';'")
    parser.add_argument("--exit", action="store_true", help="exit when the script is done")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        steps = parse_script(args.script)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.drop is not None:
        args.tx_drop = args.tx_drop if args.tx_drop is not None else args.drop
        args.rx_drop = args.rx_drop if args.rx_drop is not None else args.drop
    names = {f.name for f in dataclasses.fields(SimConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with McuSimulator(args.link, SimConfig(**overrides)) as mcu:
        print(f"MCU {mcu.config.serial} plugged in at {args.link} -> {mcu.pty.slave_name}", flush=True)
        for verb, step_args in steps:
            if stop.is_set():
                break
            print(f"> {verb} {' '.join(step_args)}".rstrip(), flush=True)
            run_step(mcu, verb, step_args, stop)
        if not args.exit:
            stop.wait()
        stats = mcu.stats
        print(
            f"presses {stats.presses} acked {stats.buttons_acked} retransmits {stats.button_retransmits}"
            f" led applied {stats.led_applied} dropped bytes {stats.bytes_dropped}",
            flush=True,
        )
    return 0
