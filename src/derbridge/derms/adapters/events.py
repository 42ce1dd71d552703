"""The DERMS database's side of reserving an event's devices (F5): the lock event creation takes and the
reads the reservation plan matches (:func:`derbridge.derms.services.events.create_event`).
"""

from __future__ import annotations

import pyarrow as pa
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.event import LIVE_STATUSES, EventWindow
from derbridge.infra.columnar import id_list, read_arrow


async def lock_reservations(connection: AsyncConnection) -> None:
    """Serialise reserving devices (PostgreSQL): event creation, and releases by enrollment sync."""
    # One lock for all programs, not one per program: "not reserved for an overlapping event" holds across
    # programs, so two events of different programs created at once must not both take the same device.
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('derms.reserve'))"))


async def current_score_file(connection: AsyncConnection) -> str | None:
    """The file id of the current score snapshot; None before any was loaded."""
    return await connection.scalar(select(t.score_snapshots.c.file_id).where(t.score_snapshots.c.is_current.is_(True)))


async def eligible_scores(connection: AsyncConnection, file_id: str, program_code: str) -> pa.Table:
    """The eligible scores of ``program_code`` in snapshot ``file_id``: ``device_id`` (resolved at load, or by
    ``(head_end_system, nic_id)`` for a device the DERMS learnt of since; null when unknown) and ``score``.

    SQLite reads them in the snapshot key's order, ``(head_end_system, nic_id)`` (its BINARY collation is
    Python's order), with no names; PostgreSQL in no order, with ``head_end_system`` and ``nic_id`` (its
    collation may differ from Python's, so the caller sorts by them).
    """
    d, s = t.devices, t.device_scores
    columns = {"device_id": pa.int64(), "score": pa.float64()}
    device = func.coalesce(
        s.c.device_id,
        select(d.c.device_id)
        .where(d.c.head_end_system == s.c.head_end_system, d.c.nic_id == s.c.nic_id)
        .scalar_subquery(),
    )
    query = select(device, s.c.score).where(
        s.c.file_id == file_id, s.c.program_code == program_code, s.c.eligible.is_(True)
    )
    if connection.dialect.name == "postgresql":
        query = query.add_columns(s.c.head_end_system, s.c.nic_id)
        columns |= {"head_end_system": pa.string(), "nic_id": pa.string()}
    else:
        query = query.order_by(s.c.head_end_system, s.c.nic_id)  # the primary key's order: no sort
    return await read_arrow(connection, query, columns)


async def available_devices(connection: AsyncConnection, program_code: str) -> pa.Table:
    """The ``device_id`` of the program's AVAILABLE devices."""
    a = t.device_availability
    return await read_arrow(
        connection,
        select(a.c.device_id).where(a.c.program_code == program_code, a.c.availability == "AVAILABLE"),
        {"device_id": pa.int64()},
    )


async def held_devices(connection: AsyncConnection, window: EventWindow) -> list[int]:
    """The devices RESERVED by a live event overlapping ``window``."""
    r, e = t.reservations, t.program_events
    held = await connection.scalars(
        select(r.c.device_id)
        .join(e, e.c.event_id == r.c.event_id)
        .where(
            r.c.status == "RESERVED",
            e.c.status.in_([s.value for s in LIVE_STATUSES]),
            e.c.start_at < window.end_at,
            e.c.end_at > window.start_at,
        )
    )
    return list(held)


async def device_names(connection: AsyncConnection, device_ids: list[int]) -> tuple[list[str], list[str]]:
    """The ``(head_end_system, nic_id)`` of each of ``device_ids``, as two lists in the same order."""
    d = t.devices
    found = await read_arrow(
        connection,
        select(d.c.device_id, d.c.head_end_system, d.c.nic_id).where(
            id_list(connection, d.c.device_id, device_ids, "ids")
        ),
        {"device_id": pa.int64(), "head_end_system": pa.string(), "nic_id": pa.string()},
    )
    by_id = dict(
        zip(
            found.column("device_id").to_pylist(),
            zip(found.column("head_end_system").to_pylist(), found.column("nic_id").to_pylist(), strict=True),
            strict=True,
        )
    )
    return [by_id[i][0] for i in device_ids], [by_id[i][1] for i in device_ids]
