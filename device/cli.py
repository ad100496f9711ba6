"""The ``scalpedge`` command line.

Device subcommands are built in. Server-side subcommands (synth, train, eval, bench, export)
register themselves through the ``scalpedge.commands`` entry-point group, so this module never
imports training code; each entry point is a ``register(subparsers)`` function whose module
must import heavy dependencies (torch) only when its command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from device.bundle import BundleError

__all__ = ["main", "build_parser", "MissingExtra"]

ENTRY_POINT_GROUP = "scalpedge.commands"


class MissingExtra(RuntimeError):
    """A subcommand needs an optional dependency group that is not installed."""


def build_parser() -> argparse.ArgumentParser:
    from device import classify_command, fleet_command, run_command, segment_command

    parser = argparse.ArgumentParser(prog="scalpedge", description="ScalpEdge: hair segmentation and scalp measurement")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    segment_command.register(sub)
    classify_command.register(sub)
    fleet_command.register(sub)
    run_command.register(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except MissingExtra as exc:
        print(f"scalpedge {args.command}: {exc}", file=sys.stderr)
        return 3
    except BundleError as exc:
        print(f"scalpedge {args.command}: model bundle REFUSED: {exc}", file=sys.stderr)
        return 4
    except (FileNotFoundError, ValueError) as exc:
        print(f"scalpedge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
