"""F8 · program-sync, the DERMS's inbox: a program's version from Asset Hub, newest version wins
(:mod:`derbridge.derms.services.program_sync` says how).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import program_sync as contract
from derbridge.contracts.envelope import Envelope
from derbridge.derms.services.program_sync import apply_program_version, log_and_acknowledge
from derbridge.errors import FieldError, Invalid
from derbridge.infra.clock import Clock


async def apply_program_sync(
    connection: AsyncConnection, envelope: Envelope, payload: contract.ProgramSync, *, clock: Clock
) -> dict[str, Any]:
    """Apply one version of a program (see :mod:`derbridge.derms.services.program_sync`); the answer the
    bridge records."""
    code = payload.program_code
    if envelope.business_key != code or envelope.sequence != payload.version:
        raise Invalid(
            "invalid-envelope",
            "A program sync must be ordered by its program's version",
            "Send the program code as business_key (equal to payload.program_code) and its version as "
            "sequence (equal to payload.version); fix the sender, then replay.",
            errors=[
                FieldError(field="body.business_key", message="must equal payload.program_code"),
                FieldError(field="body.sequence", message="must equal payload.version"),
            ],
        )
    now = clock.now()
    status, detail = await apply_program_version(connection, payload, now)
    await log_and_acknowledge(connection, envelope, payload, status, detail, now)
    return {"program_code": code, "version": payload.version, "result": status.value, "detail": detail}
