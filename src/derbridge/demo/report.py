"""What the demo prints for the person watching it: a line per stage (with a spinner while it runs), then the
summary's tables, and how to explore the systems afterwards.

The stage lines are made here from what each stage of :mod:`derbridge.demo.script` returns; nothing here
drives or reads the systems.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table

T = TypeVar("T")

STATES = ("pending", "delivered", "retrying", "parked", "dead")


class Narration:
    """The demo's narration on ``console``: each stage's name, time and result line, kept in ``stages``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.stages: list[tuple[str, float, str]] = []

    def done(self, name: str, took: float, line: str) -> None:
        """A stage that ran (``took`` seconds) with ``line`` as its result."""
        self.stages.append((name, took, line))
        self.console.print(f"[green]✓[/] {name:<22} {took:6.2f} s  {line}")

    async def stage(self, name: str, work: Callable[[], Awaitable[T]], line: Callable[[T], str]) -> T:
        """Run one stage with a spinner, and keep its time and result line (``line`` of what it returned)."""
        started = time.perf_counter()
        with self.console.status(f"[bold]{name}[/] …"):
            result = await work()
        self.done(name, time.perf_counter() - started, line(result))
        return result


# --- the stage lines -------------------------------------------------------------------------------------


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))


def generated_line(customers: int, devices: int, aggregators: int) -> str:
    return f"{customers:,} customers, {devices:,} devices at {aggregators} aggregators"


def cis_line(counts: dict[str, Any], woken: int) -> str:
    return (
        f"{counts['assethub']['inserted']:,} new rows in Asset Hub, "
        f"{counts['derms']['inserted']:,} in the DERMS ({woken} parked messages woken)"
    )


def programs_line(program: str) -> str:
    return f"{program} active in Asset Hub, synced to the DERMS, and on the VTN"


def vens_line(vens: int) -> str:
    return f"{vens} aggregators hold a token and a VEN on the VTN"


def enroll_line(sent: int, requests: int) -> str:
    return f"{sent:,} resources onboarded through /resources/batch; {requests:,} enrollment requests forwarded"


def heartbeats_line(reported: int, offline: int, answers: dict[str, int]) -> str:
    return f"{reported:,} devices reported ({offline:,} offline); answered: " + _counts(answers)


def setup_line(states: dict[str, int], available: int) -> str:
    return _counts(states) + f"; {available:,} devices available"


def scores_line(rows: int, file_id: str) -> str:
    return f"{rows:,} device scores loaded as snapshot {file_id}"


def event_line(event: dict[str, Any], reported: int | None) -> str:
    """An event run to its outcomes (``reported`` of them through the VTN), or cancelled (``None``)."""
    if reported is None:
        return (
            f"event {event['event_id']} reserved {event['reserved_count']:,} devices, then cancelled before start; "
            "withdrawn from the VTN"
        )
    return (
        f"event {event['event_id']} reserved {event['reserved_count']:,} of {event['candidate_count']:,} "
        f"candidates; {reported:,} outcomes reported through the VTN, the rest closed NON_RESPONSIVE"
    )


# --- the summary -----------------------------------------------------------------------------------------


def print_summary(console: Console, summary: dict[str, Any], data_dir: Path) -> None:
    """The summary of :func:`derbridge.demo.checks.summary` as tables and lines, the verdict of the
    consistency checks, and the command that serves what the demo left in ``data_dir``."""
    table = Table(title="messages per flow (from the bridge's tracking)", title_justify="left")
    table.add_column("flow")
    for state in STATES:
        table.add_column(state, justify="right")
    for flow, counts in summary["flows"].items():
        table.add_row(flow, *(f"{counts[s]:,}" for s in STATES))
    console.print(table)
    console.print(
        "enrollments: " + _counts(summary["enrollments"]) + "\n"
        "status checks: " + _counts(summary["status_checks"]) + "\n"
        f"scores: {summary['scores']['rows']:,} rows, {summary['scores']['eligible']:,} eligible"
    )
    for event in summary["events"]:
        console.print(
            f"event {event['event_id']}: {event['status']}, {event['reserved']:,} reserved of "
            f"{event['requested']:,} asked; outcomes " + (_counts(event["outcomes"]) or "none")
        )
    agree = all(summary["consistency"].values())
    failed = [k.replace("_", " ") for k, v in summary["consistency"].items() if not v]
    console.print(
        "[green]the two systems agree[/]" if agree else "[red]the two systems disagree:[/] " + ", ".join(failed)
    )
    # markup=False: a path with brackets is printed as it is, to be copied.
    console.print(
        f"Done in {summary['seconds']:.1f} s. Explore: "
        + shlex.join([*how_to_run(), "--data-dir", str(data_dir), "up"]),
        markup=False,
        highlight=False,
    )


def how_to_run() -> list[str]:
    """The words that run this derbridge again from this shell, as typed: ``derbridge`` when that is what
    the shell finds on PATH, else the path of the running program (relative to the current directory when it
    is under it, e.g. ``.venv/bin/derbridge``), or ``python -m derbridge`` with this interpreter."""
    program = Path(sys.argv[0])
    if program.name == "__main__.py" or not program.exists():
        return [_as_typed(Path(sys.executable)), "-m", "derbridge"]
    found = shutil.which(program.name)
    if found is not None and Path(found).resolve() == program.resolve():
        return [program.name]
    return [_as_typed(program)]


def _as_typed(path: Path) -> str:
    """``path`` relative to the current directory when it is under it (still with a slash, so that the
    shell runs it as a path and not through PATH), else absolute."""
    absolute = path.absolute()
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return str(absolute)
    return str(relative) if len(relative.parts) > 1 else f"./{relative}"
