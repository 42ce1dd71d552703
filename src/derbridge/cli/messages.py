"""``derbridge messages``: find, follow, replay and count the messages between the systems."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from derbridge.cli.common import (
    aware,
    bridge_call,
    err,
    out,
)

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

messages_app = typer.Typer(help="Messages between the systems: find, follow, replay, count.", no_args_is_help=True)


@messages_app.command("list")
def messages_list(
    flow: Annotated[str | None, typer.Option(help="Only this flow (e.g. enrollment-sync).")] = None,
    state: Annotated[str | None, typer.Option(help="pending, delivered, retrying, parked or dead.")] = None,
    business_key: Annotated[str | None, typer.Option(help="e.g. an enrollment id, or HEAD_END:NIC_ID.")] = None,
    correlation_id: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option(help="occurred at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, typer.Option(help="occurred before (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List messages, oldest first."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import MessageState
    from derbridge.contracts.envelope import Flow

    try:
        where = ops.MessageFilter(
            flow=Flow(flow) if flow else None,
            state=MessageState(state) if state else None,
            business_key=business_key,
            correlation_id=correlation_id,
            since=aware(since),
            until=aware(until),
        )
    except ValueError as error:
        err.print(f"[red]bad filter:[/] {error}")
        raise typer.Exit(2) from None

    async def work(runtime: Runtime, _transport: Any) -> list[Any]:
        items, _ = await ops.list_messages(runtime.async_engine("bridge"), where, limit=limit, after=None)
        return items

    items = bridge_call(work, with_transport=False)
    if as_json:
        sys.stdout.write(json.dumps([i.model_dump(mode="json") for i in items]) + "\n")
        return
    table = Table(title=f"{len(items)} messages", title_justify="left")
    for column in ("message_id", "flow", "type", "state", "attempts", "business_key", "occurred_at"):
        table.add_column(column)
    for item in items:
        table.add_row(
            item.message_id,
            item.flow,
            item.type,
            item.state.value,
            str(item.attempts),
            item.business_key,
            item.occurred_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@messages_app.command("show")
def messages_show(
    message_id: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a message's envelope and whole journey."""
    from derbridge.bridge import operations as ops

    async def work(runtime: Runtime, _transport: Any) -> Any:
        return await ops.show_message(runtime.async_engine("bridge"), message_id)

    journey = bridge_call(work, with_transport=False)
    if as_json:
        sys.stdout.write(journey.model_dump_json() + "\n")
        return
    out.print(f"[bold]{journey.message_id}[/] {journey.type} ({journey.flow}) {journey.source} → {journey.target}")
    out.print(
        f"state [bold]{journey.state.value}[/] after {journey.attempts} attempts; business key {journey.business_key}"
    )
    if journey.wake_on:
        out.print(f"waiting for {journey.wake_on}; next attempt {journey.next_attempt_at}")
    if journey.last_problem:
        out.print_json(json.dumps(journey.last_problem))
    table = Table(title="journey", title_justify="left")
    for column in ("#", "at", "outcome", "status", "ms", "detail"):
        table.add_column(column)
    for a in journey.journey:
        table.add_row(
            str(a.attempt),
            a.at.isoformat(timespec="milliseconds"),
            a.outcome,
            str(a.status_code or ""),
            str(a.duration_ms),
            a.detail or "",
        )
    out.print(table)


@messages_app.command("replay")
def messages_replay(message_ids: Annotated[list[str], typer.Argument(help="Dead or parked messages.")]) -> None:
    """Deliver dead or parked messages again, after their cause was fixed (no duplicate effect)."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import Tracker

    async def work(runtime: Runtime, transport: Any) -> None:
        tracker = Tracker(runtime.async_engine("bridge"))
        for message_id in message_ids:
            await ops.replay_message(tracker, transport, runtime.settings.bridge.queue_prefix, message_id)
            err.print(f"replayed {message_id}")

    bridge_call(work)


@messages_app.command("stats")
def messages_stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per flow, how many messages are in each state."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import STATES, Tracker

    async def work(runtime: Runtime, _transport: Any) -> dict[str, dict[str, int]]:
        return await ops.message_stats(Tracker(runtime.async_engine("bridge")))

    stats = bridge_call(work, with_transport=False)
    if as_json:
        sys.stdout.write(json.dumps(stats) + "\n")
        return
    table = Table(title="messages per flow and state", title_justify="left")
    table.add_column("flow")
    for state in STATES:
        table.add_column(state.value, justify="right")
    for flow, counts in stats.items():
        table.add_row(flow, *(f"{counts.get(s.value, 0):,}" for s in STATES))
    out.print(table)


@messages_app.command("wake")
def messages_wake(conditions: Annotated[list[str], typer.Argument(help="e.g. cis-account:A0000001")]) -> None:
    """Wake parked messages waiting for these conditions: they are delivered again at once."""
    from derbridge.bridge.tracking import Tracker

    async def work(runtime: Runtime, _transport: Any) -> int:
        return await Tracker(runtime.async_engine("bridge")).wake(set(conditions))

    err.print(f"woke {bridge_call(work, with_transport=False)} parked messages")
