"""``derbridge enrollments list|show``: the enrollments Asset Hub holds, read from its database."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.assethub.domain.enrollment import EnrollmentState
from derbridge.cli.common import print_json, system_call
from derbridge.cli.reading import After, AsJson, Limit, id_column, next_page_hint, read, show, when

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

enrollments_app = typer.Typer(help="Enrollments (Asset Hub): list them, show one.", no_args_is_help=True)


@enrollments_app.command("list")
def enrollments_list(
    state: Annotated[EnrollmentState | None, typer.Option(help="Only enrollments in this lifecycle state.")] = None,
    program: Annotated[str | None, typer.Option(help="Only this program's (program code).")] = None,
    head_end: Annotated[str | None, typer.Option("--head-end", help="Only this head-end system's.")] = None,
    account: Annotated[str | None, typer.Option(help="Only this CIS account's.")] = None,
    limit: Limit = 50,
    after: After = None,
    as_json: AsJson = False,
) -> None:
    """Enrollments by id (oldest first), a page at a time; the next page's command is printed on stderr."""
    from rich.table import Table

    from derbridge.assethub import queries
    from derbridge.infra.web import PageParams

    async def work(runtime: Runtime) -> Any:
        async with runtime.async_engine("assethub").connect() as connection:
            return await queries.list_enrollments(
                connection,
                PageParams(limit=limit, after=after),
                state=state.value if state else None,
                program_code=program,
                cis_account_id=account,
                head_end_system=head_end,
            )

    page = system_call(work)
    if as_json:
        sys.stdout.write(page.model_dump_json() + "\n")
    elif not page.items:
        show("no enrollments match" if after is None else "no more enrollments")
    else:
        table = Table(id_column("enrollment"), "state", "program", "head-end", "account", "requested", "updated")
        for e in page.items:
            table.add_row(
                e.enrollment_id,
                e.state,
                e.program_code,
                e.head_end_system,
                e.cis_account_id,
                when(e.requested_at),
                when(e.updated_at),
            )
        show(table)
    options = {"--state": state, "--program": program, "--head-end": head_end, "--account": account}
    next_page_hint("derbridge enrollments list", options, limit, page.next_after)


@enrollments_app.command("show")
def enrollments_show(
    enrollment_id: Annotated[str, typer.Argument(help="The enrollment id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON (the API's fields) on stdout.")] = False,
) -> None:
    """One enrollment: its devices, its timestamped lifecycle, its sync to the DERMS, its last status check."""
    from derbridge.assethub import queries

    async def work(runtime: Runtime) -> Any:
        async with runtime.async_engine("assethub").connect() as connection:
            enrollment = await queries.get_enrollment(connection, enrollment_id)
            syncs = await queries.enrollment_syncs(connection, enrollment_id)
            check = await queries.latest_status_check(connection, enrollment_id=enrollment_id)
            return enrollment, syncs, check

    enrollment, syncs, check = read(work, f"no enrollment {enrollment_id}; `derbridge enrollments list` shows them")
    if as_json:
        print_json(
            {
                "enrollment": enrollment.model_dump(mode="json"),
                "sync": syncs.model_dump(mode="json"),
                "last_status_check": check.model_dump(mode="json") if check else None,
            }
        )
        return
    _print_enrollment(enrollment, syncs, check)


def _print_enrollment(enrollment: Any, syncs: Any, check: Any) -> None:
    from rich.table import Table

    e = enrollment
    show(f"[bold]enrollment {e.enrollment_id}[/]  {e.state}")
    show(f"  program       {e.program_code}")
    show(f"  request       {e.head_end_system} {e.request_id}, requested {when(e.requested_at)}")
    show(f"  customer      account {e.cis_account_id}, person {e.cis_person_id}")
    show(f"  where         premise {e.cis_premise_id}, service point {e.cis_service_point_id}")
    show(
        f"  terms         installation {e.installation_method or '-'}, ownership {e.asset_ownership or '-'}, "
        f"{e.start_date or '-'} to {e.end_date or '-'}"
    )
    show(f"  updated       {when(e.updated_at)}")
    for rejection in e.rejections:
        field = f" ({rejection.field})" if rejection.field else ""
        show(f"  [red]rejected[/]      {rejection.code}{field}: {rejection.detail}")
    sync = f"{syncs.sync_state} (sequence {syncs.sync_sequence})" if syncs.sync_state else "not synced yet"
    detail = f": {syncs.sync_detail}" if syncs.sync_detail else ""
    show(f"  sync          {sync}{detail}")
    if check is None:
        show("  status check  none")
    else:
        answer = check.result or "no answer yet"
        seen = f", {check.communication_status} last seen {when(check.last_communication_at)}"
        show(
            f"  status check  {check.status} {when(check.requested_at)}: {answer}"
            f"{seen if check.communication_status else ''} ({check.check_id})"
        )

    devices = Table(
        "device", id_column("head-end:nic"), "sequence", "added", "removed", title="devices", title_justify="left"
    )
    for d in e.devices:
        devices.add_row(
            str(d.device_id), f"{d.head_end_system}:{d.nic_id}", str(d.sequence), when(d.added_at), when(d.removed_at)
        )
    show(devices if e.devices else "  devices       none")

    transitions = Table("at", "from", "to", "reason", title="lifecycle", title_justify="left")
    for step in e.transitions:
        transitions.add_row(when(step.at), step.from_state or "(new)", step.to_state, step.reason or "")
    show(transitions)

    if syncs.syncs:
        history = Table(
            "sequence",
            "change",
            "state",
            "sent",
            "acknowledged",
            id_column("message"),
            title="syncs to the DERMS",
            title_justify="left",
        )
        for s in syncs.syncs:
            history.add_row(str(s.sequence), s.change, s.state, when(s.sent_at), when(s.acknowledged_at), s.message_id)
        show(history)
