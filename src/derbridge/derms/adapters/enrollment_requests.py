"""The DERMS database's side of enrollment requests (F1): the requests recorded, and each device's latest
request, and Asset Hub's answers (:mod:`derbridge.derms.services.enrollment_requests` runs these in its unit
of work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.derms.adapters import tables as t
from derbridge.derms.adapters.enrollment_states import known_state
from derbridge.infra.upsert import insert_for

CHUNK = 1000
"""Keys per ``IN (…)`` list: well under the databases' bound-parameter limits."""

STATUS_COLUMNS = [c for c in t.enrollment_requests.c if c.name != "request"]
"""The columns the aggregator's view of a request reads: every one but the stored request payload."""


async def read_requests(
    connection: AsyncConnection, head_end_system: str, request_ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The :data:`STATUS_COLUMNS` of the requests ``request_ids`` of ``head_end_system`` recorded, by id."""
    table = t.enrollment_requests
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(request_ids), CHUNK):
        rows = await connection.execute(
            select(*STATUS_COLUMNS).where(
                table.c.head_end_system == head_end_system, table.c.request_id.in_(request_ids[start : start + CHUNK])
            )
        )
        for row in rows.mappings():
            found[row["request_id"]] = dict(row)
    return found


async def insert_new_requests(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the ``enrollment_requests`` rows not recorded yet (by ``(head_end_system, request_id)``); the
    request ids this call inserted."""
    table = t.enrollment_requests
    insert = insert_for(connection.dialect.name, table).on_conflict_do_nothing(
        index_elements=[table.c.head_end_system, table.c.request_id]
    )
    # RETURNING names the rows this call inserted: a concurrent call with the same request waits for
    # ours (PostgreSQL) or for the write lock (SQLite) and then inserts nothing.
    return {r.request_id for r in await connection.execute(insert.returning(table.c.request_id), list(rows))}


def _latest_request_upsert(dialect_name: str) -> Any:
    """Make a request the latest of its device, keeping the one it replaces as ``previous_*`` (RETURNING
    gives them back): one statement reads and moves the device's head, so two calls recording requests for
    one device at once are chained one after the other (the second waits for the first's row)."""
    d = t.device_latest_requests
    statement = insert_for(dialect_name, d)
    return statement.on_conflict_do_update(
        index_elements=[d.c.head_end_system, d.c.nic_id],
        set_={
            # Right-hand sides read the row as it was: the request that was latest becomes the previous one.
            "previous_head_end_system": d.c.request_head_end_system,
            "previous_request_id": d.c.request_id,
            "previous_message_id": d.c.message_id,
            "request_head_end_system": statement.excluded.request_head_end_system,
            "request_id": statement.excluded.request_id,
            "message_id": statement.excluded.message_id,
            "updated_at": statement.excluded.updated_at,
        },
    ).returning(
        d.c.head_end_system, d.c.nic_id, d.c.previous_head_end_system, d.c.previous_request_id, d.c.previous_message_id
    )


async def move_latest_requests(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> Sequence[Row[Any]]:
    """Make each row's request the latest of its device (rows in key order); for each device, the request
    it replaces (``previous_*``, None for a device's first)."""
    return (await connection.execute(_latest_request_upsert(connection.dialect.name), list(rows))).all()


async def stamp_message(
    connection: AsyncConnection, head_end_system: str, request_ids: set[str], message_id: str
) -> None:
    """Stamp the requests ``request_ids`` with the id of the message that forwarded them."""
    table = t.enrollment_requests
    ordered = sorted(request_ids)
    for start in range(0, len(ordered), CHUNK):
        await connection.execute(
            update(table)
            .where(table.c.head_end_system == head_end_system, table.c.request_id.in_(ordered[start : start + CHUNK]))
            .values(message_id=message_id)
        )


def _answer_update() -> Any:
    """Only an unanswered request takes an answer (executemany, one row per answer). Its state is its
    enrollment's at the highest revision known (:mod:`~derbridge.derms.adapters.enrollment_states`): the
    answer's own PENDING, or the state a sync that overtook the answer brought."""
    table = t.enrollment_requests
    return (
        update(table)
        .where(
            table.c.head_end_system == bindparam("b_head_end_system"),
            table.c.request_id == bindparam("b_request_id"),
            table.c.answer.is_(None),
        )
        .values(
            answer=bindparam("b_answer"),
            enrollment_id=bindparam("b_enrollment_id"),
            state=func.coalesce(known_state(bindparam("b_enrollment_id")), bindparam("b_state")),
            rejections=bindparam("b_rejections"),
            answered_at=bindparam("b_now"),
            updated_at=bindparam("b_now"),
        )
    )


_ANSWER_UPDATE = _answer_update()


async def answer_requests(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Give each unanswered request its answer: rows of ``b_head_end_system, b_request_id, b_answer,
    b_enrollment_id, b_state, b_rejections, b_now`` (one ``executemany``)."""
    await connection.execute(_ANSWER_UPDATE, list(rows))
