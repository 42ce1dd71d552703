"""What every command group shares: the consoles, the global options' state, settings, and the two ways a
command reaches the systems (their databases, or the bridge's database and transport).

Progress bars, tables of rejections and notices go to stderr, so that ``--json`` output on stdout stays
machine-readable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

    from derbridge.runtime import Runtime
    from derbridge.settings import Settings

# soft_wrap: a message is one line in a log or a pipe, not cut at 80 columns.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

MAX_REJECTIONS_SHOWN = 50


class State:
    """What the global options set for the subcommands."""

    data_dir: Path | None = None


state = State()


def load_settings() -> Settings:
    """Settings from the environment and config file, with the global ``--data-dir`` on top."""
    from derbridge.settings import Settings

    if state.data_dir is not None:
        return Settings(data_dir=state.data_dir)
    return Settings()


def progress_bar() -> Progress:
    """A transient progress bar on stderr."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


def system_call(work: Callable[[Runtime], Awaitable[Any]]) -> Any:
    """Run ``work(runtime)`` against the configured systems (migrated first if behind); problems become
    messages."""
    import asyncio

    from derbridge.assethub import flows as assethub_flows
    from derbridge.derms import flows as derms_flows
    from derbridge.infra.problems import ProblemError
    from derbridge.runtime import Runtime, ensure_migrated

    settings = load_settings()
    ensure_migrated(settings)
    assethub_flows.load()
    derms_flows.load()

    async def run() -> Any:
        from derbridge.api.app import configure_flows

        runtime = Runtime(settings)
        configure_flows(runtime, "assethub")
        configure_flows(runtime, "derms")
        try:
            return await work(runtime)
        finally:
            await runtime.aclose()

    try:
        return asyncio.run(run())
    except ProblemError as problem:
        err.print(f"[red]{problem.title}:[/] {problem.detail}")
        for error in problem.errors or []:
            err.print(f"  {error.field}: {error.message}")
        raise typer.Exit(1 if problem.status != 404 else 3) from None


def print_json(value: Any) -> None:
    """One JSON document on stdout, for scripts."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def bridge_call(work: Callable[[Runtime, Any], Awaitable[Any]], *, with_transport: bool = True) -> Any:
    """Run ``work(runtime, transport)`` against the bridge database and transport, then close them. Only the
    bridge's database is opened, so only it is checked (and migrated if behind). ``with_transport=False``
    (commands that only read or update the bridge's tables) passes ``None`` and connects to no broker."""
    import asyncio

    from derbridge.infra.problems import ProblemError
    from derbridge.runtime import Runtime, ensure_migrated

    settings = load_settings()
    ensure_migrated(settings, ["bridge"])

    async def run() -> Any:
        runtime = Runtime(settings)
        if not with_transport:
            try:
                return await work(runtime, None)
            finally:
                await runtime.aclose()
        from derbridge.bridge.assembly import build_transport
        from derbridge.bridge.worker import flow_queues

        transport = build_transport(runtime)
        try:
            await transport.start(list(flow_queues(settings.bridge.queue_prefix)))
            return await work(runtime, transport)
        finally:
            await transport.close()
            await runtime.aclose()

    try:
        return asyncio.run(run())
    except ProblemError as problem:
        err.print(f"[red]{problem.title}:[/] {problem.detail}")
        raise typer.Exit(1 if problem.status != 404 else 3) from None


def aware(value: datetime | None) -> datetime | None:
    """A time typed without an offset is UTC."""
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
