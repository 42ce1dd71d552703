"""``derbridge messages``: find, follow, replay and count the messages between the systems."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from derbridge.cli.common import (
    ExitCode,
    FlowChoice,
    MessageStateChoice,
    aware,
    bridge_call,
    err,
    out,
    progress_bar,
    report_problem,
)

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

messages_app = typer.Typer(help="Messages between the systems: find, follow, replay, count.", no_args_is_help=True)


@messages_app.command("list")
def messages_list(
    flow: Annotated[FlowChoice | None, typer.Option(help="Only the messages of this flow.")] = None,
    state: Annotated[
        MessageStateChoice | None,
        typer.Option(
            help="Only the messages in this state: pending (on its way), delivered, retrying (the target failed; "
            "tried again later), parked (waiting for something the target lacks), dead (refused: needs a person)."
        ),
    ] = None,
    business_key: Annotated[
        str | None, typer.Option(help="Only the messages about this: an enrollment or event id, or HEAD_END:NIC_ID.")
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option(help="Only the messages of one exchange (a request and its answer share it).")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only the messages that occurred at or after (ISO 8601).")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="Only the messages that occurred before (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="At most this many messages.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the messages as a JSON array.")] = False,
) -> None:
    """List messages, oldest first."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import MessageState
    from derbridge.contracts.envelope import Flow

    where = ops.MessageFilter(
        flow=Flow(flow.value) if flow else None,
        state=MessageState(state.value) if state else None,
        business_key=business_key,
        correlation_id=correlation_id,
        since=aware(since),
        until=aware(until),
    )

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
    message_id: Annotated[str, typer.Argument(help="The message, by its id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the message and its journey as JSON.")] = False,
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
def messages_replay(
    message_ids: Annotated[list[str], typer.Argument(help="Dead or parked messages, by id.")],
) -> None:
    """Deliver dead or parked messages again, after their cause was fixed (no duplicate effect).

    A message that cannot be replayed (unknown, or neither dead nor parked) is named and the others are
    replayed; the exit status is then 1."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import Tracker
    from derbridge.errors import DomainError

    async def work(runtime: Runtime, transport: Any) -> list[tuple[str, DomainError]]:
        tracker = Tracker(runtime.async_engine("bridge"))
        refused: list[tuple[str, DomainError]] = []
        with progress_bar() as progress:
            task = progress.add_task("replaying", total=len(message_ids))
            for message_id in message_ids:
                try:
                    await ops.replay_message(tracker, transport, runtime.settings.bridge.queue_prefix, message_id)
                except DomainError as problem:
                    refused.append((message_id, problem))
                progress.advance(task)
        return refused

    refused = bridge_call(work)
    if len(message_ids) == 1 and refused:
        report_problem(refused[0][1])
    err.print(f"replayed {len(message_ids) - len(refused):,} of {len(message_ids):,} messages")
    for message_id, problem in refused:
        err.print(f"  not replayed: {message_id}: {problem.detail}", markup=False, highlight=False)
    if refused:
        raise typer.Exit(ExitCode.FAILED)


@messages_app.command("stats")
def messages_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
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
