"""Program sync, Asset Hub's side: every change of a program reaches the DERMS, and Asset Hub records what
the DERMS made of it.

Programs are Asset Hub's master data (the DERMS has no program write API). Creating or changing a program
(:mod:`derbridge.assethub.services.programs`) bumps its ``version`` and, in the same transaction, writes one
``program-sync.v1`` to the outbox (:func:`queue_program_sync`): the whole program as the DERMS needs it —
code, name, status and dispatch settings — with ``business_key`` = the program code and ``sequence`` = the
version. The program's ``sync_state`` is SENT until the DERMS acknowledges.

The handler of ``program-sync-ack.v1`` (:mod:`derbridge.assethub.handlers.program_sync`) sets ``sync_state``
to APPLIED, STALE or FAILED with the DERMS's detail — but only for the acknowledgement of the program's
**latest** version (the acknowledgement's ``sequence``): a late answer about an older version must not hide
the state of the newer one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.program import ProgramRules
from derbridge.contracts import program_sync as contract
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.infra.outbox import write_outbox


def program_sync_payload(program: Mapping[str, Any]) -> contract.ProgramSync:
    """What the DERMS needs of ``program`` (a ``programs`` row as it is after the change)."""
    rules = ProgramRules.model_validate(program["rules"])
    return contract.ProgramSync(
        program_code=program["program_code"],
        version=program["version"],
        name=program["name"],
        status=contract.ProgramStatus(program["status"]),
        expected_shed_kw=rules.expected_shed_kw,
        outcome_grace_hours=rules.outcome_grace_hours,
    )


async def queue_program_sync(connection: AsyncConnection, program: Mapping[str, Any], now: datetime) -> Envelope:
    """Write the ``program-sync.v1`` of ``program`` at its (already bumped) ``version`` to the outbox,
    inside the caller's transaction — the one that stored the change."""
    envelope = new_envelope(
        contract.TYPE,
        program_sync_payload(program),
        business_key=program["program_code"],
        sequence=program["version"],
        occurred_at=now,
    )
    await write_outbox(connection, t.outbox, [envelope])
    return envelope
