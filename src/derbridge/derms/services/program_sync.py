"""Program sync, the DERMS's side: keep the DERMS's copy of Asset Hub's programs, newest version wins.

Programs are Asset Hub's master data; the DERMS's ``programs`` table is written only here (its API reads
them). The handler of ``program-sync.v1`` (:func:`derbridge.derms.handlers.program_sync.apply_program_sync`)
runs inside the inbox transaction, so the program's change, the
log entry and the acknowledgement commit together, once per message id:

1. **Envelope.** A sync whose ``business_key`` is not its program code or whose ``sequence`` is not its
   ``version`` cannot be ordered: 422 ``invalid-envelope`` (dead letter; fix the sender and replay).
2. **Ordering.** Syncs of one program are serialised (a transaction-scoped advisory lock on PostgreSQL;
   SQLite has one writer) and the version is compared with the one the DERMS holds
   (``programs.version``). Not newer → logged STALE in ``program_sync_log``, acknowledged STALE, nothing
   changes: each sync is the whole program, so the newest one applied is the truth.
3. **Apply.** The program is inserted or updated — name, status, dispatch settings (``expected_shed_kw``,
   ``outcome_grace_hours``) and version — then logged APPLIED and acknowledged APPLIED.

What a status means here: only an ACTIVE program takes new events; DRAFT and SUSPENDED refuse them with 409
``program-not-active``, CLOSED with 409 ``program-closed`` (:mod:`derbridge.derms.services.events`). Events
already created are left as they are by any change: they run their course, are cancelled or closed as ever.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import program_sync as contract
from derbridge.contracts.common import Acknowledgement, AckStatus
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.program import is_stale
from derbridge.infra.outbox import write_outbox


async def _lock_program(connection: AsyncConnection, program_code: str) -> None:
    # Competing consumers may deliver two versions of one program at once: without this both would read the
    # same applied version and the older could commit last. Two keys: apart from the other advisory locks.
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('derms.program-sync'), hashtext(:program_code))"),
            {"program_code": program_code},
        )


def _ack(envelope: Envelope, status: AckStatus, detail: str, now: datetime) -> Envelope:
    """The ``program-sync-ack.v1`` answering ``envelope``: its ``business_key`` and ``sequence`` are the
    acknowledged program and version, which Asset Hub matches against its latest version."""
    return new_envelope(
        contract.ACK_TYPE,
        Acknowledgement(acknowledged_message_id=envelope.message_id, status=status, detail=detail),
        business_key=envelope.business_key,
        sequence=envelope.sequence,
        occurred_at=now,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.message_id,
        source_instance=envelope.target.instance,
        target_instance=envelope.source.instance,
    )


async def apply_program_version(
    connection: AsyncConnection, payload: contract.ProgramSync, now: datetime
) -> tuple[AckStatus, str]:
    """Apply one version of a program unless a version at least as new is held (serialised per program);
    the acknowledgement's status (APPLIED or STALE) and detail."""
    code = payload.program_code
    await _lock_program(connection, code)
    p = t.programs
    applied = await connection.scalar(select(p.c.version).where(p.c.program_code == code))
    if is_stale(applied, payload.version):
        return (
            AckStatus.STALE,
            f"version {payload.version} of program {code} is not newer than version {applied}, already applied",
        )
    settings = {
        "name": payload.name,
        "status": payload.status.value,
        "expected_shed_kw": payload.expected_shed_kw,
        "outcome_grace_hours": payload.outcome_grace_hours,
        "version": payload.version,
        "updated_at": now,
    }
    if applied is None:
        await connection.execute(p.insert().values(program_code=code, created_at=now, **settings))
    else:
        await connection.execute(p.update().where(p.c.program_code == code).values(**settings))
    return AckStatus.APPLIED, f"program {code} at version {payload.version}: {payload.status.value}"


async def log_and_acknowledge(
    connection: AsyncConnection,
    envelope: Envelope,
    payload: contract.ProgramSync,
    status: AckStatus,
    detail: str,
    now: datetime,
) -> None:
    """Log the sync's result in ``program_sync_log`` and write its ``program-sync-ack.v1``."""
    await connection.execute(
        t.program_sync_log.insert().values(
            message_id=envelope.message_id,
            program_code=payload.program_code,
            version=payload.version,
            result=status.value,
            detail=detail,
            at=now,
        )
    )
    await write_outbox(connection, t.outbox, [_ack(envelope, status, detail, now)])
