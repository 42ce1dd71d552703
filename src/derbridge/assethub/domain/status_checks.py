"""F2 · the rules of the device-setup step (pure): when a status check's answer confirms a device, when a
device in setup is checked again, and when the setup period is over.

A device is *confirmed* by a setup check answered on time ONLINE with a ``last_communication_at`` within
the program's ``status_freshness_hours`` of the answer (:func:`confirms_online`). Any other answer, or a
timeout, plans a re-check with backoff — 5 min after the device's first failed check, doubling, at most
6 h (:func:`recheck_delay`), never past the end of the setup period (:func:`setup_deadline`,
``setup_started_at + setup_recheck_period_hours``); a failure at or after the end of the period fails the
setup (:func:`next_setup_check` returns None). The service :mod:`derbridge.assethub.services.status_checks`
reads the facts and applies these decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from derbridge.assethub.domain.enrollment import DeviceRef
from derbridge.assethub.domain.program import ProgramRules
from derbridge.contracts.device_status_check import CommunicationStatus

FIRST_RECHECK = timedelta(minutes=5)
"""Delay of the re-check after a device's first failed setup check; it doubles with each failure."""
MAX_RECHECK = timedelta(hours=6)
"""The longest delay between two setup checks of a device."""


class CheckStatus(StrEnum):
    """Where a status check is."""

    OPEN = "OPEN"
    """Sent; no answer yet, and its timeout has not passed."""
    ANSWERED = "ANSWERED"
    """The DERMS answered in time."""
    TIMED_OUT = "TIMED_OUT"
    """No answer in time. A late answer is still recorded (``late_answer``) but decides nothing."""


def recheck_delay(failed_checks: int) -> timedelta:
    """How long to wait before checking a device again after its ``failed_checks``-th failed setup check
    (1 → 5 min, 2 → 10 min, 3 → 20 min …, at most 6 h)."""
    if failed_checks < 1:
        raise ValueError("a re-check follows at least one failed check")
    # Past 2**7 the cap has long been reached; stopping the doubling there keeps the number small.
    delay: timedelta = FIRST_RECHECK * 2 ** min(failed_checks - 1, 7)
    return min(delay, MAX_RECHECK)


def setup_deadline(setup_started_at: datetime, rules: ProgramRules) -> datetime:
    """When the setup period of an enrollment ends: no re-check is scheduled after it."""
    return setup_started_at + timedelta(hours=rules.setup_recheck_period_hours)


def next_setup_check(
    setup_started_at: datetime, failed_checks: int, rules: ProgramRules, now: datetime
) -> datetime | None:
    """When to check again after a failed setup check at ``now``; None when the setup period is over (the
    enrollment has failed its setup). The last re-check falls on the end of the period."""
    deadline = setup_deadline(setup_started_at, rules)
    if now >= deadline:
        return None
    return min(now + recheck_delay(failed_checks), deadline)


def confirms_online(
    communication_status: str | None, last_communication_at: datetime | None, answered_at: datetime, rules: ProgramRules
) -> bool:
    """True when an answer shows the device ONLINE within the program's freshness window of the answer."""
    return (
        communication_status == CommunicationStatus.ONLINE.value
        and last_communication_at is not None
        and last_communication_at >= answered_at - timedelta(hours=rules.status_freshness_hours)
    )


def why_not_confirmed(
    communication_status: str | None, last_communication_at: datetime | None, detail: str | None, rules: ProgramRules
) -> str:
    """What an answer that does not confirm the device says, for a transition reason."""
    seen = last_communication_at.isoformat() if last_communication_at is not None else "never"
    if communication_status == CommunicationStatus.ONLINE.value:
        return f"last seen online at {seen}, more than {rules.status_freshness_hours:g} h before the answer"
    if communication_status == CommunicationStatus.OFFLINE.value:
        return f"the DERMS reports it OFFLINE (last communication: {seen})"
    return "the DERMS has no status for it" + (f" ({detail})" if detail else "")


@dataclass
class EnrollmentSetup:
    """What the setup decisions need to know about one enrollment: its state, its program's rules, its
    active devices and its setup checks (read set-based by the service)."""

    enrollment_id: str
    state: str
    setup_started_at: datetime | None
    next_check_at: datetime | None
    rules: ProgramRules
    devices: dict[int, DeviceRef] = field(default_factory=dict)
    """The enrollment's active (not replaced) devices."""
    checks: list[Any] = field(default_factory=list)
    """Its ENROLLMENT_SETUP checks."""

    def confirmed(self, device_id: int) -> bool:
        """Whether a setup check of ``device_id`` was answered on time showing it online and fresh."""
        return any(
            c.device_id == device_id
            and c.status == CheckStatus.ANSWERED.value
            and c.answered_at is not None
            and confirms_online(c.communication_status, c.last_communication_at, c.answered_at, self.rules)
            for c in self.checks
        )

    def being_checked(self, device_id: int) -> bool:
        """Whether a setup check of ``device_id`` is still OPEN."""
        return any(c.device_id == device_id and c.status == CheckStatus.OPEN.value for c in self.checks)

    def failed_checks(self, device_id: int) -> int:
        """How many setup checks of ``device_id`` are over (answered or timed out): the re-check backoff's
        count."""
        return sum(1 for c in self.checks if c.device_id == device_id and c.status != CheckStatus.OPEN.value)
