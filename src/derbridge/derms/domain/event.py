"""Program events: their type, target, window, and the lifecycle the DERMS drives them through.

The lifecycle (flows.md F5, F6, F7)::

    SCHEDULED ──(clock reaches start_at)──────────────► ACTIVE ──(clock reaches end_at + grace)──► COMPLETED
        │
        └──(operator cancels, strictly before start_at)──► CANCELLED

COMPLETED and CANCELLED are terminal. Between ``end_at`` and ``end_at + grace`` an event stays ACTIVE: the
devices no longer shed, but the event is still open for the aggregators' outcome reports. At
``end_at + grace`` the DERMS *closes* it: every reserved device without an outcome gets NON_RESPONSIVE and
the event becomes COMPLETED.

Windows are half-open intervals ``[start_at, end_at)``: an event starts at ``start_at`` exactly, and two
events of which one ends when the other starts do not overlap.

Every function here is pure: the caller passes the clock (``now``) in, so the rules can be tested at any
instant, including exactly on a boundary. Datetimes must be timezone-aware (the contracts carry UTC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

DEFAULT_CLOSING_GRACE: Final[timedelta] = timedelta(hours=24)
"""How long after ``end_at`` an event stays open for outcome reports before it is closed (flows.md F7)."""


class EventType(StrEnum):
    """Why a program event is called."""

    ECONOMIC = "ECONOMIC"
    """Called for price or market reasons; customers expect these and may opt out."""
    EMERGENCY = "EMERGENCY"
    """Called to protect the grid (capacity shortfall, contingency)."""
    DEVICE_TEST = "DEVICE_TEST"
    """Called to check that devices respond to dispatch, not to shed load for the grid."""


class EventStatus(StrEnum):
    """Where a program event is in its lifecycle."""

    SCHEDULED = "SCHEDULED"
    """Created with its reservations, not yet started: the only status in which it may be cancelled."""
    ACTIVE = "ACTIVE"
    """Started (the clock reached ``start_at``) and not yet closed: dispatched, then open for outcome
    reports until ``end_at + grace``."""
    COMPLETED = "COMPLETED"
    """Closed at ``end_at + grace``: silent devices were given NON_RESPONSIVE. Terminal."""
    CANCELLED = "CANCELLED"
    """Cancelled by an operator before ``start_at``; its reservations were released. Terminal."""


TERMINAL_STATUSES: Final[frozenset[EventStatus]] = frozenset({EventStatus.COMPLETED, EventStatus.CANCELLED})
"""Statuses an event never leaves."""

LIVE_STATUSES: Final[tuple[EventStatus, ...]] = (EventStatus.SCHEDULED, EventStatus.ACTIVE)
"""Statuses in which an event's reservations still hold (a cancelled event's are released already, a
completed one's are history): the events a device's availability and new reservations are checked against."""

_ALLOWED_TRANSITIONS: Final[frozenset[tuple[EventStatus, EventStatus]]] = frozenset(
    {
        (EventStatus.SCHEDULED, EventStatus.ACTIVE),
        (EventStatus.ACTIVE, EventStatus.COMPLETED),
        (EventStatus.SCHEDULED, EventStatus.CANCELLED),
    }
)


class EventLifecycleError(Exception):
    """Base of the errors raised when an event's lifecycle refuses an operation (HTTP 409 at the API)."""


class IllegalEventTransition(EventLifecycleError):
    """A change of status that the lifecycle does not allow (see :func:`can_transition`)."""

    def __init__(self, current: EventStatus, requested: EventStatus) -> None:
        self.current = current
        self.requested = requested
        super().__init__(f"an event cannot go from {current.value} to {requested.value}")


class CancellationRefusal(StrEnum):
    """Why a cancellation was refused."""

    STARTED = "STARTED"
    """The event has started: it is ACTIVE, or still SCHEDULED on record but the clock reached start_at."""
    ALREADY_CANCELLED = "ALREADY_CANCELLED"
    """The event was cancelled before; a second cancellation has nothing to do."""
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    """The event ran and was closed."""


