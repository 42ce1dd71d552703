"""The DERMS database's side of enrollment sync (F3): the statements
:mod:`derbridge.derms.services.enrollment_sync` runs in the inbox transaction — locks, the sequences
applied, devices and their availability, reservations released, the sync log, the requests' states.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import enrollment_sync as contract
from derbridge.derms.adapters import tables as t
from derbridge.derms.adapters.events import lock_reservations as lock_reservations
from derbridge.derms.domain.event import LIVE_STATUSES
from derbridge.infra.upsert import frozen, insert_for

AVAILABILITY_COLUMNS = (
    "device_id",
    "program_code",
    "enrollment_id",
    "cis_account_id",
    "cis_service_point_id",
    "availability",
    "sequence",
    "updated_at",
)
"""The keys of a row :func:`write_availability` takes."""


async def lock_enrollment(connection: AsyncConnection, enrollment_id: str) -> None:
    """Serialise the syncs of one enrollment (PostgreSQL; SQLite has one writer)."""
    # Competing consumers may deliver two syncs of one enrollment at once: without this, both would read
    # the same "highest applied" and the older could commit last. The two-key form keeps these locks apart
    # from the single-key ones (events' reservation lock).
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('derms.enrollment-sync'), hashtext(:enrollment_id))"),
            {"enrollment_id": enrollment_id},
        )


async def applied_sequence(connection: AsyncConnection, enrollment_id: str) -> int | None:
    """The highest sequence applied for the enrollment: from its log, and from the availability rows it
    holds (which also cover syncs applied before the log existed)."""
    logged = await connection.scalar(
        select(func.max(t.enrollment_sync_log.c.sequence)).where(
            t.enrollment_sync_log.c.enrollment_id == enrollment_id, t.enrollment_sync_log.c.result == "APPLIED"
        )
    )
    held = await connection.scalar(
        select(func.max(t.device_availability.c.sequence)).where(t.device_availability.c.enrollment_id == enrollment_id)
    )
    known = [int(v) for v in (logged, held) if v is not None]
    return max(known) if known else None


async def applied_sequences(connection: AsyncConnection, enrollment_ids: Sequence[str]) -> dict[str, int]:
    """:func:`applied_sequence` of each of ``enrollment_ids`` that has one, in two statements."""
    log, a = t.enrollment_sync_log, t.device_availability
    found: dict[str, int] = {}
    for statement in (
        select(log.c.enrollment_id, func.max(log.c.sequence))
        .where(log.c.enrollment_id.in_(enrollment_ids), log.c.result == "APPLIED")
        .group_by(log.c.enrollment_id),
        select(a.c.enrollment_id, func.max(a.c.sequence))
        .where(a.c.enrollment_id.in_(enrollment_ids))
        .group_by(a.c.enrollment_id),
    ):
        for enrollment_id, sequence in (await connection.execute(statement)).tuples():
            if sequence is not None:
                found[enrollment_id] = max(int(sequence), found.get(enrollment_id, int(sequence)))
    return found


def _device_upsert(dialect_name: str) -> Any:
    """Insert a device, or update its description when its ``(head_end_system, nic_id)`` is known."""
    d = t.devices
    columns = ("head_end_system", "nic_id", "device_type", "manufacturer", "model", "created_at")
    statement = insert_for(dialect_name, d).values({name: bindparam(name) for name in columns})
    return statement.on_conflict_do_update(
        index_elements=[d.c.head_end_system, d.c.nic_id],
        set_={name: statement.excluded[name] for name in ("device_type", "manufacturer", "model")},
    )


def _availability_upsert(dialect_name: str, *, only_holder: bool = False) -> Any:
    """Write a device's availability in a program; with ``only_holder``, leave the row alone when another
    enrollment holds the device."""
    a = t.device_availability
    statement = insert_for(dialect_name, a).values({name: bindparam(name) for name in AVAILABILITY_COLUMNS})
    return statement.on_conflict_do_update(
        index_elements=[a.c.device_id, a.c.program_code],
        set_={name: statement.excluded[name] for name in AVAILABILITY_COLUMNS[2:]},
        where=(a.c.enrollment_id == bindparam("enrollment_id")) if only_holder else None,
    )


async def upsert_devices(connection: AsyncConnection, devices: Sequence[contract.SyncedDevice], now: datetime) -> None:
    """Upsert ``devices`` (distinct) by ``(head_end_system, nic_id)``, with their description."""
    # Rows in key order: concurrent upserts of overlapping devices then lock them in the same order on
    # PostgreSQL and cannot deadlock.
    await connection.execute(
        frozen(connection.dialect, ("derms-device-upsert",), _device_upsert),
        [
            {
                "head_end_system": x.head_end_system,
                "nic_id": x.nic_id,
                "device_type": x.device_type,
                "manufacturer": x.manufacturer,
                "model": x.model,
                "created_at": now,
            }
            for x in sorted(devices, key=lambda x: (x.head_end_system, x.nic_id))
        ],
    )


async def device_ids(connection: AsyncConnection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The DERMS ids of the devices ``(head_end_system, nic_id)`` of ``keys`` that it knows, by key."""
    d = t.devices
    rows = await connection.execute(
        select(d.c.device_id, d.c.head_end_system, d.c.nic_id).where(
            tuple_(d.c.head_end_system, d.c.nic_id).in_(sorted(set(keys)))
        )
    )
    return {(r.head_end_system, r.nic_id): r.device_id for r in rows}


