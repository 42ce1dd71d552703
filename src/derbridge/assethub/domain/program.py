"""Programs: a demand-response offering, its enrollment window, and its per-program rule settings.

Every constant of the scoring model (shared/design/scoring.md) and of the enrollment device-setup step
(flows.md F2) is a per-program setting; :class:`ProgramRules` holds them with their documented defaults.
It is a pydantic model because it is stored as JSON and edited through the API; it does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ProgramStatus(StrEnum):
    """Where a program is in its life."""

    DRAFT = "DRAFT"
    """Being set up: not open for enrollment, not scored, no events."""
    ACTIVE = "ACTIVE"
    """Running: enrolls inside its window, is scored and may have events."""
    SUSPENDED = "SUSPENDED"
    """Paused by the utility: no new enrollments, no scores, no events; enrollments are kept."""
    CLOSED = "CLOSED"
    """Over for good: kept for history."""


class DeviceType(StrEnum):
    """Kinds of controllable device. v1 programs enroll thermostats; the others are known so that a
    request for them is refused with DEVICE_TYPE_NOT_ELIGIBLE rather than as malformed."""

    THERMOSTAT = "THERMOSTAT"
    BATTERY = "BATTERY"
    EV_CHARGER = "EV_CHARGER"
    WATER_HEATER = "WATER_HEATER"


class OutcomeValues(BaseModel):
    """How much each outcome says about a device's reliability (scoring.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    successful_participation: float = Field(1.0, ge=0, le=1)
    in_flight_override: float = Field(0.3, ge=0, le=1)
    preemptive_opt_out: float = Field(0.2, ge=0, le=1)
    error: float = Field(0.5, ge=0, le=1)
    non_responsive: float = Field(0.0, ge=0, le=1)


class ProgramRules(BaseModel):
    """Per-program settings of scoring, eligibility, the setup step and reservations, with defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # reliability r: exponentially weighted mean of outcome values with a prior
    reliability_half_life_events: float = Field(5.0, gt=0)
    reliability_prior: float = Field(0.7, ge=0, le=1)
    reliability_prior_weight: float = Field(2.0, ge=0)
    outcome_values: OutcomeValues = Field(default_factory=OutcomeValues)
    # connectivity c: 1 when seen within the first bound, falling linearly to 0 at the second
    connectivity_full_hours: float = Field(24.0, ge=0)
    connectivity_zero_hours: float = Field(168.0, gt=0)
    # fatigue f: per event called in the window, capped
    fatigue_per_event: float = Field(0.1, ge=0, le=1)
    fatigue_window_days: float = Field(7.0, gt=0)
    fatigue_cap: float = Field(0.5, ge=0, lt=1)
    # weights of the score
    reliability_weight: float = Field(0.75, ge=0, le=1)
    connectivity_weight: float = Field(0.25, ge=0, le=1)
    # eligibility
    offline_after_hours: float = Field(168.0, gt=0)
    chronic_opt_out_count: int = Field(3, ge=1)
    chronic_opt_out_window: int = Field(5, ge=1)
    non_responsive_streak: int = Field(3, ge=1)
    # enrollment device-setup step (F2)
    status_freshness_hours: float = Field(24.0, gt=0)
    status_check_timeout_minutes: float = Field(10.0, gt=0)
    setup_recheck_period_hours: float = Field(72.0, gt=0)
    # reservations (F5) and event closing (F7): sent to the DERMS by program sync
    expected_shed_kw: float = Field(1.0, gt=0, le=1000)
    outcome_grace_hours: float = Field(24.0, ge=0, le=24 * 14)


@dataclass(frozen=True, slots=True)
class Program:
    """A demand-response program as Asset Hub holds it."""

    program_code: str
    name: str
    status: ProgramStatus
    enrollment_opens_at: datetime | None
    enrollment_closes_at: datetime | None
    eligible_device_types: frozenset[DeviceType]
    excluded_program_codes: frozenset[str]
    """Programs whose active enrollment of a device bars the device from this one."""
    rules: ProgramRules

    def is_open_for_enrollment(self, at: datetime) -> bool:
        """True when the program is ACTIVE and ``at`` falls inside its enrollment window (ends open)."""
        if self.status is not ProgramStatus.ACTIVE:
            return False
        if self.enrollment_opens_at is not None and at < self.enrollment_opens_at:
            return False
        return not (self.enrollment_closes_at is not None and at >= self.enrollment_closes_at)


PROGRAM_TRANSITIONS: dict[ProgramStatus, frozenset[ProgramStatus]] = {
    ProgramStatus.DRAFT: frozenset({ProgramStatus.ACTIVE, ProgramStatus.CLOSED}),
    ProgramStatus.ACTIVE: frozenset({ProgramStatus.SUSPENDED, ProgramStatus.CLOSED}),
    ProgramStatus.SUSPENDED: frozenset({ProgramStatus.ACTIVE, ProgramStatus.CLOSED}),
    ProgramStatus.CLOSED: frozenset(),
}
"""Which status a program may move to from each status. CLOSED is final: history refers to it."""


class IllegalProgramChange(ValueError):
    """A change to a program that its rules forbid."""


def check_program_status_change(current: ProgramStatus, new: ProgramStatus) -> None:
    """Refuse a status change the lifecycle does not allow (staying put is always allowed)."""
    if new is current or new in PROGRAM_TRANSITIONS[current]:
        return
    allowed = ", ".join(sorted(s.value for s in PROGRAM_TRANSITIONS[current])) or "none (final)"
    raise IllegalProgramChange(f"a {current.value} program cannot become {new.value}; allowed: {allowed}")


def check_enrollment_window(opens_at: datetime | None, closes_at: datetime | None) -> None:
    """Refuse a window that closes before (or when) it opens."""
    if opens_at is not None and closes_at is not None and closes_at <= opens_at:
        raise IllegalProgramChange("enrollment_closes_at must be after enrollment_opens_at")