class EventNotCancellable(EventLifecycleError):
    """A cancellation the lifecycle refuses; ``reason`` says why. Nothing was changed.

    Catch this class to handle every refusal (the API answers 409 with a problem detail); its subclass
    :class:`EventAlreadyStarted` is the common case, an event that has started.
    """

    def __init__(self, reason: CancellationRefusal, status: EventStatus, start_at: datetime) -> None:
        self.reason = reason
        self.status = status
        self.start_at = start_at
        super().__init__(self._message())

    def _message(self) -> str:
        started = self.start_at.isoformat()
        if self.reason is CancellationRefusal.ALREADY_CANCELLED:
            return "the event is already cancelled and cannot be cancelled again"
        if self.reason is CancellationRefusal.ALREADY_COMPLETED:
            return f"the event started at {started} and is completed: it can no longer be cancelled"
        return f"the event started at {started} and can no longer be cancelled"


class EventAlreadyStarted(EventNotCancellable):
    """A cancellation refused because the event has started (its status is ACTIVE, or the clock reached
    ``start_at`` while it was still SCHEDULED on record)."""

    def __init__(self, status: EventStatus, start_at: datetime) -> None:
        super().__init__(CancellationRefusal.STARTED, status, start_at)


def _require_aware(name: str, value: datetime) -> None:
    # Comparing naive and aware datetimes raises a bare TypeError far from the cause; say what is wrong.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")


def _require_grace(grace: timedelta) -> None:
    if grace < timedelta(0):
        raise ValueError(f"the closing grace must not be negative, got {grace}")


@dataclass(frozen=True, slots=True)
class EventTarget:
    """What an event asks for: a number of devices, or a kW amount — exactly one of the two.

    Build it with :meth:`devices` or :meth:`kilowatts`. With a kW target, devices are taken in rank order
    until their summed expected shed reaches the amount (see :mod:`derbridge.derms.domain.reservation`).
    """

    device_count: int | None = None
    """How many devices to reserve; ``None`` for a kW target."""
    kw: float | None = None
    """How many kW of expected shed to reserve; ``None`` for a device-count target."""

    def __post_init__(self) -> None:
        if (self.device_count is None) == (self.kw is None):
            raise ValueError("an event target is either a device count or a kW amount, exactly one of them")
        if self.device_count is not None:
            # bool is an int subclass: True would silently mean "one device".
            if isinstance(self.device_count, bool) or not isinstance(self.device_count, int):
                raise TypeError(f"device_count must be an int, got {self.device_count!r}")
            if self.device_count <= 0:
                raise ValueError(f"device_count must be greater than 0, got {self.device_count}")
        if self.kw is not None:
            if isinstance(self.kw, bool) or not isinstance(self.kw, int | float):
                raise TypeError(f"kw must be a number, got {self.kw!r}")
            if not math.isfinite(self.kw) or self.kw <= 0:
                raise ValueError(f"kw must be a finite amount greater than 0, got {self.kw}")
            # An int amount (``kilowatts(500)``) is stored as float so that the field has one type.
            object.__setattr__(self, "kw", float(self.kw))

    @classmethod
    def devices(cls, count: int) -> EventTarget:
        """A target of ``count`` devices (``count > 0``)."""
        return cls(device_count=count)

    @classmethod
    def kilowatts(cls, kw: float) -> EventTarget:
        """A target of ``kw`` kilowatts of expected shed (finite, ``kw > 0``)."""
        return cls(kw=kw)


@dataclass(frozen=True, slots=True)
class EventWindow:
    """When an event sheds load: the half-open interval ``[start_at, end_at)``, timezone-aware.

    A maximum duration is a program rule, checked where the program is known, not here.
    """

    start_at: datetime
    end_at: datetime

    def __post_init__(self) -> None:
        _require_aware("start_at", self.start_at)
        _require_aware("end_at", self.end_at)
        if self.end_at <= self.start_at:
            raise ValueError(
                f"an event must end after it starts: start_at={self.start_at.isoformat()}, "
                f"end_at={self.end_at.isoformat()}"
            )

    @property
    def duration(self) -> timedelta:
        """How long the event sheds load."""
        return self.end_at - self.start_at

    def closes_at(self, grace: timedelta = DEFAULT_CLOSING_GRACE) -> datetime:
        """When the event is closed: ``end_at + grace``."""
        _require_grace(grace)
        return self.end_at + grace


def grace_of(outcome_grace_hours: float) -> timedelta:
    """A program's closing grace (``programs.outcome_grace_hours``) as a duration."""
    return timedelta(hours=outcome_grace_hours)


