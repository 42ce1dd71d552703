"""``derbridge derms event``: program events, created with their reservations or cancelled before start."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.cli.common import (
    WHEN_HELP,
    EventTypeChoice,
    fail_validation,
    out,
    parse_when,
    print_json,
    system_call,
    working,
)

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

derms_app = typer.Typer(help="The DERMS: program events.", no_args_is_help=True)
event_app = typer.Typer(help="Program events: create (and reserve devices), cancel before start.", no_args_is_help=True)
derms_app.add_typer(event_app, name="event")


EVENT_OPTIONS = {
    "program_code": "--program",
    "event_type": "--type",
    "start_at": "--start",
    "end_at": "--end",
    "target_devices": "--devices",
    "target_kw": "--kw",
}
"""The request's fields, named as ``derms event create``'s options (errors speak of what the person typed)."""


@event_app.command("create")
def derms_event_create(
    program: Annotated[str, typer.Option(help="Program code.")],
    start: Annotated[datetime, typer.Option(parser=parse_when, metavar="WHEN", help=f"Start: {WHEN_HELP}")],
    end: Annotated[datetime, typer.Option(parser=parse_when, metavar="WHEN", help=f"End: {WHEN_HELP}")],
    event_type: Annotated[
        EventTypeChoice,
        typer.Option(
            "--type",
            case_sensitive=False,
            help="Why the event is called: for price (ECONOMIC), to protect the grid (EMERGENCY), or to check that "
            "devices respond (DEVICE_TEST).",
        ),
    ] = EventTypeChoice.ECONOMIC,
    devices: Annotated[int | None, typer.Option(min=1, help="Target: a number of devices (or give --kw).")] = None,
    kw: Annotated[
        float | None, typer.Option(min=0.001, help="Target: kW of expected shed (or give --devices).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the event as JSON.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the event's id, for scripts: EVENT=$(derbridge … -q).")
    ] = False,
) -> None:
    """Create a program event and reserve the most eligible devices; a shortfall is reported. Asset Hub
    hears of the event and its reserved devices through the bridge."""
    from pydantic import ValidationError

    from derbridge.derms.api.schemas import EventIn
    from derbridge.derms.services.event_messages import ReservationFiles
    from derbridge.derms.services.events import create_event

    try:
        request = EventIn.model_validate(
            {
                "program_code": program,
                "event_type": event_type.value,
                "start_at": start,
                "end_at": end,
                "target_devices": devices,
                "target_kw": kw,
                "created_by": "cli",
            }
        )
    except ValidationError as error:
        fail_validation("bad event", error, EVENT_OPTIONS)

    async def work(runtime: Runtime) -> Any:
        return await create_event(
            runtime.async_engine("derms"),
            request,
            runtime.settings.derms_instance_id,
            files=ReservationFiles.from_settings(runtime.settings),
            now=runtime.clock.now(),
        )

    with working("creating the event and reserving devices"):
        event = system_call(work, fields=EVENT_OPTIONS)
    if as_json:
        print_json(event)
        return
    if quiet:
        out.print(event["event_id"], markup=False, highlight=False)
        return
    out.print(
        f"event {event['event_id']} {event['status']}: reserved {event['reserved_count']:,} of "
        f"{event['candidate_count']:,} candidates ({event['reserved_kw']:.1f} kW); "
        f"shortfall {event['shortfall_devices']:,} devices / {event['shortfall_kw']:.1f} kW"
    )


@event_app.command("cancel")
def derms_event_cancel(
    event_id: Annotated[str, typer.Argument(help="The event to cancel.")],
    reason: Annotated[str, typer.Option(help="Why (sent to Asset Hub).")] = "cancelled by operator",
) -> None:
    """Cancel an event before its start and release its reservations; refused once it has started."""
    from derbridge.derms.api.schemas import EventCancel
    from derbridge.derms.services.events import cancel_event

    async def work(runtime: Runtime) -> Any:
        return await cancel_event(
            runtime.async_engine("derms"), event_id, EventCancel(reason_text=reason), runtime.clock.now()
        )

    event = system_call(work, fields={"reason_text": "--reason"})
    out.print(f"event {event['event_id']} {event['status']} at {event['cancelled_at']}")
