"""Errors every ``scalpedge`` command reports the same way, and the exit code of each outcome.

``device.cli.main`` maps exceptions to ``ExitCode`` (docs/runtime.md, "Exit codes, logs,
shutdown"): a command returns ``ExitCode.OK`` or ``ExitCode.FAILED`` itself and raises for the
rest: ``FileNotFoundError`` / ``ValueError`` (bad input, exit 2), ``MissingExtra`` (3),
``BundleError`` (4), ``OutboxError`` (5); any other ``OSError`` (an output that cannot be
written) is exit 1.
"""

from __future__ import annotations

import enum

__all__ = ["ExitCode", "MissingExtra"]


class ExitCode(enum.IntEnum):
    """Exit status of a ``scalpedge`` command; the same failure has the same code everywhere."""

    OK = 0
    FAILED = 1  # ran, but something failed: a diagnosis not stored, a file unreadable, an output unwritable
    USAGE = 2  # bad input: usage, configuration, a value, or a path (bundle, frame, model) not found
    MISSING_EXTRA = 3  # an optional dependency group is not installed
    BUNDLE_REFUSED = 4  # the model bundle failed verification: tampered, unsigned, untrusted, revoked, downgrade
    OUTBOX_UNUSABLE = 5  # device run: the outbox cannot be opened (unwritable, full, another device's)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it


class MissingExtra(RuntimeError):
    """A subcommand needs an optional dependency group that is not installed (exit code 3)."""
