"""F4 · device-score-transfer, Asset Hub's job and inbox handler: the scheduled transfer (job
:data:`JOB_NAME`, every :data:`JOB_EVERY`: a transfer when ``scores.schedule`` calls for one) and the
DERMS's ``device-score-transfer-ack.v1``, logged and kept in the inbox. The transfer itself is
:mod:`derbridge.assethub.services.score_transfer`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.services.score_transfer import TransferBusy, transfer_due, transfer_scores
from derbridge.contracts.common import Acknowledgement, AckStatus
from derbridge.contracts.envelope import Envelope
from derbridge.settings import Settings

log = structlog.get_logger("derbridge.assethub.scores")

JOB_NAME = "score-transfer"
"""The scheduled job (Asset Hub's jobs): it transfers when the schedule says a transfer is due."""

JOB_EVERY = timedelta(minutes=1)
"""How often the job looks at the schedule: the finest step of a cron expression."""


async def scheduled_transfer(engine: AsyncEngine, now: datetime, *, settings: Settings) -> int:
    """The scheduled job: transfer when due (see :func:`transfer_due`); returns how many transfers ran."""
    if not await transfer_due(engine, settings, now):
        return 0
    try:
        report = await transfer_scores(engine, settings, now=now)
    except TransferBusy:
        return 0  # an on-demand transfer is running: it satisfies this schedule time when it records
    return 1 if report.status == "transferred" else 0


# --- the DERMS's acknowledgement ------------------------------------------------------------------


async def record_acknowledgement(
    connection: AsyncConnection, envelope: Envelope, payload: Acknowledgement
) -> dict[str, Any]:
    """Record what the DERMS did with a score file: APPLIED (loaded, or already loaded), STALE (older than
    its current snapshot) or REJECTED (the file's content is invalid), with the devices it does not know.

    The answer is kept in Asset Hub's inbox with the acknowledgement (and so visible with the message in
    the bridge); ``score_snapshots`` has no column for it yet. The acknowledgement's ``correlation_id`` is
    the file id.
    """
    file_id = envelope.correlation_id
    known = await connection.scalar(select(t.score_snapshots.c.file_id).where(t.score_snapshots.c.file_id == file_id))
    outcome = {
        "file_id": file_id,
        "known_file": known is not None,
        "status": payload.status.value,
        "detail": payload.detail,
        "unknown_devices_listed": len(payload.unknown_devices),
    }
    # A file loaded as sent is routine (the sender logged it sent); one not loaded, or naming devices the DERMS
    # does not know, is for an operator to see.
    plain = payload.status is AckStatus.APPLIED and not payload.unknown_devices
    (log.info if plain else log.warning)("score transfer acknowledged", message_id=envelope.message_id, **outcome)
    return outcome
