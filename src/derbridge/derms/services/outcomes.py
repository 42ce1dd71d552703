"""Per-device event outcomes in the DERMS (F7): what the edge reports after an event, stored and forwarded.

The edge normalises the aggregators' reports and hands the DERMS a batch of per-device outcomes
(:func:`record_outcomes`). The DERMS stores them, one row per event and device — a later report replaces
the earlier one (origin REPORTED) — and writes them to Asset Hub as ``event-outcome.v1`` messages, in the
same transaction. Which reports an event takes is :mod:`derbridge.derms.domain.outcome`; the statements are
:mod:`derbridge.derms.adapters.outcomes`. The silent devices of an event are given NON_RESPONSIVE when it closes
(:func:`derbridge.derms.services.events.close_event`, run by the ``event-lifecycle`` job).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.event_outcome import DeviceOutcome
from derbridge.derms.adapters import outcomes as db
from derbridge.derms.domain.event import EventStatus, EventWindow, grace_of, status_at
from derbridge.derms.domain.outcome import OutcomesRefusal, outcomes_refusal, repeated_positions
from derbridge.derms.services.event_messages import queue_outcomes
from derbridge.errors import Conflict, FieldError, Invalid, not_found

log = structlog.get_logger("derbridge.derms.outcomes")

MAX_OUTCOMES_PER_REPORT = 100_000
"""The largest batch one report may carry (the contract's limit)."""

MAX_NAMED_ERRORS = 50
"""A refused report names at most this many offending devices in ``errors`` (the detail gives the count)."""


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
    repeated = repeated_positions((o.head_end_system, o.nic_id) for o in outcomes)
    if repeated:
        raise Invalid(
            "duplicate-devices",
            "A device is reported twice",
            f"{len(repeated)} outcome(s) repeat a device reported earlier in the same batch; send one outcome "
            "per device (a later report replaces an earlier one).",
            errors=_device_errors(repeated, outcomes, "appears earlier in this batch"),
        )


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
    # Locked: this is ordered against the event's closing and against other reports of the same event.
    event = await db.event_for_update(connection, event_id)
    if event is None:
        raise not_found("event", event_id)
    status = status_at(
        EventWindow(event.start_at, event.end_at),
        EventStatus(event.status),
        now,
        grace_of(event.outcome_grace_hours),
    )
    refusal = outcomes_refusal(status)
    if refusal is OutcomesRefusal.CANCELLED:
        raise Conflict(
            "event-cancelled",
            "The event was cancelled",
            f"Event {event_id} was cancelled before it started: its devices have no outcome to report.",
        )
    if refusal is OutcomesRefusal.NOT_STARTED:
        raise Conflict(
            "event-not-started",
            "The event has not started",
            f"Event {event_id} starts at {event.start_at.isoformat()}; report outcomes once it has run.",
        )
    reserved = await db.reserved_among(connection, event_id, outcomes)
    strangers = [i for i, x in enumerate(outcomes) if (x.head_end_system, x.nic_id) not in reserved]
    if strangers:
        raise Invalid(
            "devices-not-reserved",
            "Devices not reserved for the event",
            f"{len(strangers)} of the {len(outcomes)} devices reported were not reserved for event {event_id}; "
            "nothing was stored. Remove them and send the report again.",
            errors=_device_errors(strangers, outcomes, "is not reserved for this event"),
        )
    await db.store_outcomes(connection, event_id, reserved, outcomes, now)
    messages = await queue_outcomes(connection, event_id, event.derms_instance_id, outcomes, now)
    log.info("event outcomes recorded", event_id=event_id, outcomes=len(outcomes), messages=messages)
    return OutcomesRecorded(event_id, status, len(outcomes), messages)
