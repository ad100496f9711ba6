"""What the server-side subcommands (``server_train.cli``, ``refiner_cli``, ``classifier_cli``)
share: command groups, training configs from options, JSON reports. Torch-free."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from device.contracts.errors import MissingExtra

__all__ = ["command_group", "config_from_args", "need_torch", "print_summary", "write_report"]

C = TypeVar("C")


def command_group(sub: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """Add ``scalpedge NAME WHAT ...``: a parser ``name`` whose subcommand (required) lands in
    ``args.what``; returns its subparsers."""
    return sub.add_parser(name, help=help).add_subparsers(dest="what", metavar="WHAT", required=True)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """``cls`` (a dataclass) from the options named like its fields; options left unset (None)
    keep the dataclass defaults."""
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in vars(args).items() if k in fields and v is not None})


def need_torch() -> None:
    """Raise ``MissingExtra`` (exit code 3) when torch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("needs the training extra: pip install 'scalpedge[train]'") from exc


def write_report(path: str | Path, report: dict[str, Any], rows: str | None = None) -> Path:
    """Write ``report`` as indented JSON to ``path`` (parents created), say so, and print each
    item of ``report[rows]`` as one JSON line when ``rows`` is given; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {path}")
    for row in report[rows] if rows else ():
        print(json.dumps(row))
    return path


def print_summary(report: dict[str, Any]) -> None:
    """Print the report's scalar entries (not its lists or dicts) as indented JSON."""
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, (list, dict))}, indent=1))
