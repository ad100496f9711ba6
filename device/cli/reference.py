"""The whole ``scalpedge`` command line as Markdown, rendered from ``device.cli.build_parser()``.

    python -m device.cli.reference > docs/cli.md

Every subcommand, recursively, with its help, usage and options (defaults, choices, required).
The output is deterministic: subcommands sorted by name, options in the order the parser
declares them, nothing wrapped to the terminal (argparse's help formatter, which reads
``COLUMNS``, is used only for its width-free pieces). ``tests/test_cli_reference.py`` checks
docs/cli.md and README.md's command index against it. Importing this module imports no
command modules; ``build_parser()`` runs only when a rendering is asked for.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

__all__ = ["REGENERATE", "Command", "walk", "leaf_commands", "render", "main"]

PROG = "scalpedge"
REGENERATE = "python -m device.cli.reference > docs/cli.md"
_RAW_FORMATTERS = (argparse.RawDescriptionHelpFormatter, argparse.RawTextHelpFormatter)


@dataclass(frozen=True)
class Command:
    """One parser in the command tree; ``path`` is () for ``scalpedge`` itself."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    help: str
    aliases: tuple[str, ...]

    @property
    def name(self) -> str:
        """The full command line prefix, e.g. ``scalpedge eval seg``."""
        return " ".join((PROG, *self.path))

    @property
    def is_leaf(self) -> bool:
        return _subparsers(self.parser) is None


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _children(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> list[Command]:
    """Direct subcommands, sorted by name; aliases folded into the first name registered."""
    sub = _subparsers(parser)
    if sub is None:
        return []
    helps = {choice.dest: choice.help or "" for choice in sub._choices_actions}
    names: dict[int, list[str]] = {}
    parsers: dict[int, argparse.ArgumentParser] = {}
    for name, child in sub.choices.items():
        names.setdefault(id(child), []).append(name)
        parsers[id(child)] = child
    out = [
        Command((*path, found[0]), parsers[key], helps.get(found[0], ""), tuple(found[1:]))
        for key, found in names.items()
    ]
    return sorted(out, key=lambda c: c.path)


def walk(parser: argparse.ArgumentParser | None = None) -> list[Command]:
    """Every command of the tree, depth first, the root first and siblings sorted by name."""
    root = parser if parser is not None else _build()
    out: list[Command] = []
    stack = [Command((), root, root.description or "", ())]
    while stack:
        command = stack.pop()
        out.append(command)
        stack.extend(reversed(_children(command.parser, command.path)))
    return out


def leaf_commands(parser: argparse.ArgumentParser | None = None) -> list[str]:
    """The runnable commands without the program name, e.g. ``["bench refiner", ...]``."""
    return [" ".join(c.path) for c in walk(parser) if c.path and c.is_leaf]


def _build() -> argparse.ArgumentParser:
    from device.cli import build_parser

    return build_parser()


def _shown(action: argparse.Action) -> bool:
    return action.help != argparse.SUPPRESS and not isinstance(
        action, (argparse._HelpAction, argparse._SubParsersAction)
    )


def _spelling(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    """``--stage {coarse,refined,fused}``, ``--hard``, ``PATHS [PATHS ...]``: as argparse spells it."""
    if not action.option_strings:
        return formatter._format_args(action, action.dest)
    args = formatter._format_args(action, action.dest.upper()) if action.nargs != 0 else ""
    return " ".join(part for part in (", ".join(action.option_strings), args) if part)


def _usage(command: Command, formatter: argparse.HelpFormatter) -> str:
    """One line, never wrapped: required options bare, optional ones in brackets."""
    parts = [command.name]
    for action in command.parser._actions:
        if not _shown(action):
            if isinstance(action, argparse._SubParsersAction):
                parts.append(f"{action.metavar or action.dest.upper()} ...")
            continue
        if not action.option_strings:
            parts.append(formatter._format_args(action, action.dest))
            continue
        args = formatter._format_args(action, action.dest.upper()) if action.nargs != 0 else ""
        one = " ".join(part for part in (action.option_strings[0], args) if part)
        parts.append(one if action.required else f"[{one}]")
    return " ".join(parts)


def _default(action: argparse.Action) -> str | None:
    value = action.default
    if value is None or value is argparse.SUPPRESS or value == []:
        return None
    if action.nargs == 0 and isinstance(value, bool):
        return None  # a flag's off state
    return f"`{value}`" if value != "" else '`""`'


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _option(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    notes = []
    if action.required and action.option_strings:
        notes.append("required")
    default = _default(action)
    if default is not None:
        notes.append(f"default {default}")
    if isinstance(action, (argparse._AppendAction, argparse._ExtendAction)):
        notes.append("repeatable")
    help_text = _one_line(formatter._expand_help(action)) if action.help else ""
    line = f"- `{_spelling(action, formatter)}`"
    if notes:
        line += f" ({', '.join(notes)})"
    return line + (f": {help_text}" if help_text else "")


def _description(parser: argparse.ArgumentParser) -> list[str]:
    if not parser.description:
        return []
    raw = isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class, _RAW_FORMATTERS)
    if raw:
        return ["```text", parser.description.strip("\n"), "```", ""]
    return [_one_line(parser.description), ""]


def _section(command: Command) -> list[str]:
    formatter = argparse.HelpFormatter(command.name, width=10_000)
    level = "#" * min(2 + max(len(command.path) - 1, 0), 4)
    lines = [f"{level} {command.name}", ""]
    if command.help and command.path:
        lines += [_one_line(command.help), ""]
    if command.aliases:
        lines += ["Also spelled: " + ", ".join(f"`{a}`" for a in command.aliases) + ".", ""]
    lines += _description(command.parser) if command.path else []
    lines += ["```text", _usage(command, formatter), "```", ""]
    options = [_option(a, formatter) for a in command.parser._actions if _shown(a)]
    if options:
        lines += [*options, ""]
    children = _children(command.parser, command.path)
    if children:
        lines += ["Subcommands:", ""]
        lines += [f"- [{c.name}](#{_anchor(c.name)}): {_one_line(c.help)}" for c in children] + [""]
    return lines


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading made of words, spaces and hyphens."""
    return heading.lower().replace(" ", "-")


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """docs/cli.md: a title, then one section per command, depth first, siblings sorted."""
    commands = walk(parser)
    root = commands[0].parser
    lines = [
        f"# {PROG} command reference",
        "",
        f"Generated from `device.cli.build_parser()` by `{REGENERATE}`; do not edit by hand",
        "(`tests/test_cli_reference.py` fails when this file and the parsers disagree).",
        "A default shown here is the parser's own; an option shown without one takes its default",
        "from the command's config dataclass or `device/contracts/constants.py` when not given.",
        "",
        _one_line(root.description or ""),
        "",
    ]
    for command in commands:
        lines += _section(command)
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
