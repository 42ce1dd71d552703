"""``derbridge program create|list|show|update|close``: programs, managed in Asset Hub (their system of
record) and carried to the DERMS by program sync.

Like the other commands that change a system, these call Asset Hub's service functions against its
database: each change is stored with its ``program-sync.v1`` in one transaction, and the bridge
(``derbridge up``) carries it to the DERMS. ``show`` and ``list`` say whether the DERMS has applied the
latest version (``sync_state``).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from derbridge.cli.common import (
    DeviceTypeChoice,
    ExitCode,
    ProgramStatusChoice,
    aware,
    fail,
    fail_validation,
    out,
    print_json,
    system_call,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

    from derbridge.runtime import Runtime

PROGRAM_OPTIONS = {
    "program_code": "PROGRAM_CODE",
    "name": "--name",
    "status": "--status",
    "enrollment_opens_at": "--opens",
    "enrollment_closes_at": "--closes",
    "eligible_device_types": "--device-type",
    "excluded_program_codes": "--exclude",
    "rules.expected_shed_kw": "--expected-shed-kw",
    "rules.outcome_grace_hours": "--outcome-grace-hours",
    "rules": "--rule",
}
"""A program's fields, named as the commands' options (errors speak of what the person typed)."""

program_app = typer.Typer(
    help="Programs: created, changed and closed in Asset Hub; the DERMS gets each version by program sync.",
    no_args_is_help=True,
)

_Name = Annotated[str | None, typer.Option(help="The program's name.")]
_Opens = Annotated[datetime | None, typer.Option("--opens", help="Enrollment opens at, ISO 8601 (UTC if no offset).")]
_Closes = Annotated[datetime | None, typer.Option("--closes", help="Enrollment closes at, ISO 8601.")]
_DeviceTypes = Annotated[
    list[DeviceTypeChoice] | None,
    typer.Option("--device-type", case_sensitive=False, help="An eligible device type (repeat for several)."),
]
_Excludes = Annotated[
    list[str] | None, typer.Option("--exclude", help="A program whose enrolled devices are barred (repeatable).")
]
_Shed = Annotated[float | None, typer.Option(help="Expected shed per device in kW (rules.expected_shed_kw).")]
_Grace = Annotated[
    float | None, typer.Option(help="Hours outcomes are awaited after an event (rules.outcome_grace_hours).")
]
_Rules = Annotated[
    list[str] | None, typer.Option("--rule", help="Any rule as NAME=VALUE, e.g. fatigue_cap=0.3 (repeatable).")
]
_Json = Annotated[bool, typer.Option("--json", help="Print the program as JSON.")]


def _rules(rules: list[str] | None, shed: float | None, grace: float | None) -> dict[str, Any] | None:
    """The ``rules`` object of a request from ``--rule NAME=VALUE`` (values read as JSON where they parse, so
    ``0.3`` is a number) and the two dispatch settings' own options; None when none was given."""
    parsed: dict[str, Any] = {}
    for item in rules or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            fail(f"bad rule {item!r}: write --rule NAME=VALUE, e.g. --rule fatigue_cap=0.3", ExitCode.USAGE)
        try:
            parsed[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[name.strip()] = value
    if shed is not None:
        parsed["expected_shed_kw"] = shed
    if grace is not None:
        parsed["outcome_grace_hours"] = grace
    return parsed or None


def _validated(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """``body`` as ``model``, or each wrong field named by its option and :attr:`ExitCode.USAGE`."""
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as error:
        fail_validation("bad program", error, PROGRAM_OPTIONS)


def _summary(program: dict[str, Any], verb: str) -> None:
    out.print(
        f"program {program['program_code']} {verb}: {program['status']}, version {program['version']} "
        "sent to the DERMS (program sync; the bridge carries it while derbridge up runs)"
    )


def _print(program: dict[str, Any], as_json: bool, verb: str) -> None:
    from derbridge.assethub.api.schemas import Program

    shown = Program.model_validate(program).model_dump(mode="json")
    if as_json:
        print_json(shown)
    else:
        _summary(shown, verb)


@program_app.command("create")
def program_create(
    program_code: Annotated[str, typer.Argument(help="e.g. SUMMER-BYOT (upper case, digits, '-', '_').")],
    name: Annotated[str, typer.Option(help="The program's name.")],
    status: Annotated[
        ProgramStatusChoice,
        typer.Option(case_sensitive=False, help="DRAFT (being set up) or ACTIVE (open, scored, may have events)."),
    ] = ProgramStatusChoice.DRAFT,
    opens: _Opens = None,
    closes: _Closes = None,
    device_type: _DeviceTypes = None,
    exclude: _Excludes = None,
    expected_shed_kw: _Shed = None,
    outcome_grace_hours: _Grace = None,
    rule: _Rules = None,
    as_json: _Json = False,
) -> None:
    """Create a program in Asset Hub (version 1); program sync carries it to the DERMS."""
    from derbridge.assethub.api.schemas import ProgramIn
    from derbridge.assethub.services.programs import create_program

    body: dict[str, Any] = {"program_code": program_code, "name": name, "status": status.value}
    body |= {"enrollment_opens_at": aware(opens), "enrollment_closes_at": aware(closes)}
    if device_type:
        body["eligible_device_types"] = [t.value for t in device_type]
    if exclude:
        body["excluded_program_codes"] = exclude
    rules = _rules(rule, expected_shed_kw, outcome_grace_hours)
    if rules is not None:
        body["rules"] = rules
    request = _validated(ProgramIn, body)

    async def work(runtime: Runtime) -> Any:
        return await create_program(runtime.async_engine("assethub"), request)

    _print(system_call(work, fields=PROGRAM_OPTIONS), as_json, "created")


@program_app.command("update")
def program_update(
    program_code: Annotated[str, typer.Argument(help="The program's code, e.g. SUMMER-BYOT.")],
    name: _Name = None,
    status: Annotated[
        ProgramStatusChoice | None,
        typer.Option(case_sensitive=False, help="DRAFT → ACTIVE ⇄ SUSPENDED → CLOSED (final; see close)."),
    ] = None,
    opens: _Opens = None,
    closes: _Closes = None,
    clear_window: Annotated[
        bool, typer.Option("--clear-window", help="Remove both enrollment window bounds (before --opens/--closes).")
    ] = False,
    device_type: _DeviceTypes = None,
    exclude: _Excludes = None,
    expected_shed_kw: _Shed = None,
    outcome_grace_hours: _Grace = None,
    rule: _Rules = None,
    as_json: _Json = False,
) -> None:
    """Change a program in Asset Hub: what is given changes, the rest (rules too) stays. The change is the
    program's next version, sent to the DERMS."""
    from derbridge.assethub.api.schemas import ProgramPatch

    body: dict[str, Any] = {}
    if clear_window:
        body |= {"enrollment_opens_at": None, "enrollment_closes_at": None}
    for key, value in (
        ("name", name),
        ("status", status.value if status else None),
        ("enrollment_opens_at", aware(opens)),
        ("enrollment_closes_at", aware(closes)),
        ("eligible_device_types", [t.value for t in device_type] if device_type else None),
        ("excluded_program_codes", exclude or None),
        ("rules", _rules(rule, expected_shed_kw, outcome_grace_hours)),
    ):
        if value is not None:
            body[key] = value
    if not body:
        fail("nothing to change: give at least one option (see derbridge program update --help)", ExitCode.USAGE)
    _update(program_code, _validated(ProgramPatch, body), as_json, "updated")


@program_app.command("close")
def program_close(
    program_code: Annotated[str, typer.Argument(help="The program's code, e.g. SUMMER-BYOT.")], as_json: _Json = False
) -> None:
    """Close a program for good: no new enrollments, scores or events (the DERMS refuses new events in it with
    409 program-closed); enrollments, history and existing events are kept. A closed program cannot reopen."""
    from derbridge.assethub.api.schemas import ProgramPatch
    from derbridge.assethub.domain.program import ProgramStatus

    _update(program_code, ProgramPatch(status=ProgramStatus.CLOSED), as_json, "closed")


@program_app.command("sync")
def program_sync(
    program_code: Annotated[str, typer.Argument(help="The program's code, e.g. SUMMER-BYOT.")], as_json: _Json = False
) -> None:
    """Send a program to the DERMS again, unchanged, as its next version: after upgrading from a release
    without program sync (programs made before it were never sent), or to put right a DERMS copy that was
    changed by other means. The DERMS takes it like any newer version."""
    from derbridge.assethub.api.schemas import ProgramPatch

    _update(program_code, ProgramPatch(), as_json, "sent again")


def _update(program_code: str, patch: Any, as_json: bool, verb: str) -> None:
    from derbridge.assethub.services.programs import update_program

    async def work(runtime: Runtime) -> Any:
        return await update_program(runtime.async_engine("assethub"), program_code, patch)

    _print(system_call(work, fields=PROGRAM_OPTIONS), as_json, verb)


@program_app.command("show")
def program_show(
    program_code: Annotated[str, typer.Argument(help="The program's code, e.g. SUMMER-BYOT.")], as_json: _Json = False
) -> None:
    """Show a program: its settings and rules, its version, and what the DERMS made of that version."""
    from derbridge.assethub.queries import get_program

    async def work(runtime: Runtime) -> Any:
        async with runtime.async_engine("assethub").connect() as connection:
            return (await get_program(connection, program_code)).model_dump(mode="json")

    program = system_call(work)
    if as_json:
        print_json(program)
        return
    table = Table(title=f"program {program['program_code']}", title_justify="left", show_header=False)
    table.add_column("setting")
    table.add_column("value")
    for key in ("name", "status", "version", "sync_state", "sync_detail"):
        table.add_row(key, str(program[key]))
    opens, closes = program["enrollment_opens_at"], program["enrollment_closes_at"]
    window = "always open (no window)" if opens is None and closes is None else f"{opens or '…'} → {closes or '…'}"
    table.add_row("enrollment window", window)
    table.add_row("eligible device types", ", ".join(program["eligible_device_types"]))
    table.add_row("excluded programs", ", ".join(program["excluded_program_codes"]) or "none")
    for key, value in program["rules"].items():
        table.add_row(f"rules.{key}", json.dumps(value))
    table.add_row("updated", str(program["updated_at"]))
    out.print(table)


@program_app.command("list")
def program_list(
    status: Annotated[
        ProgramStatusChoice | None, typer.Option(case_sensitive=False, help="Only the programs in this status.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the programs as a JSON list.")] = False,
) -> None:
    """List programs by code, with their version and whether the DERMS applied it."""
    from derbridge.assethub.queries import list_programs

    async def work(runtime: Runtime) -> Any:
        async with runtime.async_engine("assethub").connect() as connection:
            found = await list_programs(connection, status=status.value if status else None)
        return [p.model_dump(mode="json") for p in found]

    programs = system_call(work)
    if as_json:
        print_json(programs)
        return
    table = Table(title=f"{len(programs)} programs", title_justify="left")
    for column in ("program_code", "name", "status", "version", "sync_state", "expected_shed_kw", "window"):
        table.add_column(column)
    for p in programs:
        table.add_row(
            p["program_code"],
            p["name"],
            p["status"],
            str(p["version"]),
            p["sync_state"] or "-",
            str(p["rules"]["expected_shed_kw"]),
            f"{p['enrollment_opens_at'] or '…'} → {p['enrollment_closes_at'] or '…'}",
        )
    out.print(table)
