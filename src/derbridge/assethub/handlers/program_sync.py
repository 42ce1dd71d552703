"""F8 · program sync, Asset Hub's inbox handler: the DERMS's ``program-sync-ack.v1`` sets the program's
``sync_state`` to APPLIED, STALE or FAILED with the DERMS's detail — only for the acknowledgement of the
program's latest version. The syncs are sent by :mod:`derbridge.assethub.services.program_sync`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.enrollment_sync import SYNC_STATE_OF_ACK
from derbridge.contracts.common import Acknowledgement
from derbridge.contracts.envelope import Envelope
from derbridge.errors import FieldError, Invalid


async def apply_program_sync_ack(
    connection: AsyncConnection, envelope: Envelope, payload: Acknowledgement
) -> dict[str, Any]:
    """Record what the DERMS did with a version of a program: APPLIED, STALE or FAILED with the detail,
    when it is the program's latest version; an older version's answer changes nothing."""
    p = t.programs
    program = (
        await connection.execute(select(p.c.program_code, p.c.version).where(p.c.program_code == envelope.business_key))
    ).first()
    if program is None or envelope.sequence is None or not 1 <= envelope.sequence <= program.version:
        raise Invalid(
            "unknown-sync",
            "No such program sync",
            f"Asset Hub sent no version {envelope.sequence} of program {envelope.business_key!r}; the "
            "acknowledgement cannot apply to anything (its business_key must be the program code and its "
            "sequence the acknowledged version).",
            errors=[
                FieldError(field="body.business_key", message="must name a program Asset Hub has"),
                FieldError(field="body.sequence", message="must be a version Asset Hub sent"),
            ],
        )
    state = SYNC_STATE_OF_ACK[payload.status]
    latest = await connection.execute(
        update(p)
        .where(p.c.program_code == program.program_code, p.c.version == envelope.sequence)
        .values(sync_state=state.value, sync_detail=payload.detail)
    )
    return {
        "program_code": program.program_code,
        "version": envelope.sequence,
        "state": state.value,
        "latest": latest.rowcount == 1,
    }
