"""``derbridge events list|show``: the program events the DERMS holds (and Asset Hub's record of each)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.cli.common import aware, print_json, system_call
from derbridge.cli.reading import After, AsJson, Limit, counts, id_column, next_page_hint, read, show, when
from derbridge.derms.domain.event import EventStatus

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

events_app = typer.Typer(help="Program events (DERMS): list them, show one.", no_args_is_help=True)


@events_app.command("list")
def events_list(
    program: Annotated[str | None, typer.Option(help="Only this program's (program code).")] = None,
    status: Annotated[EventStatus | None, typer.Option(help="Only events in this status.")] = None,
    since: Annotated[
        datetime | None,
        typer.Option(help="Only events starting at or after this time, ISO 8601 (UTC unless an offset is given)."),
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="Only events starting before this time, ISO 8601.")] = None,
    limit: Limit = 50,
    after: After = None,
    as_json: AsJson = False,
) -> None:
    """Program events by id (oldest first), a page at a time; the next page's command is printed on stderr."""
    from derbridge.derms import queries
    from derbridge.infra.web import PageParams

    async def work(runtime: Runtime) -> Any:
        async with runtime.async_engine("derms").connect() as connection:
            return await queries.list_events(
                connection,
                PageParams(limit=limit, after=after),
                status=status.value if status else None,
                program_code=program,
                starts_from=aware(since),
                starts_before=aware(until),
            )

    page = system_call(work)
    if as_json:
        sys.stdout.write(page.model_dump_json() + "\n")
    elif not page.items:
        show("no events match" if after is None else "no more events")
    else:
        from rich.table import Table

        table = Table(
            id_column("event"),
            "program",
            "type",
            "status",
            "start",
            "end",
            "target",
            "candidates",
            "reserved",
            "shortfall",
        )
        for e in page.items:
            table.add_row(
                e.event_id,
                e.program_code,
                e.event_type,
                e.status,
                when(e.start_at),
                when(e.end_at),
                _target(e),
                f"{e.candidate_count:,}",
                f"{e.reserved_count:,}",
                _shortfall(e),
            )
        show(table)
    options = {
        "--program": program,
        "--status": status,
        "--since": _iso(since),
        "--until": _iso(until),
    }
    next_page_hint("derbridge events list", options, limit, page.next_after)


def _iso(value: datetime | None) -> str | None:
    at = aware(value)
    return None if at is None else at.isoformat()


def _target(event: Any) -> str:
    return f"{event.target_devices:,} devices" if event.target_devices is not None else f"{event.target_kw:,.1f} kW"


def _shortfall(event: Any) -> str:
    if event.target_devices is not None:
        return f"{event.shortfall_devices:,}"
    return f"{event.shortfall_kw:,.1f} kW"


@events_app.command("show")
def events_show(
    event_id: Annotated[str, typer.Argument(help="The event id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON (the APIs' fields) on stdout.")] = False,
) -> None:
    """One event: status, target, candidates, reserved, shortfall, its reservations by status and outcomes by
    outcome, and Asset Hub's record of it. The per-device lists: GET /derms/v1/events/ID/reservations and
    /outcomes (paged)."""
    from derbridge.assethub import queries as assethub
    from derbridge.derms import queries as derms
    from derbridge.errors import NotFound

    async def work(runtime: Runtime) -> Any:
        async with runtime.async_engine("derms").connect() as connection:
            event = await derms.get_event(connection, event_id)
            tallies = await derms.event_counts(connection, event_id)
        async with runtime.async_engine("assethub").connect() as connection:
            try:
                hub = await assethub.get_event(connection, event_id)
            except NotFound:
                hub, participations = None, None
            else:
                participations = await assethub.participation_counts(connection, event_id)
        return event, tallies, hub, participations

    event, tallies, hub, participations = read(work, f"no event {event_id}; `derbridge events list` shows them")
    if as_json:
        print_json(
            {
                "derms": {"event": event.model_dump(mode="json"), "counts": tallies.model_dump(mode="json")},
                "assethub": None
                if hub is None
                else {"event": hub.model_dump(mode="json"), "participations": participations.model_dump(mode="json")},
            }
        )
        return
    e = event
    show(f"[bold]event {e.event_id}[/]  {e.status}")
    show(f"  program       {e.program_code}, {e.event_type}")
    show(f"  window        {when(e.start_at)} to {when(e.end_at)}")
    show(f"  created       {when(e.created_at)} by {e.created_by} (DERMS {e.derms_instance_id})")
    if e.cancelled_at is not None:
        show(f"  cancelled     {when(e.cancelled_at)}: {e.cancel_reason or '-'}")
    if e.closed_at is not None:
        show(f"  closed        {when(e.closed_at)}")
    show(f"  target        {_target(e)}")
    show(f"  candidates    {e.candidate_count:,}")
    show(f"  reserved      {e.reserved_count:,} devices, {e.reserved_kw:,.1f} kW expected")
    show(f"  shortfall     {e.shortfall_devices:,} devices, {e.shortfall_kw:,.1f} kW")
    show(f"  reservations  {counts(tallies.reservations)}")
    show(f"  outcomes      {counts(tallies.outcomes)}")
    if hub is None:
        show("  Asset Hub     has no record of it yet (the bridge has not delivered it: `derbridge messages list`)")
    else:
        show(f"  Asset Hub     holds it as {hub.status} (received {when(hub.received_at)})")
        show(f"                participations {counts(participations.by_status)}")
        show(f"                outcomes {counts(participations.by_outcome)}")
    show(
        f"  per device    GET /derms/v1/events/{e.event_id}/reservations and /outcomes "
        f"(paged; `derbridge up` serves them)"
    )
