"""F3 · the reads of an enrollment sync, set-based per chunk of enrollments: what the message says about each
enrollment and its premise (:func:`read_sync_enrollments`), and its devices (every one it ever had, in slot
order), when it became ACTIVE and when it was unenrolled (:func:`read_sync_history`). They run in the caller's
transaction; :mod:`derbridge.assethub.services.enrollment_sync` writes the syncs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.enrollment import EnrollmentState


async def read_sync_enrollments(connection: AsyncConnection, chunk: Sequence[str]) -> dict[str, Row[Any]]:
    """The enrollments of ``chunk`` with their premise's division and time zone, by id (unknown ids absent)."""
    e, p = t.enrollments, t.premises
    return {
        row.enrollment_id: row
        for row in await connection.execute(
            select(
                e.c.enrollment_id,
                e.c.state,
                e.c.sync_sequence,
                e.c.cis_person_id,
                e.c.cis_account_id,
                e.c.program_code,
                e.c.cis_premise_id,
                e.c.cis_service_point_id,
                e.c.start_date,
                e.c.end_date,
                p.c.division,
                p.c.time_zone,
            )
            .outerjoin(p, p.c.cis_premise_id == e.c.cis_premise_id)
            .where(e.c.enrollment_id.in_(chunk))
        )
    }


async def read_sync_history(
    connection: AsyncConnection, chunk: Sequence[str], *, unenrolled_too: bool
) -> tuple[dict[str, list[Row[Any]]], dict[str, datetime], dict[str, datetime]]:
    """The devices of each enrollment of ``chunk`` (current and removed, in slot order), when each became
    ACTIVE from DEVICE_SETUP, and (``unenrolled_too``) when each was last unenrolled."""
    ed, d, tr = t.enrollment_devices, t.devices, t.enrollment_transitions
    devices: dict[str, list[Row[Any]]] = defaultdict(list)
    for row in await connection.execute(
        select(
            ed.c.enrollment_id,
            ed.c.device_id,
            ed.c.removed_at,
            d.c.head_end_system,
            d.c.nic_id,
            d.c.device_type,
            d.c.manufacturer,
            d.c.model,
        )
        .join(d, d.c.device_id == ed.c.device_id)
        .where(ed.c.enrollment_id.in_(chunk))
        .order_by(ed.c.enrollment_id, ed.c.sequence, ed.c.added_at, ed.c.device_id)
    ):
        devices[row.enrollment_id].append(row)
    activated = dict(
        (
            await connection.execute(
                select(tr.c.enrollment_id, func.min(tr.c.at))
                .where(
                    tr.c.enrollment_id.in_(chunk),
                    tr.c.to_state == EnrollmentState.ACTIVE.value,
                    tr.c.from_state == EnrollmentState.DEVICE_SETUP.value,
                )
                .group_by(tr.c.enrollment_id)
            )
        )
        .tuples()
        .all()
    )
    unenrolled: dict[str, datetime] = {}
    if unenrolled_too:
        unenrolled = dict(
            (
                await connection.execute(
                    select(tr.c.enrollment_id, func.max(tr.c.at))
                    .where(tr.c.enrollment_id.in_(chunk), tr.c.to_state == EnrollmentState.UNENROLLED.value)
                    .group_by(tr.c.enrollment_id)
                )
            )
            .tuples()
            .all()
        )
    return devices, activated, unenrolled
