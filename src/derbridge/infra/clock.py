"""The business clock: what "now" is for the rules that depend on time.

Timeouts, freshness windows, event starts and ends, and closing graces read the clock each system is built
with (``build(..., clock=...)`` in the system's composition root, never a module global): in production the
wall clock; the demo and the flow tests pass a :class:`SimulatedClock` to run a summer of events in seconds.
Infrastructure timing (retries, leases, logs) always uses the wall clock (``infra.db.utcnow``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """A source of the current time (timezone-aware UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class SimulatedClock:
    """A clock that moves only when told to (the demo, and tests of time-driven rules)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a simulated clock starts at an aware time")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta`` (never backwards) and return the new time."""
        if delta < timedelta(0):
            raise ValueError("time does not go backwards")
        self._now += delta
        return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (not before the current time)."""
        moment = moment.astimezone(UTC)
        if moment < self._now:
            raise ValueError("time does not go backwards")
        self._now = moment