def can_transition(current: EventStatus, requested: EventStatus) -> bool:
    """True when the lifecycle allows going from ``current`` to ``requested`` in one step.

    The allowed steps are SCHEDULED→ACTIVE, ACTIVE→COMPLETED and SCHEDULED→CANCELLED; staying in the same
    status is not a transition.
    """
    return (current, requested) in _ALLOWED_TRANSITIONS


def require_transition(current: EventStatus, requested: EventStatus) -> None:
    """Raise :class:`IllegalEventTransition` unless :func:`can_transition` allows the step."""
    if not can_transition(current, requested):
        raise IllegalEventTransition(current, requested)


def windows_overlap(a: EventWindow, b: EventWindow) -> bool:
    """True when the two half-open windows share an instant; windows that only touch do not overlap."""
    return a.start_at < b.end_at and b.start_at < a.end_at


def closing_due(window: EventWindow, now: datetime, grace: timedelta = DEFAULT_CLOSING_GRACE) -> bool:
    """True from ``end_at + grace`` on (inclusive): the time to close the event has come.

    This looks at the clock only; a CANCELLED or already COMPLETED event is never closed — use
    :func:`status_at` or :func:`transitions_due`, which know that.
    """
    _require_aware("now", now)
    return now >= window.closes_at(grace)


def transitions_due(
    window: EventWindow,
    current: EventStatus,
    now: datetime,
    grace: timedelta = DEFAULT_CLOSING_GRACE,
) -> tuple[EventStatus, ...]:
    """The statuses the clock moves the event through at ``now``, in order; empty when nothing is due.

    Each step is a legal single transition. An event still SCHEDULED when the clock is already past its
    closing time (the scheduler was down during the whole window) gets both steps, ``(ACTIVE, COMPLETED)``,
    so that the service runs the side effects of starting and then of closing, as if it had been on time.
    """
    _require_aware("now", now)
    _require_grace(grace)
    if current in TERMINAL_STATUSES:
        return ()
    steps: list[EventStatus] = []
    status = current
    if status is EventStatus.SCHEDULED and now >= window.start_at:
        status = EventStatus.ACTIVE
        steps.append(status)
    if status is EventStatus.ACTIVE and now >= window.closes_at(grace):
        status = EventStatus.COMPLETED
        steps.append(status)
    return tuple(steps)


def status_at(
    window: EventWindow,
    current: EventStatus,
    now: datetime,
    grace: timedelta = DEFAULT_CLOSING_GRACE,
) -> EventStatus:
    """The status an event recorded as ``current`` has at ``now`` once the clock's transitions are applied.

    - CANCELLED and COMPLETED are terminal: returned unchanged whatever the clock says.
    - SCHEDULED becomes ACTIVE at ``start_at`` (inclusive).
    - ACTIVE becomes COMPLETED at ``end_at + grace`` (inclusive).
    - A SCHEDULED event whose closing time has passed becomes COMPLETED, through ACTIVE: the same result as
      two runs of the scheduler, one during the window and one after it (see :func:`transitions_due`).
    - The status never goes backwards: an ACTIVE event asked about a time before ``start_at`` stays ACTIVE.
    """
    steps = transitions_due(window, current, now, grace)
    return steps[-1] if steps else current


def plan_cancellation(window: EventWindow, current: EventStatus, now: datetime) -> EventStatus:
    """Check that an operator may cancel the event at ``now`` and return the new status, CANCELLED.

    Allowed only for a SCHEDULED event strictly before ``start_at``. Refusals change nothing and raise:

    - :class:`EventNotCancellable` with reason ALREADY_CANCELLED or ALREADY_COMPLETED for a terminal event
      (whatever the clock says: the record decides);
    - :class:`EventAlreadyStarted` (reason STARTED) for an ACTIVE event, or a SCHEDULED one when ``now`` is
      at or after ``start_at`` — the scheduler may not have marked it ACTIVE yet, but it has started.

    A repeated cancellation is refused rather than silently accepted so that an operator learns the event
    was already cancelled; a service that wants a repeat to be a no-op catches ALREADY_CANCELLED.
    """
    _require_aware("now", now)
    if current is EventStatus.CANCELLED:
        raise EventNotCancellable(CancellationRefusal.ALREADY_CANCELLED, current, window.start_at)
    if current is EventStatus.COMPLETED:
        raise EventNotCancellable(CancellationRefusal.ALREADY_COMPLETED, current, window.start_at)
    if current is not EventStatus.SCHEDULED or now >= window.start_at:
        raise EventAlreadyStarted(current, window.start_at)
    return EventStatus.CANCELLED
