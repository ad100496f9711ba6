"""The ``scalpedge`` command line.

Device subcommands (segment, classify, device run) are built in. The fleet and server-side
subcommands (fleet, synth, train, eval, bench, export, bundle, calibrate) register themselves
through the ``scalpedge.commands`` entry-point group, so this module never imports fleet or
training code; each entry point is a ``register(subparsers)`` function whose module
must import heavy dependencies (torch) only when its command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib.metadata import entry_points

from device.contracts.errors import MissingExtra
from device.models.bundle import BundleError
from device.sync.outbox_store import OutboxError

__all__ = ["main", "build_parser", "MissingExtra"]

ENTRY_POINT_GROUP = "scalpedge.commands"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, RFC 3339), level, logger, msg (+ exc when any)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def build_parser() -> argparse.ArgumentParser:
    from device.cli import classify, run, segment

    parser = argparse.ArgumentParser(prog="scalpedge", description="ScalpEdge: hair segmentation and scalp measurement")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line (for log shippers)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    segment.register(sub)
    classify.register(sub)
    run.register(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if args.log_json else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    try:
        return int(args.func(args) or 0)
    except MissingExtra as exc:
        print(f"scalpedge {args.command}: {exc}", file=sys.stderr)
        return 3
    except BundleError as exc:
        print(f"scalpedge {args.command}: model bundle REFUSED: {exc}", file=sys.stderr)
        return 4
    except OutboxError as exc:  # not a damaged file (that is quarantined): unwritable, another device's
        print(f"scalpedge {args.command}: outbox unusable: {exc}", file=sys.stderr)
        return 5
    except (FileNotFoundError, ValueError) as exc:
        print(f"scalpedge {args.command}: error: {exc}", file=sys.stderr)
        return 2
