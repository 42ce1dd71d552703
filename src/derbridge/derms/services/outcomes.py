"""Per-device event outcomes in the DERMS (F7): what the edge reports after an event, stored and forwarded.

The edge normalises the aggregators' reports and hands the DERMS a batch of per-device outcomes
(:func:`record_outcomes`). The DERMS stores them, one row per event and device — a later report replaces
the earlier one (origin REPORTED) — and writes them to Asset Hub as ``event-outcome.v1`` messages, in the
same transaction. The silent devices of an event are given NON_RESPONSIVE when it closes
(:func:`derbridge.derms.services.events.close_event`, run by the ``event-lifecycle`` job).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.event_outcome import DeviceOutcome
from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.event import EventStatus, EventWindow, status_at
from derbridge.derms.services.event_messages import queue_outcomes
from derbridge.derms.services.events import grace_of
from derbridge.errors import Conflict, FieldError, Invalid, not_found
from derbridge.infra.columnar import db_times, id_list

log = structlog.get_logger("derbridge.derms.outcomes")

MAX_OUTCOMES_PER_REPORT = 100_000
"""The largest batch one report may carry (the contract's limit)."""

MAX_NAMED_ERRORS = 50
"""A refused report names at most this many offending devices in ``errors`` (the detail gives the count)."""

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


@dataclass(frozen=True)
class OutcomesRecorded:
    """What :func:`record_outcomes` did."""

    event_id: str
    event_status: EventStatus
    """The event's status at the time of the report (the clock's view, which the lifecycle job applies)."""
    accepted: int
    """How many device outcomes were stored (each replacing any earlier one of its device)."""
    messages: int
    """How many ``event-outcome.v1`` messages carry them to Asset Hub."""


def _device_errors(indexes: Sequence[int], outcomes: Sequence[DeviceOutcome], message: str) -> list[FieldError]:
    return [
        FieldError(
            field=f"body.outcomes.{i}",
            message=f"{outcomes[i].head_end_system}:{outcomes[i].nic_id} {message}",
        )
        for i in indexes[:MAX_NAMED_ERRORS]
    ]


def _refuse_duplicates(outcomes: Sequence[DeviceOutcome]) -> None:
    seen: set[tuple[str, str]] = set()
    repeated: list[int] = []
    for i, o in enumerate(outcomes):
        key = (o.head_end_system, o.nic_id)
        if key in seen:
            repeated.append(i)
        seen.add(key)
    if repeated:
        raise Invalid(
            "duplicate-devices",
            "A device is reported twice",
            f"{len(repeated)} outcome(s) repeat a device reported earlier in the same batch; send one outcome "
            "per device (a later report replaces an earlier one).",
            errors=_device_errors(repeated, outcomes, "appears earlier in this batch"),
        )


async def _reserved_among(
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


async def _store_outcomes(
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
    devices are distinct (:func:`_refuse_duplicates`), as one ``ON CONFLICT`` statement needs."""
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


async def record_outcomes(
    engine: AsyncEngine, event_id: str, outcomes: Sequence[DeviceOutcome], now: datetime
) -> OutcomesRecorded:
    """Store a batch of per-device outcomes of an event and queue them for Asset Hub, in one transaction.

    Refused, with nothing stored: 404 for an unknown event; 409 for an event that is CANCELLED or has not
    started yet (SCHEDULED by the clock); 422 when a device is not reserved for the event (each named) or
    appears twice in the batch. Outcomes are accepted while the event is ACTIVE and after it is COMPLETED:
    an aggregator's late report replaces the NON_RESPONSIVE the closing gave its device.
    """
    async with engine.begin() as connection:
        return await record_outcomes_in(connection, event_id, outcomes, now)


async def record_outcomes_in(
    connection: AsyncConnection, event_id: str, outcomes: Sequence[DeviceOutcome], now: datetime
) -> OutcomesRecorded:
    """:func:`record_outcomes` in the caller's transaction (the edge stores the report that carried them in
    the same unit of work). A refusal raises before anything is written."""
    if len(outcomes) > MAX_OUTCOMES_PER_REPORT:
        raise Invalid(
            "too-many-outcomes",
            "Too many outcomes in one report",
            f"A report carries at most {MAX_OUTCOMES_PER_REPORT} outcomes; split this one.",
        )
    _refuse_duplicates(outcomes)
    e, p = t.program_events, t.programs
    # FOR UPDATE (PostgreSQL; SQLite has one writer anyway) orders this against the event's closing and
    # against other reports of the same event.
    event = (
        await connection.execute(
            select(e.c.status, e.c.start_at, e.c.end_at, e.c.derms_instance_id, p.c.outcome_grace_hours)
            .join(p, p.c.program_code == e.c.program_code)
            .where(e.c.event_id == event_id)
            .with_for_update(of=e)
        )
    ).first()
    if event is None:
        raise not_found("event", event_id)
    status = status_at(
        EventWindow(event.start_at, event.end_at),
        EventStatus(event.status),
        now,
        grace_of(event.outcome_grace_hours),
    )
    if status is EventStatus.CANCELLED:
        raise Conflict(
            "event-cancelled",
            "The event was cancelled",
            f"Event {event_id} was cancelled before it started: its devices have no outcome to report.",
        )
    if status is EventStatus.SCHEDULED:
        raise Conflict(
            "event-not-started",
            "The event has not started",
            f"Event {event_id} starts at {event.start_at.isoformat()}; report outcomes once it has run.",
        )
    reserved = await _reserved_among(connection, event_id, outcomes)
    strangers = [i for i, x in enumerate(outcomes) if (x.head_end_system, x.nic_id) not in reserved]
    if strangers:
        raise Invalid(
            "devices-not-reserved",
            "Devices not reserved for the event",
            f"{len(strangers)} of the {len(outcomes)} devices reported were not reserved for event {event_id}; "
            "nothing was stored. Remove them and send the report again.",
            errors=_device_errors(strangers, outcomes, "is not reserved for this event"),
        )
    await _store_outcomes(connection, event_id, reserved, outcomes, now)
    messages = await queue_outcomes(connection, event_id, event.derms_instance_id, outcomes, now)
    log.info("event outcomes recorded", event_id=event_id, outcomes=len(outcomes), messages=messages)
    return OutcomesRecorded(event_id, status, len(outcomes), messages)
