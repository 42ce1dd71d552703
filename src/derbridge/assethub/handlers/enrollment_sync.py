"""F3 · enrollment-sync, Asset Hub's inbox handlers: the DERMS's ``enrollment-sync-ack.v1`` (single and
batch) sets the acknowledged sync — and the enrollment's ``sync_state`` when it is its latest sync — to
APPLIED, STALE or FAILED with the DERMS's detail. The syncs themselves are sent by
:mod:`derbridge.assethub.services.enrollment_sync`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.enrollment_sync import SYNC_STATE_OF_ACK
from derbridge.assethub.services.enrollment_sync import chunks
from derbridge.contracts.common import Acknowledgement
from derbridge.contracts.envelope import Envelope
from derbridge.errors import FieldError, Invalid
from derbridge.infra.clock import Clock
from derbridge.infra.inbound import NotBatchable


async def apply_enrollment_sync_ack(
    connection: AsyncConnection, envelope: Envelope, payload: Acknowledgement, *, clock: Clock
) -> dict[str, Any]:
    """Record what the DERMS did with a sync: the sync becomes APPLIED, STALE or FAILED with the detail.

    The enrollment's own ``sync_state`` follows only the acknowledgement of its latest sync: an older
    sync's acknowledgement arriving late must not hide the state of a newer one.
    """
    s, e = t.enrollment_syncs, t.enrollments
    sync = (
        await connection.execute(
            select(s.c.sync_id, s.c.enrollment_id, s.c.sequence).where(
                s.c.message_id == payload.acknowledged_message_id
            )
        )
    ).first()
    if sync is None:
        raise Invalid(
            "unknown-sync",
            "No such enrollment sync",
            f"Asset Hub sent no enrollment sync with message id {payload.acknowledged_message_id!r}; "
            "the acknowledgement cannot apply to anything.",
            errors=[FieldError(field="body.payload.acknowledged_message_id", message="unknown sync message")],
        )
    state = SYNC_STATE_OF_ACK[payload.status]
    now = clock.now()
    await connection.execute(
        update(s)
        .where(s.c.sync_id == sync.sync_id)
        .values(state=state.value, detail=payload.detail, acknowledged_at=now)
    )
    latest = await connection.execute(
        update(e)
        .where(e.c.enrollment_id == sync.enrollment_id, e.c.sync_sequence == sync.sequence)
        .values(sync_state=state.value, sync_detail=payload.detail)
    )
    return {
        "enrollment_id": sync.enrollment_id,
        "sync_id": sync.sync_id,
        "sequence": sync.sequence,
        "state": state.value,
        "latest": latest.rowcount == 1,
    }


async def apply_enrollment_sync_acks(
    connection: AsyncConnection, messages: Sequence[tuple[Envelope, Acknowledgement]], *, clock: Clock
) -> list[dict[str, Any]]:
    """:func:`apply_enrollment_sync_ack` for a run of acknowledgements, set-based: one read, two
    ``executemany`` updates. A run acknowledging one sync twice, or an unknown sync, is declined
    (:class:`NotBatchable`) and applied one by one."""
    s, e = t.enrollment_syncs, t.enrollments
    acknowledged = [p.acknowledged_message_id for _, p in messages]
    if len(set(acknowledged)) != len(acknowledged):
        raise NotBatchable("a sync is acknowledged twice in the run")
    syncs = {
        row.message_id: row
        for part in chunks(acknowledged)
        for row in await connection.execute(
            select(s.c.message_id, s.c.sync_id, s.c.enrollment_id, s.c.sequence, e.c.sync_sequence)
            .join(e, e.c.enrollment_id == s.c.enrollment_id)
            .where(s.c.message_id.in_(part))
        )
    }
    if len(syncs) != len(acknowledged):
        raise NotBatchable("an acknowledgement names an unknown sync")
    now = clock.now()
    rows = [(syncs[p.acknowledged_message_id], p, SYNC_STATE_OF_ACK[p.status]) for _, p in messages]
    await connection.execute(
        update(s)
        .where(s.c.sync_id == bindparam("b_sync_id"))
        .values(state=bindparam("b_state"), detail=bindparam("b_detail"), acknowledged_at=now),
        [{"b_sync_id": sync.sync_id, "b_state": state.value, "b_detail": p.detail} for sync, p, state in rows],
    )
    # Only the acknowledgement of an enrollment's latest sync moves its sync_state; each enrollment has one
    # latest sync, acknowledged at most once in the run, so the order of the run does not matter here.
    latest = [(sync, p, state) for sync, p, state in rows if sync.sync_sequence == sync.sequence]
    if latest:
        await connection.execute(
            update(e)
            .where(e.c.enrollment_id == bindparam("b_enrollment_id"), e.c.sync_sequence == bindparam("b_sequence"))
            .values(sync_state=bindparam("b_state"), sync_detail=bindparam("b_detail")),
            [
                {
                    "b_enrollment_id": sync.enrollment_id,
                    "b_sequence": sync.sequence,
                    "b_state": state.value,
                    "b_detail": p.detail,
                }
                for sync, p, state in latest
            ],
        )
    return [
        {
            "enrollment_id": sync.enrollment_id,
            "sync_id": sync.sync_id,
            "sequence": sync.sequence,
            "state": state.value,
            "latest": sync.sync_sequence == sync.sequence,
        }
        for sync, p, state in rows
    ]
