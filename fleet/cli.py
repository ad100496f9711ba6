"""``scalpedge fleet listen --config FILE``: run the reference consumer (one replica) until
SIGTERM/SIGINT. ``scalpedge fleet loadtest``: simulated scanners through a real Mosquitto to
consumer replicas, with faults (``fleet.loadtest``). ``scalpedge fleet serve --config FILE``:
the read-only dashboard over the same store (``fleet.web``).

Log lines (logger ``fleet.consumer``): ``store ...`` and ``connected`` at start, ``seq gap(s) ...:
asked to resend ...`` per resend request, ``rejected message ...`` for invalid payloads,
``conflict`` for one seq under two msg_ids. Exit codes: 0 after a clean stop, 2 for a bad
config or a store that cannot be opened, 3 when an extra is missing (``device``: paho-mqtt,
jsonschema; ``fleet``: psycopg for a PostgreSQL store).
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

from fleet import broker_config, rollout_cli

__all__ = ["register", "run_listen", "run_loadtest", "run_serve"]


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
    rollout_cli.add_parser(fsub)
    _add_loadtest(fsub)
    _add_serve(fsub)


def _add_serve(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = fsub.add_parser(
        "serve",
        help="the fleet dashboard: scanners, result streams, overlays, client trends, CSV (read-only web page)",
        description="Serve a read-only web dashboard over the store the config names ([fleet] store or db): "
        "scanners online/offline, a scanner's results, a result with its overlay thumbnail, a client's trend "
        "over visits, CSV export.",
    )
    p.add_argument("--config", required=True, help="the consumer's TOML file ([fleet] store or db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from device.contracts.errors import MissingExtra
    from fleet.config import load_fleet_config

    cfg = load_fleet_config(args.config)
    try:
        from fleet.web import serve
    except ImportError as exc:
        raise MissingExtra(f"needs the fleet extra ({exc.name}): pip install 'scalpedge[fleet]'") from exc
    serve(cfg.fleet.store_url, host=args.host, port=args.port)
    return 0


def _add_loadtest(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from fleet.loadtest import LoadTestConfig

    d = LoadTestConfig()
    p = fsub.add_parser(
        "loadtest",
        help="simulated scanners -> real Mosquitto -> consumer replicas, killing one replica and restarting the broker",
        description="Drive N simulated scanners (M results each, QoS 1, answering resend requests) through a "
        "Mosquitto started here to R consumer replicas sharing one store; SIGKILL replica 0 when a third is "
        "stored and the broker at two thirds; report produced, stored, lost, duplicates_stored, "
        "throughput_per_s and p95_latency_ms.",
    )
    p.add_argument("--devices", type=int, default=d.devices, help=f"simulated scanners (default {d.devices})")
    p.add_argument("--results", type=int, default=d.results, help=f"results per scanner (default {d.results})")
    p.add_argument("--replicas", type=int, default=d.replicas, help=f"consumer replicas (default {d.replicas})")
    p.add_argument(
        "--store", default=None, help="postgresql://user@host:port/db or a SQLite path (default: a SQLite file here)"
    )
    p.add_argument(
        "--interval-s",
        type=float,
        default=d.interval_s,
        help=f"seconds between two results of one scanner; 0: as fast as possible (default {d.interval_s})",
    )
    p.add_argument("--no-faults", action="store_true", help="kill no replica and do not restart the broker")
    p.add_argument(
        "--drain-timeout-s",
        type=float,
        default=d.drain_timeout_s,
        help=f"after the last result is produced, wait at most this long for the store (default {d.drain_timeout_s})",
    )
    p.add_argument("--workdir", default=None, help="keep configs and logs here (default: a temp folder, removed)")
    p.add_argument("--out", default=None, help="write the report (JSON) here (default: print it)")
    p.set_defaults(func=run_loadtest)


def run_loadtest(args: argparse.Namespace) -> int:
    from device.contracts.errors import MissingExtra

    try:
        from fleet.loadtest import LoadTestConfig
        from fleet.loadtest import run_loadtest as run
    except ImportError as exc:
        raise MissingExtra(f"needs the device extra ({exc.name}): pip install 'scalpedge[device]'") from exc
    cfg = LoadTestConfig(
        devices=args.devices,
        results=args.results,
        replicas=args.replicas,
        store=args.store or "",
        interval_s=args.interval_s,
        kill_replica=not args.no_faults,
        restart_broker=not args.no_faults,
        drain_timeout_s=args.drain_timeout_s,
        workdir=args.workdir or "",
    )
    report = run(cfg, args.out)
    keys = ("produced", "stored", "lost", "duplicates_stored", "throughput_per_s", "p95_latency_ms")
    sys.stdout.write(", ".join(f"{k} {report[k]}" for k in keys) + "\n")
    if not args.out:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0 if report["lost"] == 0 and report["duplicates_stored"] == 0 else 1


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
