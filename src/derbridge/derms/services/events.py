"""Program events in the DERMS: create one and reserve its devices (F5), cancel one before it starts (F6).

Candidates are selected set-based in one query (the four conditions of
:func:`derbridge.derms.domain.reservation.is_candidate`), ranked by the pure
:func:`~derbridge.derms.domain.reservation.select_reservations`, and stored with one bulk insert.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.derms.adapters import tables as t
from derbridge.derms.api.schemas import DermsProgramStatus, EventCancel, EventIn
from derbridge.derms.domain.event import (
    EventAlreadyStarted,
    EventNotCancellable,
    EventStatus,
    EventTarget,
    EventWindow,
    plan_cancellation,
)
from derbridge.derms.domain.reservation import Candidate, ReservationPlan, select_reservations
from derbridge.infra.db import utcnow
from derbridge.infra.ids import new_id
from derbridge.infra.problems import FieldError, ProblemError, not_found

LIVE_STATUSES = (EventStatus.SCHEDULED.value, EventStatus.ACTIVE.value)

# SQLite serialises writers but not a read-then-write: two events created at once in one process could
# both see a device free. This lock orders them in the embedded mode; PostgreSQL uses an advisory lock
# per program, which also covers several processes.
# The lock belongs to an event loop (asyncio refuses a lock contended from two loops), so there is one per
# loop: a process serves on one loop, but tests and embedded callers may run several one after another.
_reservation_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _reservation_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _reservation_locks.get(loop)
    if lock is None:
        lock = _reservation_locks[loop] = asyncio.Lock()
    return lock


async def _lock_reservations(connection: AsyncConnection) -> None:
    # One lock for all programs, not one per program: "not reserved for an overlapping event" holds across
    # programs, so two events of different programs created at once must not both take the same device.
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('derms.reserve'))"))


async def _candidates(
    connection: AsyncConnection, program_code: str, window: EventWindow, expected_shed_kw: float
) -> list[Candidate]:
    current_file = await connection.scalar(
        select(t.score_snapshots.c.file_id).where(t.score_snapshots.c.is_current.is_(True))
    )
    if current_file is None:
        return []  # no scores loaded yet: nothing is eligible, the event reports a full shortfall
    a, d, s, r, e = (
        t.device_availability,
        t.devices,
        t.device_scores,
        t.reservations,
        t.program_events,
    )
    overlapping = (
        select(r.c.record_id)
        .join(e, e.c.event_id == r.c.event_id)
        .where(
            r.c.device_id == d.c.device_id,
            r.c.status == "RESERVED",
            e.c.status.in_(LIVE_STATUSES),
            e.c.start_at < window.end_at,
            e.c.end_at > window.start_at,
        )
    )
    query = (
        select(d.c.device_id, d.c.head_end_system, d.c.nic_id, s.c.score)
        .select_from(a)
        .join(d, d.c.device_id == a.c.device_id)
        .join(
            s,
            and_(
                s.c.file_id == current_file,
                s.c.program_code == a.c.program_code,
                s.c.head_end_system == d.c.head_end_system,
                s.c.nic_id == d.c.nic_id,
            ),
        )
        .where(
            a.c.program_code == program_code,
            a.c.availability == "AVAILABLE",
            s.c.eligible.is_(True),
            ~exists(overlapping),
        )
    )
    result = await connection.execute(query)
    return [Candidate(row[0], row[1], row[2], float(row[3]), expected_shed_kw) for row in result.tuples()]


def _event_row(event_id: str, instance: str, request: EventIn, plan: ReservationPlan, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "derms_instance_id": instance,
        "program_code": request.program_code,
        "event_type": request.event_type.value,
        "start_at": request.start_at,
        "end_at": request.end_at,
        "status": EventStatus.SCHEDULED.value,
        "target_devices": request.target_devices,
        "target_kw": request.target_kw,
        "candidate_count": plan.candidate_count,
        "reserved_count": plan.reserved_count,
        "reserved_kw": plan.reserved_kw,
        "shortfall_devices": plan.shortfall_devices,
        "shortfall_kw": plan.shortfall_kw,
        "created_at": now,
        "created_by": request.created_by,
        "cancelled_at": None,
        "cancel_reason": None,
        "closed_at": None,
    }


async def create_event(
    engine: AsyncEngine, request: EventIn, derms_instance_id: str, now: datetime | None = None
) -> dict[str, Any]:
    """Create a SCHEDULED event and reserve its devices; a shortfall is reported on the event, not raised."""
    now = now or utcnow()
    if request.start_at <= now:
        raise ProblemError(
            422,
            "validation-error",
            "The event must start in the future",
            f"start_at {request.start_at.isoformat()} is not after now ({now.isoformat()}); pick a later start.",
            errors=[FieldError(field="body.start_at", message="must be in the future")],
        )
    window = EventWindow(request.start_at, request.end_at)
    target = (
        EventTarget.devices(request.target_devices)
        if request.target_devices is not None
        else EventTarget.kilowatts(float(request.target_kw or 0))
    )
    async with _reservation_lock(), engine.begin() as connection:
        program = (
            (await connection.execute(select(t.programs).where(t.programs.c.program_code == request.program_code)))
            .mappings()
            .first()
        )
        if program is None:
            raise ProblemError(
                422,
                "unknown-program",
                "Unknown program",
                f"No program has the code {request.program_code!r}; create it first (POST /derms/v1/programs).",
                errors=[FieldError(field="body.program_code", message="unknown program")],
            )
        if program["status"] != DermsProgramStatus.ACTIVE.value:
            raise ProblemError(
                409,
                "program-not-active",
                "Program not active",
                f"Program {request.program_code!r} is {program['status']}; activate it to create events.",
            )
        await _lock_reservations(connection)
        candidates = await _candidates(connection, request.program_code, window, program["expected_shed_kw"])
        plan = select_reservations(candidates, target)
        event_id = new_id()
        event = _event_row(event_id, derms_instance_id, request, plan, now)
        await connection.execute(t.program_events.insert(), [event])
        if plan.reserved:
            await connection.execute(
                t.reservations.insert(),
                [
                    {
                        "record_id": new_id(),
                        "event_id": event_id,
                        "device_id": c.device_id,
                        "rank": rank,
                        "score": c.score,
                        "expected_shed_kw": c.expected_shed_kw,
                        "reservation_start_at": request.start_at,
                        "reservation_end_at": request.end_at,
                        "status": "RESERVED",
                        "released_at": None,
                        "release_reason": None,
                    }
                    for rank, c in enumerate(plan.reserved, start=1)
                ],
            )
    return event


async def cancel_event(
    engine: AsyncEngine, event_id: str, cancel: EventCancel, now: datetime | None = None
) -> dict[str, Any]:
    """Cancel a SCHEDULED event before its start and release its reservations; 409 once it has started."""
    now = now or utcnow()
    async with engine.begin() as connection:
        event = (
            (await connection.execute(select(t.program_events).where(t.program_events.c.event_id == event_id)))
            .mappings()
            .first()
        )
        if event is None:
            raise not_found("event", event_id)
        try:
            status = plan_cancellation(
                EventWindow(event["start_at"], event["end_at"]), EventStatus(event["status"]), now
            )
        except EventAlreadyStarted as refused:
            raise ProblemError(409, "event-started", "The event has started", str(refused)) from None
        except EventNotCancellable as refused:
            raise ProblemError(409, "event-not-cancellable", "The event cannot be cancelled", str(refused)) from None
        # Conditional on the status we read: a concurrent cancellation or start makes this a no-op we detect.
        updated = await connection.execute(
            t.program_events.update()
            .where(t.program_events.c.event_id == event_id, t.program_events.c.status == event["status"])
            .values(status=status.value, cancelled_at=now, cancel_reason=cancel.reason_text)
        )
        if updated.rowcount != 1:
            raise ProblemError(
                409,
                "conflict",
                "The event changed meanwhile",
                "Read the event again and retry if still needed.",
            )
        await connection.execute(
            t.reservations.update()
            .where(t.reservations.c.event_id == event_id, t.reservations.c.status == "RESERVED")
            .values(status="RELEASED", released_at=now, release_reason="event cancelled")
        )
        refreshed = (
            (await connection.execute(select(t.program_events).where(t.program_events.c.event_id == event_id)))
            .mappings()
            .one()
        )
    return dict(refreshed)
