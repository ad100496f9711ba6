"""Errors every ``scalpedge`` command reports the same way (the CLI maps each to an exit code)."""

from __future__ import annotations

__all__ = ["MissingExtra"]


class MissingExtra(RuntimeError):
    """A subcommand needs an optional dependency group that is not installed (exit code 3)."""
