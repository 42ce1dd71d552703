"""F7 · the rules of a per-device outcome report (pure): which reports an event takes, and which devices a
report names twice.

Outcomes are accepted while the event is ACTIVE and after it is COMPLETED (an aggregator's late report
replaces the NON_RESPONSIVE the closing gave its device); an event CANCELLED before it started has none to
report, and one not started yet (SCHEDULED by the clock) has none yet. A report names each device once.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import StrEnum

from derbridge.derms.domain.event import EventStatus


class OutcomesRefusal(StrEnum):
    """Why an event takes no outcome report now."""

    CANCELLED = "CANCELLED"
    """The event was cancelled before it started."""
    NOT_STARTED = "NOT_STARTED"
    """The event has not started yet."""


def outcomes_refusal(status: EventStatus) -> OutcomesRefusal | None:
    """Why an event whose status (by the clock, :func:`~derbridge.derms.domain.event.status_at`) is
    ``status`` refuses outcomes; None when it takes them (ACTIVE or COMPLETED)."""
    if status is EventStatus.CANCELLED:
        return OutcomesRefusal.CANCELLED
    if status is EventStatus.SCHEDULED:
        return OutcomesRefusal.NOT_STARTED
    return None


def repeated_positions(keys: Iterable[Hashable]) -> list[int]:
    """The positions of the keys (a report's ``(head_end_system, nic_id)``) that appeared earlier."""
    seen: set[Hashable] = set()
    repeated: list[int] = []
    for i, key in enumerate(keys):
        if key in seen:
            repeated.append(i)
        seen.add(key)
    return repeated
