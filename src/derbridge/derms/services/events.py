"""Program events in the DERMS: create one and reserve its devices (F5), cancel one before it starts (F6),
and move events through their lifecycle as the business clock passes their start and their closing time (F7).

Candidates are selected set-based in one query (the four conditions of
:func:`derbridge.derms.domain.reservation.is_candidate`), ranked by the pure
:func:`~derbridge.derms.domain.reservation.select_reservations`, and stored with one bulk insert. Every
change writes its message to Asset Hub (:mod:`derbridge.derms.services.event_messages`) in its own
transaction. "Now" is the business clock (:func:`derbridge.infra.clock.now`) unless the caller gives it.

The job ``event-lifecycle`` (every 5 s: :func:`derbridge.derms.handlers.events.event_lifecycle_job` runs
:func:`advance_lifecycle`) starts SCHEDULED events whose start has come and closes ACTIVE ones at
``end_at + grace``: every reserved device without an outcome gets NON_RESPONSIVE, the event becomes
COMPLETED, and one ``event-outcome.v1`` message carries those outcomes.
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.event_outcome import DeviceOutcome, Outcome
from derbridge.derms.adapters import events as db
from derbridge.derms.adapters import outcomes as outcomes_db
from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.event import (
    LIVE_STATUSES,
    EventAlreadyStarted,
    EventNotCancellable,
    EventStatus,
    EventTarget,
    EventWindow,
    grace_of,
    plan_cancellation,
    transitions_due,
)
from derbridge.derms.domain.program import DermsProgramStatus
from derbridge.derms.domain.reservation import ReservationPlan, rank_columns
from derbridge.derms.services.event_messages import (
    ReservationFiles,
    ReservedRow,
    queue_cancellation,
    queue_outcomes,
    queue_reservation,
)
from derbridge.derms.services.models import EventCancel, EventIn
from derbridge.errors import Conflict, FieldError, Invalid, not_found
from derbridge.infra.columnar import db_time, insert_arrow
from derbridge.infra.ids import new_id, new_ids

log = structlog.get_logger("derbridge.derms.events")

LIVE = [s.value for s in LIVE_STATUSES]

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


async def _plan(
    connection: AsyncConnection, program_code: str, window: EventWindow, target: EventTarget, expected_shed_kw: float
) -> ReservationPlan:
    """The candidates (the four conditions of ``is_candidate``), ranked, and the devices the target takes.

    Three plain reads matched with numpy instead of one join — the current snapshot's eligible scores of the
    program (the device resolved at load, or by ``(head_end_system, nic_id)`` for a device the DERMS learnt
    of since), the program's AVAILABLE devices, and the few devices held by an overlapping live event
    (:mod:`derbridge.derms.adapters.events`) — then ranked as columns (``rank_columns``). On SQLite the
    million-row join looked a four-text-column key up per device (10 s). SQLite reads the scores in the
    snapshot key's order, ``(head_end_system, nic_id)`` (its BINARY collation is Python's order), so ties need
    no names: only the reserved devices' are read. PostgreSQL streams the names with the scores (``COPY``)
    and Arrow sorts by them (its collation may differ from Python's).
    """
    current_file = await db.current_score_file(connection)
    if current_file is None:
        # No scores loaded yet: nothing is eligible, the event reports a full shortfall.
        return rank_columns(np.zeros(0), expected_shed_kw, target).plan([], [], [], [], expected_shed_kw)
    postgres = connection.dialect.name == "postgresql"
    scored = await db.eligible_scores(connection, current_file, program_code)
    available = await db.available_devices(connection, program_code)
    held = await db.held_devices(connection, window)
    ids = scored.column("device_id").fill_null(0).to_numpy()
    keep = scored.column("device_id").is_valid().to_numpy(zero_copy_only=False)  # a device the DERMS knows
    keep &= np.isin(ids, available.column("device_id").to_numpy())
    keep &= ~np.isin(ids, np.fromiter(held, dtype=np.int64))
    candidates = scored.filter(pa.array(keep))
    device_ids = candidates.column("device_id").to_numpy().astype(np.int64, copy=False)
    scores = candidates.column("score").to_numpy().astype(np.float64, copy=False)
    if postgres:
        heads, nics = (
            candidates.column("head_end_system").combine_chunks(),
            candidates.column("nic_id").combine_chunks(),
        )
        chosen = rank_columns(scores, expected_shed_kw, target, heads, nics)
        taken = pa.array(chosen.positions)
        names = (heads.take(taken).to_pylist(), nics.take(taken).to_pylist())
    else:
        chosen = rank_columns(scores, expected_shed_kw, target)
        names = await db.device_names(connection, device_ids[chosen.positions].tolist())
    return chosen.plan(
        device_ids[chosen.positions].tolist(), *names, scores[chosen.positions].tolist(), expected_shed_kw
    )


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


def _reservation_rows(
    connection: AsyncConnection, event_id: str, record_ids: list[str], plan: ReservationPlan, request: EventIn
) -> pa.Table:
    """The event's ``reservations`` rows, in rank order, as columns (one bulk insert)."""
    count = plan.reserved_count
    reserved = plan.reserved
    return pa.table(
        {
            "record_id": pa.array(record_ids, type=pa.string()),
            "event_id": pa.repeat(pa.scalar(event_id), count),
            "device_id": pa.array([c.device_id for c in reserved], type=pa.int64()),
            "rank": pa.array(np.arange(1, count + 1, dtype=np.int64)),
            "score": pa.array([c.score for c in reserved], type=pa.float64()),
            "expected_shed_kw": pa.array([c.expected_shed_kw for c in reserved], type=pa.float64()),
            "reservation_start_at": pa.repeat(pa.scalar(db_time(connection, request.start_at)), count),
            "reservation_end_at": pa.repeat(pa.scalar(db_time(connection, request.end_at)), count),
            "status": pa.repeat(pa.scalar("RESERVED"), count),
        }
    )


async def create_event(
    engine: AsyncEngine,
    request: EventIn,
    derms_instance_id: str,
    *,
    files: ReservationFiles,
    now: datetime,
) -> dict[str, Any]:
    """Create a SCHEDULED event and reserve its devices; a shortfall is reported on the event, not raised.

    The event, its reservations and its ``event-reservation.v1`` message commit together. ``files`` says
    where a reservation list too long for a message goes (the DERMS's build() makes it from the settings).
    """
    if request.start_at <= now:
        raise Invalid(
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
            raise Invalid(
                "unknown-program",
                "Unknown program",
                f"No program has the code {request.program_code!r}. Programs are created in Asset Hub "
                "(POST /assethub/v1/programs) and reach the DERMS by program sync; check the code, or wait "
                "for the sync ('derbridge messages list --flow program-sync').",
                errors=[FieldError(field="body.program_code", message="unknown program")],
            )
        if program["status"] == DermsProgramStatus.CLOSED.value:
            raise Conflict(
                "program-closed",
                "Program closed",
                f"Program {request.program_code!r} is CLOSED: it takes no new events (those created before it "
                "closed run their course). A closed program cannot reopen; create the event in another program.",
                errors=[FieldError(field="body.program_code", message="program is CLOSED")],
            )
        if program["status"] != DermsProgramStatus.ACTIVE.value:
            raise Conflict(
                "program-not-active",
                "Program not active",
                f"Program {request.program_code!r} is {program['status']}; activate it in Asset Hub "
                f"(PATCH /assethub/v1/programs/{request.program_code} with status ACTIVE) to create events.",
                errors=[FieldError(field="body.program_code", message=f"program is {program['status']}")],
            )
        await db.lock_reservations(connection)
        plan = await _plan(connection, request.program_code, window, target, program["expected_shed_kw"])
        event_id = new_id()
        event = _event_row(event_id, derms_instance_id, request, plan, now)
        await connection.execute(t.program_events.insert(), [event])
        record_ids = new_ids(plan.reserved_count)
        held = [
            ReservedRow(record_id, c.head_end_system, c.nic_id, request.start_at, request.end_at)
            for record_id, c in zip(record_ids, plan.reserved, strict=True)
        ]
        await insert_arrow(
            connection, t.reservations, _reservation_rows(connection, event_id, record_ids, plan, request)
        )
        # The message lists what was just stored, in rank order: no need to read it back.
        await queue_reservation(connection, event_id, now, files, held)
    return event


async def cancel_event(engine: AsyncEngine, event_id: str, cancel: EventCancel, now: datetime) -> dict[str, Any]:
    """Cancel a SCHEDULED event before its start and release its reservations; 409 once it has started.

    The cancellation, the releases and the ``event-cancellation.v1`` message commit together.
    """
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
            raise Conflict("event-started", "The event has started", str(refused)) from None
        except EventNotCancellable as refused:
            raise Conflict("event-not-cancellable", "The event cannot be cancelled", str(refused)) from None
        # Conditional on the status we read: a concurrent cancellation or start makes this a no-op we detect.
        updated = await connection.execute(
            t.program_events.update()
            .where(t.program_events.c.event_id == event_id, t.program_events.c.status == event["status"])
            .values(status=status.value, cancelled_at=now, cancel_reason=cancel.reason_text)
        )
        if updated.rowcount != 1:
            raise Conflict(
                "conflict",
                "The event changed meanwhile",
                "Read the event again and retry if still needed.",
            )
        await connection.execute(
            t.reservations.update()
            .where(t.reservations.c.event_id == event_id, t.reservations.c.status == "RESERVED")
            .values(status="RELEASED", released_at=now, release_reason="event cancelled")
        )
        await queue_cancellation(connection, event_id, event["derms_instance_id"], cancel.reason_text, now)
        refreshed = (
            (await connection.execute(select(t.program_events).where(t.program_events.c.event_id == event_id)))
            .mappings()
            .one()
        )
    return dict(refreshed)


# --- the lifecycle, driven by the business clock ---------------------------------------------------------


async def advance_lifecycle(engine: AsyncEngine, now: datetime) -> int:
    """Apply the transitions the clock has made due at ``now``; returns how many events changed status.

    SCHEDULED events whose start has come become ACTIVE together in one statement. Each event whose
    ``end_at + grace`` has come is then closed in a transaction of its own (:func:`close_event`), so one
    large event does not hold the others back. Running this twice changes nothing the second time.
    """
    e, p = t.program_events, t.programs
    async with engine.begin() as connection:
        # Only events that have started can have a transition due; the domain decides which, per event
        # (a handful of live events, while their devices are handled set-based).
        live = await connection.execute(
            select(e.c.event_id, e.c.status, e.c.start_at, e.c.end_at, p.c.outcome_grace_hours)
            .join(p, p.c.program_code == e.c.program_code)
            .where(e.c.status.in_(LIVE), e.c.start_at <= now)
        )
        starting: list[str] = []
        closing: list[str] = []
        for row in live:
            steps = transitions_due(
                EventWindow(row.start_at, row.end_at), EventStatus(row.status), now, grace_of(row.outcome_grace_hours)
            )
            if EventStatus.ACTIVE in steps:
                starting.append(row.event_id)
            if EventStatus.COMPLETED in steps:
                closing.append(row.event_id)
        started = 0
        if starting:
            result = await connection.execute(
                e.update()
                .where(e.c.event_id.in_(starting), e.c.status == EventStatus.SCHEDULED.value)
                .values(status=EventStatus.ACTIVE.value)
            )
            started = result.rowcount
    closed = 0
    for event_id in closing:
        closed += await close_event(engine, event_id, now)
    if started or closed:
        log.info("event lifecycle advanced", started=started, closed=closed)
    return started + closed


async def close_event(engine: AsyncEngine, event_id: str, now: datetime) -> int:
    """Close an ACTIVE event: every device it holds without an outcome gets NON_RESPONSIVE (origin CLOSED),
    the event becomes COMPLETED at ``now``, and one ``event-outcome.v1`` message carries those outcomes
    (split only past the per-message batch size). Returns 1 if it closed the event, 0 if it was not ACTIVE.

    The caller decides that closing is due (:func:`advance_lifecycle`).
    """
    e = t.program_events
    async with engine.begin() as connection:
        # The status update comes first: it locks the event row, and outcome reports lock it too
        # (outcomes.record_outcomes), so a report is either in before the silent devices are chosen or
        # lands on the COMPLETED event afterwards and replaces the NON_RESPONSIVE.
        updated = await connection.execute(
            e.update()
            .where(e.c.event_id == event_id, e.c.status == EventStatus.ACTIVE.value)
            .values(status=EventStatus.COMPLETED.value, closed_at=now)
        )
        if updated.rowcount != 1:
            return 0
        instance = await connection.scalar(select(e.c.derms_instance_id).where(e.c.event_id == event_id))
        silent = await outcomes_db.silent_devices(connection, event_id)
        if silent:
            await outcomes_db.insert_non_responsive(connection, event_id, [row.device_id for row in silent], now)
            await queue_outcomes(
                connection,
                event_id,
                str(instance),
                [
                    DeviceOutcome(
                        head_end_system=row.head_end_system, nic_id=row.nic_id, outcome=Outcome.NON_RESPONSIVE
                    )
                    for row in silent
                ],
                now,
            )
    log.info("event closed", event_id=event_id, non_responsive=len(silent))
    return 1
