"""The latest state the DERMS knows of each enrollment, whatever order Asset Hub's messages arrived in.

Two messages tell the DERMS an enrollment's state: Asset Hub's F1 answer (PENDING, when it accepted the
request) and each F3 sync (ACTIVE, UNENROLLED). They travel on different flows, so the bridge may deliver a
sync before the answer (two workers, parallel batches, a retried answer). The DERMS orders them by a
per-enrollment **revision** Asset Hub already gives both: the answer is revision 0 (a new enrollment has made
no sync yet) and a sync is revision ``sequence`` (1 for the first, one more for each). ``enrollment_states``
keeps the highest revision seen and its state; the aggregator's view of the request (``enrollment_requests
.state``, shown on the VTN as ENROLLMENT_STATE) is always taken from it, so the end state is the same
whatever the order.

Both writers touch the enrollment's row here *before* they set the request's state, and that row is what
serialises them on PostgreSQL (an ``INSERT … ON CONFLICT`` waits for a concurrent transaction that inserted
or updated the same key): an answer and a sync of one enrollment committed at once cannot both miss the
other. No advisory lock per enrollment is needed on the answer's side, which answers up to 10,000 requests
per message. SQLite admits one writer at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.derms.adapters import tables as t
from derbridge.infra.upsert import frozen, insert_for

ANSWER_REVISION: Final = 0
"""The revision of Asset Hub's F1 answer: before every sync of the enrollment (their sequences start at 1)."""


def _answer_insert(dialect_name: str) -> Any:
    s = t.enrollment_states
    return (
        insert_for(dialect_name, s)
        .values(
            enrollment_id=bindparam("enrollment_id"),
            state=bindparam("state"),
            sequence=bindparam("sequence"),
            updated_at=bindparam("updated_at"),
        )
        .on_conflict_do_nothing(index_elements=[s.c.enrollment_id])
    )


def _sync_upsert(dialect_name: str) -> Any:
    s = t.enrollment_states
    statement = insert_for(dialect_name, s).values(
        enrollment_id=bindparam("enrollment_id"),
        state=bindparam("state"),
        sequence=bindparam("sequence"),
        updated_at=bindparam("updated_at"),
    )
    return statement.on_conflict_do_update(
        index_elements=[s.c.enrollment_id],
        set_={name: statement.excluded[name] for name in ("state", "sequence", "updated_at")},
        where=s.c.sequence < statement.excluded.sequence,
    )


async def note_answers(connection: AsyncConnection, accepted: Sequence[tuple[str, str]], now: datetime) -> None:
    """Record revision 0 of each ``(enrollment_id, state)`` Asset Hub's answers accepted, unless a sync is
    known already (then it stays). Call it before the requests take their state (:func:`known_state`)."""
    if accepted:
        rows = sorted(dict(accepted).items())
        # Rows in key order: concurrent writers lock overlapping keys in the same order and cannot deadlock.
        await connection.execute(
            frozen(connection.dialect, ("derms-enrollment-state-answer",), _answer_insert),
            [{"enrollment_id": e, "state": state, "sequence": ANSWER_REVISION, "updated_at": now} for e, state in rows],
        )


async def note_syncs(connection: AsyncConnection, applied: Sequence[tuple[str, str, int]], now: datetime) -> None:
    """Record each applied sync's ``(enrollment_id, state, sequence)`` where it is newer than what is known
    (an answer, or an older sync). Call it before the requests take their state."""
    if applied:
        await connection.execute(
            frozen(connection.dialect, ("derms-enrollment-state-sync",), _sync_upsert),
            [
                {"enrollment_id": e, "state": state, "sequence": sequence, "updated_at": now}
                for e, state, sequence in sorted(applied)
            ],
        )


def known_state(enrollment_id: Any) -> Any:
    """The state of the enrollment ``enrollment_id`` (a column or a bound parameter) at its highest known
    revision, as a scalar subquery; NULL for an enrollment the DERMS has heard nothing of."""
    s = t.enrollment_states
    return select(s.c.state).where(s.c.enrollment_id == enrollment_id).scalar_subquery()
