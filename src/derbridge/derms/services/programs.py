"""Managing the DERMS's programs: which programs events may be created in, and their dispatch settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.derms.adapters import tables as t
from derbridge.derms.api.schemas import ProgramIn, ProgramPatch
from derbridge.infra.db import utcnow
from derbridge.infra.problems import ProblemError, not_found


async def create_program(engine: AsyncEngine, program: ProgramIn) -> dict[str, Any]:
    """Create a program; 409 if its code is taken."""
    now = utcnow()
    row = program.model_dump(mode="json") | {"created_at": now, "updated_at": now}
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
    """Apply ``patch`` to a program."""
    changes = patch.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    async with engine.begin() as connection:
        current = (
            (await connection.execute(select(t.programs).where(t.programs.c.program_code == program_code)))
            .mappings()
            .first()
        )
        if current is None:
            raise not_found("program", program_code)
        row = dict(current) | changes | {"updated_at": utcnow()}
        await connection.execute(t.programs.update().where(t.programs.c.program_code == program_code).values(**row))
    return row
