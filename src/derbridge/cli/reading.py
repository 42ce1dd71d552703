"""What the listing commands (``enrollments``, ``devices``, ``events``) share: paging options, the not-found
line, the next-page hint, and how times and counts are shown.

The commands read each system through its own read code (``derbridge.assethub.queries``,
``derbridge.derms.queries``) against the databases the settings name: no server needs to run.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.cli.common import ExitCode, err, fail, out, system_call

if TYPE_CHECKING:
    from derbridge.runtime import Runtime


Limit = Annotated[int, typer.Option("--limit", min=1, max=1000, help="Rows per page (1-1000).")]
After = Annotated[
    str | None, typer.Option("--after", help="Start after this cursor: the one the previous page printed.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the page as JSON (the API's fields) on stdout.")]


class Missing(Exception):
    """The record asked for is not there."""


def read(work: Callable[[Runtime], Awaitable[Any]], missing: str) -> Any:
    """Run ``work(runtime)`` against the systems' databases; a record that is not there (a
    :class:`~derbridge.errors.NotFound`, or :class:`Missing`) prints ``missing`` as one line and exits with
    status 3."""
    from derbridge.errors import NotFound

    async def guarded(runtime: Runtime) -> Any:
        try:
            return await work(runtime)
        except NotFound:
            raise Missing from None

    try:
        return system_call(guarded)
    except Missing:
        fail(missing, ExitCode.NOT_FOUND)


def next_page_hint(command: str, options: Mapping[str, Any], limit: int, next_after: str | None) -> None:
    """Say on stderr how to get the next page (the same command, ``--after`` the cursor), if there is one."""
    if next_after is None:
        return
    words = command.split()
    for option, value in options.items():
        if value is None or value is False:
            continue
        words.append(option)
        if value is not True:
            words.append(str(value.value if hasattr(value, "value") else value))
    words += ["--limit", str(limit), "--after", next_after]
    err.print(f"more: {shlex.join(words)}", markup=False, highlight=False)


def show(*renderables: Any) -> None:
    """Print to stdout. Piped into a file or ``grep`` (no terminal, no ``COLUMNS``), tables get 240 columns
    rather than Rich's 80: cut ids and times are of no use to a script or a log."""
    if out.is_terminal or "COLUMNS" in os.environ:
        out.print(*renderables)
        return
    from rich.console import Console

    Console(width=240, soft_wrap=True).print(*renderables)


def id_column(header: str) -> Any:
    """A table column for an id: folded onto two lines in a narrow terminal, never cut short."""
    from rich.table import Column

    return Column(header, overflow="fold")


def when(value: datetime | None) -> str:
    """A time for a table: UTC to the second, or a dash."""
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def counts(values: Mapping[str, int]) -> str:
    """``{"A": 2, "B": 1}`` as ``A 2 · B 1``, or ``none``."""
    return " · ".join(f"{key} {count:,}" for key, count in values.items()) or "none"
