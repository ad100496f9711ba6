"""The ``scalpedge`` command line.

Device subcommands (segment, classify, device run) are built in. The fleet and server-side
subcommands (fleet, synth, train, eval, bench, export, bundle, calibrate) register themselves
through the ``scalpedge.commands`` entry-point group, so this module never imports fleet or
training code; each entry point is a ``register(subparsers)`` function whose module
must import heavy dependencies (torch) only when its command runs.

One convention for every command: the global options (``-v``, ``--log-json``) are accepted
before or after the subcommand; ``--version`` prints the package version; log lines start with
an ISO-8601 UTC timestamp (milliseconds) in text and JSON alike; ``main`` maps each outcome to
one ``ExitCode`` (``device.contracts.errors``) and prints one line naming the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, entry_points, version

from device.contracts.errors import ExitCode, MissingExtra
from device.models.bundle import BundleError
from device.sync.outbox_store import OutboxError

__all__ = ["main", "build_parser", "package_version", "ExitCode", "MissingExtra"]

ENTRY_POINT_GROUP = "scalpedge.commands"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger(__name__)


def _utc(record: logging.LogRecord) -> str:
    """The record's time as ISO-8601 UTC with milliseconds: ``2026-11-29T14:15:10.123+00:00``."""
    return datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``<ts> LEVEL logger: message``, ts as in the JSON logs (UTC, milliseconds)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return _utc(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, RFC 3339), level, logger, msg (+ exc when any)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": _utc(record), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def package_version() -> str:
    """The installed ``scalpedge`` distribution's version ("unknown" when run from a source tree
    that was never installed)."""
    try:
        return version("scalpedge")
    except PackageNotFoundError:
        return "unknown"


def _add_global_options(parser: argparse.ArgumentParser, *, root: bool) -> None:
    """-v and --log-json. On a subcommand they are hidden and default to SUPPRESS, so the value
    given before the subcommand stands unless repeated after it; names a subcommand already
    uses are left to it."""
    taken = set(parser._option_string_actions)
    for names, help_text in (
        (("-v", "--verbose"), "debug logging (accepted anywhere on the command line)"),
        (("--log-json",), "log one JSON object per line, for log shippers (accepted anywhere on the command line)"),
    ):
        free = [n for n in names if n not in taken]
        dest = names[-1].removeprefix("--").replace("-", "_")
        if free and root:
            parser.add_argument(*free, dest=dest, action="store_true", help=help_text)
        elif free:
            parser.add_argument(
                *free, dest=dest, action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
            )


def _subcommand_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` (each once, aliases folded), depth first."""
    seen: set[int] = set()
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    if id(child) not in seen:
                        seen.add(id(child))
                        stack.append(child)
                        yield child


def build_parser() -> argparse.ArgumentParser:
    from device.cli import classify, report, run, segment, session

    parser = argparse.ArgumentParser(prog="scalpedge", description="ScalpEdge: hair segmentation and scalp measurement")
    parser.add_argument(
        "--version",
        action="version",
        version=f"scalpedge {package_version()}",
        help="print the package version and exit",
    )
    _add_global_options(parser, root=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    segment.register(sub)
    classify.register(sub)
    run.register(sub)
    session.register(sub)
    report.register(sub)
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        ep.load()(sub)
    for child in _subcommand_parsers(parser):  # after the entry points: their commands too
        _add_global_options(child, root=False)
        child.set_defaults(command_path=child.prog)  # the innermost command's name wins
    return parser


def _describe(exc: BaseException) -> str:
    """An OSError as ``path: reason`` (not ``[Errno 13] Permission denied: 'path'``), else str."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"{target}: {exc.strerror}"
    return str(exc)


def _outcome(exc: BaseException) -> tuple[ExitCode, str]:
    """The exit code and the one-line message for a command that raised ``exc``."""
    if isinstance(exc, MissingExtra):
        return ExitCode.MISSING_EXTRA, str(exc)
    if isinstance(exc, BundleError):
        return ExitCode.BUNDLE_REFUSED, f"model bundle REFUSED: {exc}"
    if isinstance(exc, OutboxError):  # not a damaged file (that is quarantined): unwritable, another device's
        return ExitCode.OUTBOX_UNUSABLE, f"outbox unusable: {exc}"
    if isinstance(exc, (FileNotFoundError, ValueError)):  # BundleNotFound too: a wrong path is not tampering
        return ExitCode.USAGE, f"error: {_describe(exc)}"
    if isinstance(exc, OSError):  # an output that cannot be written, a device that fails
        return ExitCode.FAILED, f"error: {_describe(exc)}"
    return ExitCode.INTERRUPTED, "interrupted"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code per ``ExitCode`` (argparse exits 2 itself on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if args.log_json else TextFormatter())
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    command = getattr(args, "command_path", "scalpedge")  # e.g. "scalpedge bundle verify"
    try:
        return int(args.func(args) or 0)
    except (MissingExtra, BundleError, OutboxError, ValueError, OSError, KeyboardInterrupt) as exc:
        code, message = _outcome(exc)
        log.debug("%s: exit %d", command, code, exc_info=True)  # the traceback, with -v
    print(f"{command}: {message}", file=sys.stderr)
    return int(code)
