"""F7 · event-outcome (DERMS → Asset Hub): per-device outcomes, in batches."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from derbridge.contracts.common import Contract, HeadEnd, Id

TYPE = "event-outcome.v1"
ACK_TYPE = "event-outcome-ack.v1"


class Outcome(StrEnum):
    """What a reserved device did. (mapping: D1SP, D1IO, D1ND, D1ER, D1CN)"""

    SUCCESSFUL_PARTICIPATION = "SUCCESSFUL_PARTICIPATION"
    IN_FLIGHT_OVERRIDE = "IN_FLIGHT_OVERRIDE"
    NON_RESPONSIVE = "NON_RESPONSIVE"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


class DeviceOutcome(Contract):
    head_end_system: HeadEnd
    nic_id: Id
    outcome: Outcome
    preemptive_opt_out: bool = Field(False, description="(mapping: D1YS / D1NO)")
    participation_start_at: AwareDatetime | None = None
    participation_end_at: AwareDatetime | None = None
    shed_kw: float | None = Field(None, ge=0, le=1000)
    error_message: str | None = Field(None, max_length=2000)


class EventOutcomeBatch(Contract):
    """F7 payload."""

    event_id: Id
    outcomes: list[DeviceOutcome] = Field(min_length=1, max_length=100_000)
