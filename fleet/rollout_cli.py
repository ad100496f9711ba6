"""``scalpedge fleet rollout start|status|rollback|serve``: signed model rollouts (``fleet.rollout``).

Each command reads ``[mqtt]`` and ``[rollout]`` (with ``[rollout.groups]``) from ``--config``
and prints the rollout's record as JSON. Exit codes: 0 done (``start``/``rollback``: every device
reached answered and none refused); 1 a device refused or did not answer within ``--wait``;
2 bad input (config, group, bundle folder, an unknown rollout); 3 the ``device`` extra is
missing; 1 as well when the broker cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["add_parser"]


def add_parser(fsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = fsub.add_parser("rollout", help="signed model rollouts: publish a bundle to a group, staged; roll back")
    rsub = p.add_subparsers(dest="rollout_command", metavar="ROLLOUT_COMMAND", required=True)
    cfg_help = "fleet.toml with [mqtt] and [rollout] (serve_root, base_url, state, [rollout.groups])"

    s = rsub.add_parser("start", help="stage a bundle and send it to a group's devices in the stage (or widen it)")
    s.add_argument("--config", required=True, help=cfg_help)
    s.add_argument("--bundle", required=True, help="signed bundle folder (scalpedge bundle build)")
    s.add_argument("--group", required=True, help="group name from [rollout.groups] (or naming --devices)")
    s.add_argument("--devices", help="comma-separated device ids instead of the group's in the config")
    s.add_argument("--percent", type=float, default=100.0, help="stage: share of the group, by device-id hash")
    s.add_argument("--base-url", help="the bundle server as devices reach it; overrides [rollout] base_url")
    s.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the devices' answers (0: none)")
    s.set_defaults(func=_start)

    st = rsub.add_parser("status", help="a rollout's devices and their answers (collects queued answers first)")
    st.add_argument("--config", required=True, help=cfg_help)
    st.add_argument("--rollout", help="rollout id, <group>@<version> (default: every rollout)")
    st.add_argument("--wait", type=float, default=0.0, help="seconds to collect answers from the broker first")
    st.set_defaults(func=_status)

    r = rsub.add_parser("rollback", help="send every device a rollout reached back to the bundle it ran before")
    r.add_argument("--config", required=True, help=cfg_help)
    r.add_argument("--rollout", required=True, help="rollout id, <group>@<version>")
    r.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the devices' answers (0: none)")
    r.set_defaults(func=_rollback)

    v = rsub.add_parser("serve", help="serve staged bundles over HTTP (/bundles/<version>/<file>) until stopped")
    v.add_argument("--config", required=True, help=cfg_help)
    v.add_argument("--bind", help="address, overrides [rollout] bind")
    v.add_argument("--port", type=int, help="port, overrides [rollout] port")
    v.add_argument("--duration", type=float, help="stop after this many seconds (default: run)")
    v.set_defaults(func=_serve)


def _settings(args: argparse.Namespace) -> Any:
    from fleet.rollout import load_rollout_config

    return load_rollout_config(args.config)


def _client(settings: Any) -> Any:
    from device.contracts.errors import MissingExtra

    try:
        import paho.mqtt.client  # noqa: F401

        from fleet.rollout import RolloutClient
    except ImportError as exc:
        raise MissingExtra(f"needs the device extra ({exc.name}): pip install 'scalpedge[device]'") from exc
    return RolloutClient(settings)


def _print(record: Any) -> None:
    sys.stdout.write(json.dumps(record, indent=2, sort_keys=True) + "\n")


def _start(args: argparse.Namespace) -> int:
    from fleet.bundle_server import bundle_url, stage_bundle

    settings = _settings(args)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    members = settings.group(args.group, devices)
    base_url = args.base_url or settings.rollout.base_url
    if not base_url:
        raise ValueError("no bundle server URL: set [rollout] base_url or pass --base-url")
    staged = stage_bundle(args.bundle, settings.rollout.serve_root)
    url = bundle_url(base_url, staged.version)
    with _client(settings).connect() as client:
        record = client.start(staged, url, args.group, members, args.percent)
        if args.wait > 0:
            record = client.wait(record["rollout_id"], args.wait)
        ok = args.wait <= 0 or client.ok(record["rollout_id"])
    _print(record)
    return 0 if ok else 1


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = _client(settings)
    if args.wait > 0:
        with client.connect():
            threading.Event().wait(args.wait)
    ids = [args.rollout] if args.rollout else sorted(client.state.rollouts)
    _print({rollout_id: client.record(rollout_id) for rollout_id in ids})
    return 0


def _rollback(args: argparse.Namespace) -> int:
    with _client(_settings(args)).connect() as client:
        record = client.rollback(args.rollout)
        if args.wait > 0:
            record = client.wait(args.rollout, args.wait)
        ok = args.wait <= 0 or client.ok(args.rollout)
    _print(record)
    return 0 if ok else 1


def _serve(args: argparse.Namespace) -> int:
    from fleet.bundle_server import BundleServer

    cfg = _settings(args).rollout
    server = BundleServer(cfg.serve_root, args.bind or cfg.bind, cfg.port if args.port is None else args.port).start()
    sys.stderr.write(f"serving {cfg.serve_root} at {server.url}/bundles/<version>/\n")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop.wait(args.duration)
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
