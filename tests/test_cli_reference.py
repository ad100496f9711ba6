"""docs/cli.md and README.md's command index agree with the parsers of `scalpedge`."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

from device.cli import build_parser
from device.cli.reference import REGENERATE, leaf_commands, render

ROOT = Path(__file__).resolve().parents[1]
INDEX_ROW = re.compile(r"^\| \[`scalpedge ([^`]+)`\]\(docs/cli\.md#([^)]+)\) \|")


def _readme_index() -> list[tuple[str, str]]:
    """(command, anchor) of each row of README.md's "## Commands" table, in order."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("## Commands")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return [(m.group(1), m.group(2)) for line in lines[start:end] if (m := INDEX_ROW.match(line))]


def test_docs_cli_md_is_the_rendering_of_the_parsers() -> None:
    expected = render(build_parser())
    actual = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    diff = "".join(
        list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), "docs/cli.md", "parsers"))[:40]
    )
    assert actual == expected, f"docs/cli.md is stale; regenerate it with `{REGENERATE}`:\n{diff}"


def test_rendering_ignores_the_terminal_width() -> None:
    """`python -m device.cli.reference` prints the same Markdown in a 20- and a 300-column terminal."""
    outs = []
    for columns in ("20", "300"):
        env = {**os.environ, "COLUMNS": columns}
        command = [sys.executable, "-m", "device.cli.reference"]
        outs.append(subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout)
    assert outs[0] == outs[1] == render(build_parser())


def test_every_command_and_option_has_a_section() -> None:
    """Each runnable command gets a heading, and every option string of its parser appears under it."""
    text = render(build_parser())
    sections = dict(re.findall(r"^#{2,4} scalpedge ([^\n]+)\n(.*?)(?=^#{2,4} |\Z)", text, re.M | re.S))
    parser = build_parser()
    for command in leaf_commands(parser):
        assert command in sections, f"no section for `scalpedge {command}`"
        sub = parser
        for word in command.split():
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:  # the global options, accepted after any command
                continue
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in sections[command] or f", {option}" in sections[command], (command, option)


def test_readme_command_index_matches_the_parsers() -> None:
    """Every runnable command is in README's index, one row each, and every row is a command."""
    rows = _readme_index()
    names = [name for name, _ in rows]
    parsed = leaf_commands(build_parser())
    assert len(names) == len(set(names)), f"commands listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    missing, unknown = sorted(set(parsed) - set(names)), sorted(set(names) - set(parsed))
    assert not missing and not unknown, f"README.md index lacks {missing}; lists unknown {unknown}"
    for name, anchor in rows:
        assert anchor == "scalpedge-" + name.replace(" ", "-"), f"README.md links `scalpedge {name}` to #{anchor}"


def test_readme_is_the_front_door() -> None:
    """At most 150 lines, and the two fresh-machine commands come first."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines"
    commands = [line for line in lines if line.startswith(("python3 -m venv", "bash .ci/setup"))]
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[device]' && .venv/bin/scalpedge device run --demo",
        "bash .ci/setup && .venv/bin/python -m pytest -q",
    ]
    first_section = next(i for i, line in enumerate(lines) if line.startswith("## "))
    assert all(lines.index(c) < first_section for c in commands)
