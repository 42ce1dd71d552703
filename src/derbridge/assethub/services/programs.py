"""Managing programs in Asset Hub: create and change, under the program lifecycle rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.api.schemas import ProgramIn, ProgramPatch
from derbridge.assethub.domain.program import (
    IllegalProgramChange,
    ProgramRules,
    ProgramStatus,
    check_enrollment_window,
    check_program_status_change,
)
from derbridge.infra.db import utcnow
from derbridge.infra.problems import FieldError, ProblemError, not_found


def _refused(error: IllegalProgramChange, field: str) -> ProblemError:
    return ProblemError(
        422,
        "program-rule",
        "The program change is not allowed",
        str(error),
        errors=[FieldError(field=field, message=str(error))],
    )


def _row(data: dict[str, Any]) -> dict[str, Any]:
    data["eligible_device_types"] = [str(d) for d in data["eligible_device_types"]]
    # Rules arrive as a model (a patch) or as a plain dict (model_dump of the whole program, or the stored
    # JSON); validating either way stores exactly the documented shape, defaults filled in.
    data["rules"] = ProgramRules.model_validate(data["rules"]).model_dump(mode="json")
    data["status"] = str(data["status"])
    return data


async def create_program(engine: AsyncEngine, program: ProgramIn) -> dict[str, Any]:
    """Create a program; 409 if its code is taken, 422 if its window is backwards."""
    try:
        check_enrollment_window(program.enrollment_opens_at, program.enrollment_closes_at)
    except IllegalProgramChange as error:
        raise _refused(error, "body.enrollment_closes_at") from None
    if program.program_code in program.excluded_program_codes:
        raise _refused(IllegalProgramChange("a program cannot exclude itself"), "body.excluded_program_codes")
    now = utcnow()
    row = _row(program.model_dump()) | {"created_at": now, "updated_at": now}
    async with engine.begin() as connection:
        exists = await connection.scalar(
            select(t.programs.c.program_code).where(t.programs.c.program_code == program.program_code)
        )
        if exists is not None:
            raise ProblemError(
                409,
                "conflict",
                "Program exists",
                f"A program with code {program.program_code!r} exists; change it with PATCH instead.",
            )
        await connection.execute(t.programs.insert().values(**row))
    return row


async def update_program(engine: AsyncEngine, program_code: str, patch: ProgramPatch) -> dict[str, Any]:
    """Apply ``patch`` to a program under its lifecycle rules."""
    changes = patch.model_dump(exclude_unset=True)
    async with engine.begin() as connection:
        current = (
            (await connection.execute(select(t.programs).where(t.programs.c.program_code == program_code)))
            .mappings()
            .first()
        )
        if current is None:
            raise not_found("program", program_code)
        merged = dict(current) | changes
        try:
            check_program_status_change(ProgramStatus(current["status"]), ProgramStatus(merged["status"]))
        except IllegalProgramChange as error:
            raise _refused(error, "body.status") from None
        try:
            check_enrollment_window(merged["enrollment_opens_at"], merged["enrollment_closes_at"])
        except IllegalProgramChange as error:
            raise _refused(error, "body.enrollment_closes_at") from None
        if program_code in (merged["excluded_program_codes"] or []):
            raise _refused(IllegalProgramChange("a program cannot exclude itself"), "body.excluded_program_codes")
        row = _row(merged) | {"updated_at": utcnow()}
        await connection.execute(t.programs.update().where(t.programs.c.program_code == program_code).values(**row))
    return row
