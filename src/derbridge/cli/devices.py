"""``derbridge devices list|show``: the devices each system holds, read from its own database.

Asset Hub holds every device an enrollment request named (its registry, numbered by Asset Hub); the DERMS
holds the devices enrollment sync gave it, with their availability per program and latest communication
status (numbered by the DERMS). Both know a device by ``HEAD_END:NIC_ID``.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.cli.common import (
    AvailabilityChoice,
    CommunicationStatusChoice,
    ExitCode,
    fail,
    print_json,
    system_call,
)
from derbridge.cli.reading import AsJson, Limit, id_column, next_page_hint, read, show, when

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

devices_app = typer.Typer(
    help="Devices (Asset Hub's registry; the DERMS's availability and communication): list them, show one.",
    no_args_is_help=True,
)


class System(StrEnum):
    """Which system's devices a listing reads."""

    assethub = "assethub"
    derms = "derms"


@devices_app.command("list")
def devices_list(
    head_end: Annotated[str | None, typer.Option("--head-end", help="Only this head-end system's.")] = None,
    program: Annotated[
        str | None,
        typer.Option(help="Only devices enrolled in this program (Asset Hub) / available or not in it (DERMS)."),
    ] = None,
    availability: Annotated[
        AvailabilityChoice | None,
        typer.Option(help="Only devices with this availability (DERMS; with --program: in it)."),
    ] = None,
    communication: Annotated[
        CommunicationStatusChoice | None,
        typer.Option(help="Only devices whose latest communication status is this (DERMS)."),
    ] = None,
    system: Annotated[
        System | None,
        typer.Option(
            help="Whose devices: Asset Hub's (default) or the DERMS's (default with --availability/--communication)."
        ),
    ] = None,
    limit: Limit = 50,
    after: Annotated[
        int | None, typer.Option("--after", help="Start after this device id: the cursor the previous page printed.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Devices by the system's device id, a page at a time; the next page's command is printed on stderr."""
    from derbridge.infra.web import PageParams

    derms_only = availability is not None or communication is not None
    if system is System.assethub and derms_only:
        fail(
            "--availability and --communication are the DERMS's: use --system derms (or leave --system out)",
            ExitCode.USAGE,
        )
    chosen = system or (System.derms if derms_only else System.assethub)
    page_params = PageParams(limit=limit, after=None if after is None else str(after))

    async def work(runtime: Runtime) -> Any:
        if chosen is System.derms:
            from derbridge.derms import queries as derms

            async with runtime.async_engine("derms").connect() as connection:
                return await derms.list_devices(
                    connection,
                    page_params,
                    head_end_system=head_end,
                    program_code=program,
                    availability=availability.value if availability else None,
                    communication_status=communication.value if communication else None,
                    with_status=True,
                )
        from derbridge.assethub import queries as assethub

        async with runtime.async_engine("assethub").connect() as connection:
            return await assethub.list_devices(connection, page_params, head_end_system=head_end, program_code=program)

    page = system_call(work)
    if as_json:
        sys.stdout.write(page.model_dump_json() + "\n")
    elif not page.items:
        show("no devices match" if after is None else "no more devices")
    else:
        show(_derms_table(page.items) if chosen is System.derms else _assethub_table(page.items))
    options = {
        "--head-end": head_end,
        "--program": program,
        "--availability": availability,
        "--communication": communication,
        "--system": system,
    }
    next_page_hint("derbridge devices list", options, limit, page.next_after)


def _assethub_table(devices: list[Any]) -> Any:
    from rich.table import Table

    table = Table(
        "device",
        id_column("head-end:nic"),
        "type",
        "manufacturer",
        "model",
        "serial",
        "created",
        caption="Asset Hub's device ids",
    )
    for d in devices:
        table.add_row(
            str(d.device_id),
            f"{d.head_end_system}:{d.nic_id}",
            d.device_type,
            d.manufacturer,
            d.model,
            d.serial_no,
            when(d.created_at),
        )
    return table


def _derms_table(devices: list[Any]) -> Any:
    from rich.table import Table

    table = Table(
        "device",
        id_column("head-end:nic"),
        "type",
        "availability",
        "communication",
        "last seen",
        caption="the DERMS's device ids",
    )
    for d in devices:
        programs = ", ".join(f"{a.program_code} {a.availability}" for a in d.availability) or "-"
        status = d.communication.communication_status if d.communication else "-"
        seen = when(d.communication.last_communication_at) if d.communication else "-"
        table.add_row(str(d.device_id), f"{d.head_end_system}:{d.nic_id}", d.device_type, programs, status, seen)
    return table


@devices_app.command("show")
def devices_show(
    device: Annotated[
        str,
        typer.Argument(
            help="HEAD_END:NIC_ID (as messages name it), or a number: Asset Hub's device id "
            "(GET /assethub/v1/devices/ID).",
            metavar="DEVICE",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON (the APIs' fields) on stdout.")] = False,
) -> None:
    """One device: in Asset Hub its enrollments, its score and eligibility in the latest snapshot and its
    last status check; in the DERMS its availability per program and its latest communication status."""
    from derbridge.usecases.devices import DeviceKey, device_in_both_systems

    head_end, _, nic_id = device.partition(":")
    by_key = bool(nic_id)
    if not by_key and not device.isdigit():
        fail(
            f"{device!r} is no device: give HEAD_END:NIC_ID (e.g. ECOBEE:521764415334) or Asset Hub's device id",
            ExitCode.USAGE,
        )
    key = DeviceKey(head_end, nic_id) if by_key else DeviceKey(device_id=int(device))

    async def work(runtime: Runtime) -> Any:
        return await device_in_both_systems(runtime, key)

    hub, grid = read(work, f"no device {device}; `derbridge devices list` shows them")
    if as_json:
        print_json(
            {
                "assethub": None if hub is None else {k: _dump(v) for k, v in hub.items()},
                "derms": None if grid is None else {"device": grid.model_dump(mode="json")},
            }
        )
        return
    _print_device(hub, grid)


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(item) for item in value]
    return None if value is None else value.model_dump(mode="json")


def _print_device(hub: dict[str, Any] | None, grid: Any) -> None:
    from rich.table import Table

    first = hub["device"] if hub else grid
    show(
        f"[bold]device {first.head_end_system}:{first.nic_id}[/]  "
        f"{first.device_type}, {first.manufacturer} {first.model}"
    )
    if hub is None:
        show("  Asset Hub     not known")
    else:
        d = hub["device"]
        badge = f", badge {d.badge_no}" if d.badge_no else ""
        show(f"  Asset Hub     device {d.device_id}, serial {d.serial_no}{badge}, since {when(d.created_at)}")
        check = hub["last_status_check"]
        if check is None:
            show("  status check  none")
        else:
            seen = (
                f", {check.communication_status} last seen {when(check.last_communication_at)}"
                if check.communication_status
                else ""
            )
            show(f"  status check  {check.status} {when(check.requested_at)}: {check.result or 'no answer yet'}{seen}")
        enrollments = Table(
            id_column("enrollment"),
            "program",
            "state",
            "account",
            "added",
            "removed",
            title="enrollments (Asset Hub)",
            title_justify="left",
        )
        for e in hub["enrollments"]:
            enrollments.add_row(
                e.enrollment_id, e.program_code, e.state, e.cis_account_id, when(e.added_at), when(e.removed_at)
            )
        show(enrollments if hub["enrollments"] else "  enrollments   none")
        snapshot = hub["score_snapshot"]
        if snapshot is None:
            show("  scores        no score snapshot yet (`derbridge score transfer`)")
        elif not hub["scores"]:
            show(
                f"  scores        not scored in the latest snapshot {snapshot.file_id} ({when(snapshot.generated_at)})"
            )
        else:
            scores = Table(
                "program", "score", "eligible", "why not", "reliability", "connectivity", "fatigue",
                title=f"scores in the latest snapshot {snapshot.file_id} ({when(snapshot.generated_at)})",
                title_justify="left",
            )  # fmt: skip
            for s in hub["scores"]:
                scores.add_row(
                    s.program_code, f"{s.score:.3f}", "yes" if s.eligible else "no", s.ineligibility_reason or "",
                    f"{s.reliability:.3f}", f"{s.connectivity:.3f}", f"{s.fatigue:.3f}",
                )  # fmt: skip
            show(scores)
    if grid is None:
        show("  DERMS         not known (no enrollment of it was synced)")
        return
    show(f"  DERMS         device {grid.device_id}, since {when(grid.created_at)}")
    c = grid.communication
    if c is None:
        show("  communication no status recorded")
    else:
        state = f", {c.operating_state}" if c.operating_state else ""
        show(
            f"  communication {c.communication_status}{state}, "
            f"last seen {when(c.last_communication_at)} (from {c.source})"
        )
    availability = Table(
        "program",
        "availability",
        id_column("enrollment"),
        "sequence",
        "updated",
        title="availability (DERMS)",
        title_justify="left",
    )
    for a in grid.availability:
        availability.add_row(a.program_code, a.availability, a.enrollment_id, str(a.sequence), when(a.updated_at))
    show(availability if grid.availability else "  availability  none")
