"""The request and response bodies of the DERMS API (``/derms/v1``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from derbridge.cis.extract import AccountStatus
from derbridge.contracts.device_status_check import CommunicationStatus as CommunicationStatus
from derbridge.derms.domain.event import EventStatus, EventType
from derbridge.derms.domain.program import DermsProgramStatus
from derbridge.derms.services.models import CommunicationReport as CommunicationReport
from derbridge.derms.services.models import CommunicationStatusIn as CommunicationStatusIn
from derbridge.derms.services.models import EventCancel as EventCancel
from derbridge.derms.services.models import EventIn as EventIn
from derbridge.derms.services.models import HeadEnd as HeadEnd
from derbridge.derms.services.models import NicId as NicId
from derbridge.derms.services.models import ProgramCode as ProgramCode


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Contact(_Out):
    """A CIS person as the DERMS knows them."""

    cis_person_id: str
    name: str
    email: str | None
    home_phone: str | None
    business_phone: str | None
    updated_at: datetime


class Customer(_Out):
    """A CIS account as the DERMS knows it."""

    cis_account_id: str
    cis_person_id: str
    status: AccountStatus
    updated_at: datetime


class Location(_Out):
    """A CIS service point with its premise address: where devices are."""

    cis_service_point_id: str
    cis_premise_id: str
    cis_account_id: str
    division: str
    address1: str
    address2: str | None
    address3: str | None
    address4: str | None
    city: str
    county: str | None
    state: str
    postal: str
    country: str
    time_zone: str
    latitude: float | None
    longitude: float | None
    updated_at: datetime


class Program(_Out):
    """A program in the DERMS: Asset Hub's program as program sync last applied it (read-only here)."""

    program_code: str
    name: str
    status: DermsProgramStatus
    expected_shed_kw: float = Field(description="Expected shed per device, for kW targets.")
    outcome_grace_hours: float = Field(
        description="Hours after an event's end that outcomes are awaited before silent devices are NON_RESPONSIVE."
    )
    version: int = Field(description="The program's version in Asset Hub that was applied here (0: before sync).")
    created_at: datetime
    updated_at: datetime


class Availability(_Out):
    """A device's availability in one program, from enrollment sync."""

    program_code: str
    enrollment_id: str
    cis_account_id: str
    cis_service_point_id: str
    availability: str
    sequence: int
    updated_at: datetime


class CommunicationReportBatch(BaseModel):
    """Many devices' communication status at once (an aggregator's heartbeat round)."""

    model_config = ConfigDict(extra="forbid")

    reports: list[CommunicationReport] = Field(min_length=1, max_length=100_000)


class RecordedCount(BaseModel):
    """How many items were recorded."""

    recorded: int


class CommunicationStatusOut(_Out):
    """A device's latest communication status."""

    head_end_system: str
    nic_id: str
    communication_status: CommunicationStatus
    last_communication_at: datetime
    operating_state: str | None
    source: str
    updated_at: datetime


class Device(_Out):
    """A device the DERMS may dispatch, with its availability per program and latest status."""

    device_id: int
    head_end_system: str
    nic_id: str
    device_type: str
    manufacturer: str
    model: str
    created_at: datetime
    availability: list[Availability] = Field(default_factory=list)
    communication: CommunicationStatusOut | None = None


class ProgramEvent(_Out):
    """A program event with its reservation figures: asked for, candidates, reserved, shortfall."""

    event_id: str
    derms_instance_id: str
    program_code: str
    event_type: EventType
    start_at: datetime
    end_at: datetime
    status: EventStatus
    target_devices: int | None
    target_kw: float | None
    candidate_count: int
    reserved_count: int
    reserved_kw: float
    shortfall_devices: int
    shortfall_kw: float
    created_at: datetime
    created_by: str
    cancelled_at: datetime | None
    cancel_reason: str | None
    closed_at: datetime | None


class EventCounts(BaseModel):
    """How many of an event's reservations are in each status, and of its outcomes have each outcome."""

    reservations: dict[str, int]
    outcomes: dict[str, int]


class Reservation(_Out):
    """A device reserved for an event."""

    record_id: str
    event_id: str
    device_id: int
    rank: int
    score: float
    expected_shed_kw: float
    reservation_start_at: datetime
    reservation_end_at: datetime
    status: str
    released_at: datetime | None
    release_reason: str | None


class Outcome(_Out):
    """What a reserved device did in an event."""

    event_id: str
    device_id: int
    outcome: str
    preemptive_opt_out: bool
    participation_start_at: datetime | None
    participation_end_at: datetime | None
    shed_kw: float | None
    error_message: str | None
    origin: str
    reported_at: datetime


class ScoreSnapshot(_Out):
    """A loaded score file."""

    file_id: str
    generated_at: datetime
    scoring_model_version: str
    row_count: int
    unknown_devices: int
    loaded_at: datetime
    is_current: bool
