"""Managing programs in Asset Hub, their system of record: create and change (close included), under the
program lifecycle rules. Each change bumps the program's ``version`` and sends it to the DERMS (program sync,
:mod:`derbridge.assethub.services.program_sync`) in the same transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.enrollment_sync import SyncState
from derbridge.assethub.domain.program import (
    IllegalProgramChange,
    ProgramRules,
    ProgramStatus,
    check_enrollment_window,
    check_program_status_change,
)
from derbridge.assethub.services.models import ProgramIn, ProgramPatch
from derbridge.assethub.services.program_sync import queue_program_sync
from derbridge.errors import Conflict, FieldError, Invalid, not_found
from derbridge.infra.db import utcnow


def _refused(error: IllegalProgramChange, field: str) -> Invalid:
    """A change whose values break a program rule (a backwards window, a program excluding itself): 422."""
    return Invalid(
        "program-rule",
        "The program change is not allowed",
        str(error),
        errors=[FieldError(field=field, message=str(error))],
    )


def _status_refused(error: IllegalProgramChange) -> Conflict:
    """A status the program cannot go to from the one it is in (CLOSED is final): a conflict with its state,
    409, as cancelling an event that has started is."""
    return Conflict(
        "program-status-change",
        "The program cannot go to that status",
        str(error),
        errors=[FieldError(field="body.status", message=str(error))],
    )


def _row(data: dict[str, Any]) -> dict[str, Any]:
    data["eligible_device_types"] = [str(d) for d in data["eligible_device_types"]]
    # Rules arrive as a model (a patch) or as a plain dict (model_dump of the whole program, or the stored
    # JSON); validating either way stores exactly the documented shape, defaults filled in.
    data["rules"] = ProgramRules.model_validate(data["rules"]).model_dump(mode="json")
    data["status"] = str(data["status"])
    return data


async def create_program(engine: AsyncEngine, program: ProgramIn) -> dict[str, Any]:
    """Create a program at version 1 and send it to the DERMS; 409 if its code is taken, 422 if its window is
    backwards."""
    try:
        check_enrollment_window(program.enrollment_opens_at, program.enrollment_closes_at)
    except IllegalProgramChange as error:
        raise _refused(error, "body.enrollment_closes_at") from None
    if program.program_code in program.excluded_program_codes:
        raise _refused(IllegalProgramChange("a program cannot exclude itself"), "body.excluded_program_codes")
    now = utcnow()
    row = _row(program.model_dump()) | {
        "created_at": now,
        "updated_at": now,
        "version": 1,
        "sync_state": SyncState.SENT.value,
        "sync_detail": None,
    }
    async with engine.begin() as connection:
        exists = await connection.scalar(
            select(t.programs.c.program_code).where(t.programs.c.program_code == program.program_code)
        )
        if exists is not None:
            raise Conflict(
                "conflict",
                "Program exists",
                f"A program with code {program.program_code!r} exists; change it instead (PATCH "
                f"/assethub/v1/programs/{program.program_code}, or 'derbridge program update').",
            )
        await connection.execute(t.programs.insert().values(**row))
        await queue_program_sync(connection, row, now)
    return row


_NOT_NULLABLE = ("name", "status", "eligible_device_types", "excluded_program_codes", "rules")
"""Settings a program always has: a patch may change them, not blank them (the window bounds may be)."""


def _merge(stored: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``stored`` with ``changes`` applied key by key, nested objects merged the same way."""
    merged = dict(stored)
    for key, value in changes.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


async def update_program(engine: AsyncEngine, program_code: str, patch: ProgramPatch) -> dict[str, Any]:
    """Apply ``patch`` to a program under its lifecycle rules, as its next version, and send that version to
    the DERMS in the same transaction (status CLOSED closes it: final, the DERMS takes no new events in it).

    Fields left out keep their value, inside ``rules`` too: a patch of one rule leaves the others as they
    are. A null clears an enrollment window bound; any other required setting cannot be null (422).
    """
    changes = patch.model_dump(exclude_unset=True)
    nulls = [name for name in _NOT_NULLABLE if name in changes and changes[name] is None]
    if nulls:
        raise Invalid(
            "validation-error",
            "The request is not valid",
            "These settings cannot be null; leave a field out to keep its value: " + ", ".join(nulls) + ".",
            errors=[FieldError(field=f"body.{name}", message="may not be null") for name in nulls],
        )
    async with engine.begin() as connection:
        current = (
            # FOR UPDATE (PostgreSQL): two changes of one program at once must not both become version n + 1.
            (
                await connection.execute(
                    select(t.programs).where(t.programs.c.program_code == program_code).with_for_update()
                )
            )
            .mappings()
            .first()
        )
        if current is None:
            raise not_found("program", program_code)
        if patch.rules is not None:
            changes["rules"] = _merge(dict(current["rules"]), patch.rules.model_dump(mode="json", exclude_unset=True))
        merged = dict(current) | changes
        try:
            check_program_status_change(ProgramStatus(current["status"]), ProgramStatus(merged["status"]))
        except IllegalProgramChange as error:
            raise _status_refused(error) from None
        try:
            check_enrollment_window(merged["enrollment_opens_at"], merged["enrollment_closes_at"])
        except IllegalProgramChange as error:
            raise _refused(error, "body.enrollment_closes_at") from None
        if program_code in (merged["excluded_program_codes"] or []):
            raise _refused(IllegalProgramChange("a program cannot exclude itself"), "body.excluded_program_codes")
        now = utcnow()
        row = _row(merged) | {
            "updated_at": now,
            "version": current["version"] + 1,
            "sync_state": SyncState.SENT.value,
            "sync_detail": None,
        }
        await connection.execute(t.programs.update().where(t.programs.c.program_code == program_code).values(**row))
        await queue_program_sync(connection, row, now)
    return row
