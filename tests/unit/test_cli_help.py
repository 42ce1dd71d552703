"""The help a person reads: every option described, in the user's words, flowing paragraphs, no value
shown for flags."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from derbridge.cli import app

INTERNAL = re.compile(r"\bF\d\b|quality\.md|flows\.md|scoring\.md|product\.md|docs/")


def commands() -> Iterator[tuple[str, Any]]:
    def walk(command: Any, path: str) -> Iterator[tuple[str, Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    yield from walk(typer.main.get_command(app), "derbridge")


def test_every_option_and_argument_is_described() -> None:
    undescribed = [
        f"{path} {param.name}"
        for path, command in commands()
        for param in command.params
        if param.name != "help" and not (getattr(param, "help", None) or "").strip()
    ]
    assert undescribed == []


def test_help_speaks_the_users_words_not_internal_pages_or_flow_numbers() -> None:
    cited = [
        f"{path}: {text[:80]!r}"
        for path, command in commands()
        for text in [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
        if INTERNAL.search(text)
    ]
    assert cited == []


@pytest.mark.parametrize("columns", ["80", "120"])
def test_paragraphs_flow_and_flags_show_no_value(columns: str) -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": columns})
    assert result.exit_code == 0
    lines = [line.strip(" │") for line in result.output.splitlines()]
    # serve's docstring breaks its line after "with its": the list of commands reflows the paragraph to the
    # terminal's width instead of breaking the sentence there.
    assert not [line for line in lines if line.endswith("with its")]
    assert "the bridge worker with its operations API. Several processes" in " ".join(" ".join(lines).split())

    listed = CliRunner().invoke(app, ["messages", "list", "--help"], env={"COLUMNS": columns})
    assert "<bool>" not in listed.output
    assert re.search(r"--json\s+Print", listed.output)
