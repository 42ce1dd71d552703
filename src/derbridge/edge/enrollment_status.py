"""Telling aggregators that an enrollment request was answered, so they need not poll.

A resource with enrollment attributes shows its request's status (docs/edge.md). When Asset Hub's F1 answer
reaches the DERMS, :func:`notify_answered` (registered with
:func:`~derbridge.derms.services.enrollment_requests.on_requests_answered`, run in the inbox transaction)
marks those resources modified and queues an UPDATE notification for each subscriber allowed to see them,
the resource shown with its new ENROLLMENT_* attributes. Without any subscription to resources it costs one
read.
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

CHUNK = 500


async def notify_answered(
    connection: AsyncConnection, head_end_system: str, request_ids: Sequence[str], now: datetime
) -> None:
    """Queue UPDATE notifications for the resources whose enrollment requests were just answered."""
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
        await store.queue_notifications(connection, Operation.UPDATE, rows)


def load() -> None:
    """Register the listener with the DERMS's F1 answers (once per process)."""
    if notify_answered not in _registered:
        f1_service.on_requests_answered(notify_answered)
        _registered.append(notify_answered)


_registered: list[object] = []
