"""The DERMS database's side of outcome reports (F7): the event a report is for, the reported devices it
holds, and the outcomes' upsert (through the driver: a report carries up to 100,000 devices); and the
NON_RESPONSIVE outcomes an event's closing gives its silent devices.
:mod:`derbridge.derms.services.outcomes` runs these in the report's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Row, exists, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts.event_outcome import DeviceOutcome, Outcome
from derbridge.derms.adapters import tables as t
from derbridge.infra.columnar import db_times, id_list
from derbridge.infra.upsert import insert_for

_OUTCOME_FIELDS = (
    "outcome",
    "preemptive_opt_out",
    "participation_start_at",
    "participation_end_at",
    "shed_kw",
    "error_message",
    "origin",
    "reported_at",
)


async def event_for_update(connection: AsyncConnection, event_id: str) -> Row[Any] | None:
    """The event's ``status, start_at, end_at, derms_instance_id`` and its program's ``outcome_grace_hours``,
    locked (``FOR UPDATE`` on PostgreSQL; SQLite has one writer anyway) against its closing and other reports
    of it; None when there is no such event."""
    e, p = t.program_events, t.programs
    return (
        await connection.execute(
            select(e.c.status, e.c.start_at, e.c.end_at, e.c.derms_instance_id, p.c.outcome_grace_hours)
            .join(p, p.c.program_code == e.c.program_code)
            .where(e.c.event_id == event_id)
            .with_for_update(of=e)
        )
    ).first()


async def reserved_among(
    connection: AsyncConnection, event_id: str, outcomes: Sequence[DeviceOutcome]
) -> dict[tuple[str, str], int]:
    """The reported devices the event holds (RESERVED), by ``(head_end_system, nic_id)``: only the report's
    devices are read, through the devices' unique key and the reservations' ``(event_id, device_id)`` key —
    an event of 100,000 devices reported in ten batches is read once in all, not ten times."""
    r, d = t.reservations, t.devices
    by_head_end: dict[str, list[str]] = defaultdict(list)
    for x in outcomes:
        by_head_end[x.head_end_system].append(x.nic_id)
    known: dict[int, tuple[str, str]] = {}
    for head_end, nics in by_head_end.items():
        # Two probes rather than one join: left to itself, SQLite walks every reservation of the event.
        rows = await connection.execute(
            select(d.c.device_id, d.c.nic_id).where(
                d.c.head_end_system == head_end, id_list(connection, d.c.nic_id, nics, "nics")
            )
        )
        known.update((device_id, (head_end, nic)) for device_id, nic in rows.tuples())
    held = await connection.scalars(
        select(r.c.device_id).where(
            r.c.event_id == event_id,
            id_list(connection, r.c.device_id, list(known), "devices"),
            r.c.status == "RESERVED",
        )
    )
    return {known[device_id]: device_id for device_id in held}


# Every name is a constant of this module (no input reaches the text).
_SET_OUTCOME = f"DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in _OUTCOME_FIELDS)}"
_UPSERT_OUTCOMES_SQLITE = (
    f"INSERT INTO {t.outcomes.name} (event_id, device_id, {', '.join(_OUTCOME_FIELDS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * (2 + len(_OUTCOME_FIELDS)))}) ON CONFLICT (event_id, device_id) {_SET_OUTCOME}"
)
# The arrays go as binary parameters (%b): psycopg dumps a list as text escaping each element in Python
# (10,000 timestamps: 24 ms), in binary without (1 ms). Each list holds one Python type (validated models).
_UPSERT_OUTCOMES_POSTGRESQL = (
    f"INSERT INTO {t.outcomes.name} (event_id, device_id, {', '.join(_OUTCOME_FIELDS)}) "  # noqa: S608
    "SELECT %s, u.device_id, u.outcome, u.preemptive_opt_out, u.participation_start_at, u.participation_end_at, "
    "u.shed_kw, u.error_message, %s, %s "
    "FROM unnest(%b::bigint[], %b::text[], %b::boolean[], %b::timestamptz[], %b::timestamptz[], "
    "%b::double precision[], %b::text[]) AS u(device_id, outcome, preemptive_opt_out, participation_start_at, "
    f"participation_end_at, shed_kw, error_message) ON CONFLICT (event_id, device_id) {_SET_OUTCOME}"
)


async def store_outcomes(
    connection: AsyncConnection,
    event_id: str,
    reserved: dict[tuple[str, str], int],
    outcomes: Sequence[DeviceOutcome],
    now: datetime,
) -> None:
    """Upsert one ``outcomes`` row per device (origin REPORTED), a later report replacing an earlier one.

    Through the driver, not SQLAlchemy's per-row parameter processing (the ``UTCDateTime`` conversions
    above all), which cost several times the database's own work for a report of 10,000 devices (F7
    benchmark): on SQLite an ``executemany`` of plain tuples, timestamps converted as
    :class:`~derbridge.infra.db.UTCDateTime` would (naive UTC text), each distinct one once; on PostgreSQL
    one statement over arrays (``unnest``), where an ``executemany`` cost a second per 10,000 rows. The
    devices must be distinct, as one ``ON CONFLICT`` statement needs."""
    if not outcomes:
        return
    devices = [reserved[(x.head_end_system, x.nic_id)] for x in outcomes]
    if connection.dialect.name == "postgresql":
        columns = (
            devices,
            [x.outcome.value for x in outcomes],
            [x.preemptive_opt_out for x in outcomes],
            [x.participation_start_at for x in outcomes],
            [x.participation_end_at for x in outcomes],
            [x.shed_kw for x in outcomes],
            [x.error_message for x in outcomes],
        )
        await connection.exec_driver_sql(_UPSERT_OUTCOMES_POSTGRESQL, (event_id, "REPORTED", now, *columns))
        return
    at = db_times(connection)

    reported_at = at(now)
    # By device id: the (event_id, device_id) key is then walked in order, whatever the report's order.
    rows = sorted(
        (
            (
                event_id,
                device_id,
                x.outcome.value,
                x.preemptive_opt_out,
                at(x.participation_start_at),
                at(x.participation_end_at),
                x.shed_kw,
                x.error_message,
                "REPORTED",
                reported_at,
            )
            for device_id, x in zip(devices, outcomes, strict=True)
        ),
        key=itemgetter(1),
    )
    await connection.exec_driver_sql(_UPSERT_OUTCOMES_SQLITE, rows)


async def silent_devices(connection: AsyncConnection, event_id: str) -> Sequence[Row[Any]]:
    """The devices the event holds (RESERVED) with no outcome: ``(device_id, head_end_system, nic_id)``, in
    rank order."""
    r, o, d = t.reservations, t.outcomes, t.devices
    return (
        await connection.execute(
            select(r.c.device_id, d.c.head_end_system, d.c.nic_id)
            .join(d, d.c.device_id == r.c.device_id)
            .where(
                r.c.event_id == event_id,
                r.c.status == "RESERVED",
                ~exists(select(o.c.device_id).where(o.c.event_id == event_id, o.c.device_id == r.c.device_id)),
            )
            .order_by(r.c.rank)
        )
    ).all()


async def insert_non_responsive(
    connection: AsyncConnection, event_id: str, device_ids: Sequence[int], now: datetime
) -> None:
    """Give ``device_ids`` the outcome NON_RESPONSIVE (origin CLOSED) where they have none."""
    o = t.outcomes
    await connection.execute(
        insert_for(connection.dialect.name, o).on_conflict_do_nothing(index_elements=[o.c.event_id, o.c.device_id]),
        [
            {
                "event_id": event_id,
                "device_id": device_id,
                "outcome": Outcome.NON_RESPONSIVE.value,
                "preemptive_opt_out": False,
                "participation_start_at": None,
                "participation_end_at": None,
                "shed_kw": None,
                "error_message": None,
                "origin": "CLOSED",
                "reported_at": now,
            }
            for device_id in device_ids
        ],
    )
