"""F5 · F6 · F7 · the reads and writes of participation records that need care at scale: devices resolved
by head-end with one array parameter (:func:`device_ids`), the event row locked (:func:`locked_event`), a
batch's records read through the ``(event_id, device_id)`` index (:func:`read_records`), and outcomes
written through the driver (:func:`write_outcomes`). They run in the inbox's transaction; the handlers
:mod:`derbridge.assethub.handlers.events` decide what to write."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

from sqlalchemy import RowMapping, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.infra.columnar import db_times, id_list

Key = tuple[str, str]
"""A device as messages name it: ``(head_end_system, nic_id)``."""

OUTCOME_FIELDS = (
    "outcome",
    "preemptive_opt_out",
    "participation_start_at",
    "participation_end_at",
    "shed_kw",
    "error_message",
)


async def device_ids(connection: AsyncConnection, keys: Iterable[Key]) -> dict[Key, int]:
    """Asset Hub's ``device_id`` of each device it knows among ``keys`` (unknown ones are absent)."""
    by_head_end: dict[str, list[str]] = defaultdict(list)
    for head_end, nic in keys:
        by_head_end[head_end].append(nic)
    d = t.devices
    found: dict[Key, int] = {}
    for head_end, nics in by_head_end.items():
        # The head end's nic ids as one parameter (an array, or a JSON array on SQLite): no IN list of
        # thousands of parameters to compile and bind, however long the list.
        rows = await connection.execute(
            select(d.c.nic_id, d.c.device_id).where(
                d.c.head_end_system == head_end, id_list(connection, d.c.nic_id, nics, "nics")
            )
        )
        found.update(((head_end, nic), device_id) for nic, device_id in rows.tuples())
    return found


async def locked_event(connection: AsyncConnection, event_id: str) -> RowMapping | None:
    # FOR UPDATE (PostgreSQL; SQLite has one writer anyway): messages of one event applied at once by
    # competing deliveries take turns, so each reads what the previous one wrote.
    result = await connection.execute(
        select(t.program_events).where(t.program_events.c.event_id == event_id).with_for_update()
    )
    return result.mappings().first()


# Constant names only (no input reaches the text).
_UPDATE_OUTCOMES_SQLITE = (
    f"UPDATE {t.participation_records.name} SET "  # noqa: S608
    + ", ".join(f"{name} = ?" for name in (*OUTCOME_FIELDS, "outcome_reported_at"))
    + " WHERE record_id = ?"
)
# The arrays go as binary parameters (%b): psycopg dumps a list as text escaping each element in Python
# (10,000 timestamps: 24 ms), in binary without (1 ms). Each list holds one Python type (validated models).
_UPDATE_OUTCOMES_POSTGRESQL = (
    f"UPDATE {t.participation_records.name} AS p SET "  # noqa: S608
    + ", ".join(f"{name} = u.{name}" for name in (*OUTCOME_FIELDS, "outcome_reported_at"))
    + " FROM unnest(%b::text[], %b::boolean[], %b::timestamptz[], %b::timestamptz[], %b::double precision[], "
    "%b::text[], %b::timestamptz[], %b::text[]) AS u("
    + ", ".join((*OUTCOME_FIELDS, "outcome_reported_at", "record_id"))
    + ") WHERE p.record_id = u.record_id"
)


async def write_outcomes(connection: AsyncConnection, writes: list[tuple[Any, ...]]) -> None:
    """Set each record's outcome: ``writes`` are the :data:`OUTCOME_FIELDS`, ``outcome_reported_at`` and
    the ``record_id``, in that order (of a record written twice, the last).

    Through the driver, not SQLAlchemy's per-row parameter processing (three ``UTCDateTime`` conversions
    a row), which cost more than the update itself for a batch of 10,000 (F7 benchmark): on SQLite an
    ``executemany`` of plain tuples, times converted as the column type would (naive UTC text), each
    distinct one once; on PostgreSQL one ``UPDATE … FROM unnest(…)`` over arrays."""
    if not writes:
        return
    if connection.dialect.name == "postgresql":
        # One statement updates a row once: the last write of a record wins, as in an executemany.
        last = list({row[-1]: row for row in writes}.values())
        await connection.exec_driver_sql(_UPDATE_OUTCOMES_POSTGRESQL, tuple(list(c) for c in zip(*last, strict=True)))
        return
    at = db_times(connection)

    # By record id (a stable sort: of a record written twice the last still wins): the updates then walk the
    # primary key in order, whatever order the aggregators reported in.
    rows = [
        (o, opt_out, at(s), at(e), kw, m, at(r), i)
        for o, opt_out, s, e, kw, m, r, i in sorted(writes, key=itemgetter(-1))
    ]
    await connection.exec_driver_sql(_UPDATE_OUTCOMES_SQLITE, rows)


async def read_records(
    connection: AsyncConnection, event_id: str, device_ids: Iterable[int]
) -> dict[int, dict[str, Any]]:
    """The participation records of ``event_id`` for ``device_ids`` (those it has), by device id.

    Only the devices of the batch are read, through the (event_id, device_id) index: an event of 100,000
    devices reported in ten batches is read once in all, not ten times."""
    p = t.participation_records
    columns = [p.c.record_id, p.c.device_id, p.c.status, p.c.outcome_reported_at, *(p.c[f] for f in OUTCOME_FIELDS)]
    rows = await connection.execute(
        select(*columns).where(
            p.c.event_id == event_id, id_list(connection, p.c.device_id, list(device_ids), "devices")
        )
    )
    # Plain dicts from the tuples: a RowMapping per row cost more than the query (10,000 per batch).
    names = [c.name for c in columns]
    found = (dict(zip(names, row, strict=True)) for row in rows.tuples())
    return {record["device_id"]: record for record in found}
