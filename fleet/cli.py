"""``scalpedge fleet listen --config FILE``: run the reference consumer until SIGTERM/SIGINT.

Log lines (logger ``fleet.consumer``): ``connected``, ``seq gap(s) ...`` when a gap is first seen,
``asked to resend ...`` per resend request, ``rejected message ...`` for invalid payloads,
``conflict`` for one seq under two msg_ids. Exit codes: 0 after a clean stop, 2 for a bad
config, 3 when the ``device`` extra (paho-mqtt, jsonschema) is missing.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from fleet import broker_config

__all__ = ["register", "run_listen"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fleet = sub.add_parser("fleet", help="fleet-side tools (reference MQTT consumer)")
    fsub = fleet.add_subparsers(dest="fleet_command", metavar="FLEET_COMMAND")
    fsub.required = True
    p = fsub.add_parser("listen", help="store results from devices idempotently and request resends for seq gaps")
    p.add_argument("--config", required=True, help="TOML file with [mqtt] (connection, fleet) and [fleet] sections")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run)")
    p.add_argument("--report", default=None, help="write the final per-device report (JSON) here")
    p.set_defaults(func=run_listen)
    broker_config.add_parser(fsub)


def run_listen(args: argparse.Namespace) -> int:
    from device.contracts.errors import MissingExtra
    from fleet.config import load_fleet_config

    try:
        from fleet.consumer import FleetConsumer
    except ImportError as exc:
        raise MissingExtra(f"needs the device extra ({exc.name}): pip install 'scalpedge[device]'") from exc
    cfg = load_fleet_config(args.config)
    consumer = FleetConsumer(cfg.mqtt, cfg.fleet)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    deadline = None if args.duration is None else time.monotonic() + args.duration
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            consumer.step(0.1)
        report = consumer.report()
    finally:
        consumer.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    text = json.dumps(report, indent=2)
    if args.report:
        Path(args.report).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0