async def availability_holders(connection: AsyncConnection, program: str, devices: Sequence[int]) -> dict[int, str]:
    """The enrollment that holds each of ``devices`` (DERMS ids) in ``program``, for those with a row."""
    a = t.device_availability
    rows = await connection.execute(
        select(a.c.device_id, a.c.enrollment_id).where(a.c.program_code == program, a.c.device_id.in_(list(devices)))
    )
    return dict(rows.tuples().all())


async def write_availability(
    connection: AsyncConnection, rows: Sequence[dict[str, Any]], *, only_holder: bool = False
) -> None:
    """Upsert availability ``rows`` (keys :data:`AVAILABILITY_COLUMNS`, in ``(device_id, program_code)``
    order); with ``only_holder``, a row another enrollment holds stays as it is."""
    if only_holder:
        await connection.execute(
            frozen(
                connection.dialect,
                ("derms-availability-upsert-if-holder",),
                lambda dialect: _availability_upsert(dialect, only_holder=True),
            ),
            rows,
        )
    else:
        await connection.execute(frozen(connection.dialect, ("derms-availability-upsert",), _availability_upsert), rows)


async def live_reservations(connection: AsyncConnection, devices: Sequence[int], program: str) -> Sequence[Row[Any]]:
    """The RESERVED reservations of ``devices`` for the program's live events: ``(record_id, device_id,
    event_id, start_at)`` each."""
    r, e = t.reservations, t.program_events
    return (
        await connection.execute(
            select(r.c.record_id, r.c.device_id, r.c.event_id, e.c.start_at)
            .join(e, e.c.event_id == r.c.event_id)
            .where(
                r.c.device_id.in_(devices),
                r.c.status == "RESERVED",
                e.c.program_code == program,
                e.c.status.in_([s.value for s in LIVE_STATUSES]),
            )
        )
    ).all()


async def release_reservations(
    connection: AsyncConnection, record_ids: Sequence[str], reason: str, now: datetime
) -> None:
    """Release the reservations ``record_ids`` still RESERVED."""
    r = t.reservations
    await connection.execute(
        update(r)
        .where(r.c.record_id.in_(record_ids), r.c.status == "RESERVED")
        .values(status="RELEASED", released_at=now, release_reason=reason)
    )


async def log_syncs(connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` to ``enrollment_sync_log`` (``message_id, enrollment_id, sequence, change, result,
    detail, at``)."""
    await connection.execute(t.enrollment_sync_log.insert(), list(rows))


async def set_request_states(connection: AsyncConnection, states: Sequence[tuple[str, str]], now: datetime) -> None:
    """Give the enrollment requests recorded for F1 of each ``(enrollment_id, state)`` that state."""
    r = t.enrollment_requests
    await connection.execute(
        update(r)
        .where(r.c.enrollment_id == bindparam("b_enrollment_id"))
        .values(state=bindparam("b_state"), updated_at=now),
        [{"b_enrollment_id": enrollment_id, "b_state": state} for enrollment_id, state in states],
    )
