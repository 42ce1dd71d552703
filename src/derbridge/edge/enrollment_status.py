"""Telling aggregators that an enrollment request was answered, so they need not poll.

A resource with enrollment attributes shows its request's status (docs/edge.md). When Asset Hub's F1 answer
reaches the DERMS, :func:`notify_answered` (the DERMS's port
:attr:`~derbridge.derms.ports.DermsPorts.requests_answered`, wired by :func:`derbridge.edge.system.build`,
run in the inbox transaction) marks those resources modified and queues an UPDATE notification for each
subscriber allowed to see them, the resource shown with its new ENROLLMENT_* attributes. Later lifecycle
changes reach the DERMS by enrollment sync (F3), which sets the recorded request's state (ACTIVE,
UNENROLLED); :func:`notify_state_changed` (the port
:attr:`~derbridge.derms.ports.DermsPorts.enrollment_states_changed`, in that inbox transaction) does the
same for the resources of those enrollments. Without any subscription to resources either costs one read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.derms.adapters import tables as dm
from derbridge.derms.services import enrollment_requests as f1_service
from derbridge.edge import domain, store
from derbridge.edge.schemas import ObjectType, Operation
from derbridge.edge.store import Row
from derbridge.edge.tables import edge_objects as o
from derbridge.edge.token_vault import TokenVault

CHUNK = 500


async def notify_answered(
    connection: AsyncConnection, head_end_system: str, request_ids: Sequence[str], now: datetime, *, vault: TokenVault
) -> None:
    """Queue UPDATE notifications for the resources whose enrollment requests were just answered (or, by
    :func:`notify_state_changed`, whose enrollments changed state)."""
    if not request_ids or not await store.any_subscription_to(connection, ObjectType.RESOURCE):
        return
    table = dm.enrollment_requests
    for start in range(0, len(request_ids), CHUNK):
        ids = list(request_ids[start : start + CHUNK])
        await connection.execute(
            update(o)
            .where(
                o.c.object_type == ObjectType.RESOURCE.value,
                o.c.head_end_system == head_end_system,
                o.c.id.in_(ids),
            )
            .values(modified_at=now)
        )
        rows = [
            Row.of(m)
            for m in (
                await connection.execute(
                    select(o)
                    .where(
                        o.c.object_type == ObjectType.RESOURCE.value,
                        o.c.head_end_system == head_end_system,
                        o.c.id.in_(ids),
                    )
                    .order_by(o.c.id)
                )
            ).mappings()
        ]
        if not rows:
            continue
        statuses = {
            m["request_id"]: f1_service.request_status(dict(m))
            for m in (
                await connection.execute(
                    select(*f1_service.STATUS_COLUMNS).where(
                        tuple_(table.c.head_end_system, table.c.request_id).in_([(head_end_system, r.id) for r in rows])
                    )
                )
            ).mappings()
        }
        for row in rows:
            # The notification shows what a read shows: the client's attributes and the VTN's status ones.
            shown = domain.status_attributes(statuses.get(row.id))
            row.body = {**row.body, "attributes": list(row.body.get("attributes") or []) + shown}
        await store.queue_notifications(connection, Operation.UPDATE, rows, now, vault=vault)


async def notify_state_changed(
    connection: AsyncConnection, enrollment_ids: Sequence[str], now: datetime, *, vault: TokenVault
) -> None:
    """Queue UPDATE notifications for the resources whose enrollments just changed state (F3)."""
    if not enrollment_ids or not await store.any_subscription_to(connection, ObjectType.RESOURCE):
        return
    table = dm.enrollment_requests
    by_head_end: dict[str, list[str]] = {}
    for start in range(0, len(enrollment_ids), CHUNK):
        for head_end_system, request_id in await connection.execute(
            select(table.c.head_end_system, table.c.request_id)
            .where(table.c.enrollment_id.in_(list(enrollment_ids[start : start + CHUNK])))
            .order_by(table.c.head_end_system, table.c.request_id)
        ):
            by_head_end.setdefault(head_end_system, []).append(request_id)
    for head_end_system, request_ids in by_head_end.items():
        await notify_answered(connection, head_end_system, request_ids, now, vault=vault)
