"""The request and response bodies of Asset Hub's API (``/assethub/v1``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from derbridge.assethub.domain.program import DeviceType, ProgramRules, ProgramStatus
from derbridge.assethub.services.models import ProgramCode as ProgramCode
from derbridge.assethub.services.models import ProgramIn as ProgramIn
from derbridge.assethub.services.models import ProgramPatch as ProgramPatch
from derbridge.cis.extract import AccountStatus
from derbridge.contracts.enrollment_sync import SyncChange


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Person(_Out):
    """A CIS person (customer)."""

    cis_person_id: str
    name: str
    email: str | None
    home_phone: str | None
    business_phone: str | None
    updated_at: datetime


class ServicePoint(_Out):
    """A CIS service point (meter) at a premise."""

    cis_service_point_id: str
    cis_premise_id: str
    updated_at: datetime


class Premise(_Out):
    """A CIS premise and the account that serves it."""

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
    service_points: list[ServicePoint] = Field(default_factory=list)


class Account(_Out):
    """A CIS account, its holder, and the premises it serves."""

    cis_account_id: str
    cis_person_id: str
    status: AccountStatus
    updated_at: datetime
    premises: list[Premise] = Field(default_factory=list)


class Program(_Out):
    """A demand-response program."""

    program_code: str
    name: str
    status: ProgramStatus
    enrollment_opens_at: datetime | None
    enrollment_closes_at: datetime | None
    eligible_device_types: list[DeviceType]
    excluded_program_codes: list[str]
    rules: ProgramRules
    created_at: datetime
    updated_at: datetime
    version: int = Field(description="One more at each change; the version last sent to the DERMS (program sync).")
    sync_state: str | None = Field(
        description="What the DERMS made of this version: SENT (not answered yet), APPLIED, STALE or FAILED."
    )
    sync_detail: str | None = Field(description="The DERMS's detail for this version.")


class Device(_Out):
    """A controllable device, identified in messages by (head_end_system, nic_id)."""

    device_id: int
    head_end_system: str
    nic_id: str
    device_type: str
    manufacturer: str
    model: str
    serial_no: str
    badge_no: str | None
    created_at: datetime


class EnrollmentDevice(_Out):
    """A device of an enrollment; ``removed_at`` is set when it was replaced."""

    device_id: int
    head_end_system: str
    nic_id: str
    sequence: int
    added_at: datetime
    removed_at: datetime | None


class DeviceEnrollment(_Out):
    """An enrollment that holds or held a device; ``removed_at`` is set when the device was replaced."""

    enrollment_id: str
    program_code: str
    cis_account_id: str
    state: str
    sequence: int
    added_at: datetime
    removed_at: datetime | None


class EnrollmentTransition(_Out):
    """One kept, timestamped step of an enrollment's lifecycle."""

    from_state: str | None
    to_state: str
    at: datetime
    reason: str | None


class Rejection(BaseModel):
    """Why an enrollment request was rejected."""

    code: str
    field: str | None = None
    detail: str


class Enrollment(_Out):
    """An enrollment, with its devices and its whole lifecycle."""

    enrollment_id: str
    head_end_system: str
    request_id: str
    program_code: str
    cis_person_id: str
    cis_account_id: str
    cis_premise_id: str
    cis_service_point_id: str
    state: str
    installation_method: str | None
    asset_ownership: str | None
    start_date: str | None
    end_date: str | None
    rejections: list[Rejection]
    requested_at: datetime
    created_at: datetime
    updated_at: datetime
    devices: list[EnrollmentDevice] = Field(default_factory=list)
    transitions: list[EnrollmentTransition] = Field(default_factory=list)


class SyncOut(_Out):
    """One enrollment sync sent to the DERMS and, once acknowledged, what the DERMS made of it."""

    sync_id: str
    message_id: str = Field(description="The message's id: search the bridge by it (`derbridge messages show`).")
    sequence: int
    change: SyncChange
    state: str = Field(description="SENT, APPLIED, STALE or FAILED.")
    detail: str | None = None
    sent_at: datetime
    acknowledged_at: datetime | None = None


class EnrollmentSyncsOut(BaseModel):
    """An enrollment's sync state (of its latest sync) and every sync it had, oldest first."""

    enrollment_id: str
    sync_state: str | None = Field(description="SENT, APPLIED, STALE or FAILED; null before the first sync.")
    sync_detail: str | None
    sync_sequence: int
    syncs: list[SyncOut]


class StatusCheck(_Out):
    """A device status check and, once answered, the DERMS's answer."""

    check_id: str
    device_id: int
    enrollment_id: str | None
    reason: str
    requested_by: str
    status: str
    requested_at: datetime
    timeout_at: datetime
    answered_at: datetime | None
    result: str | None
    communication_status: str | None
    last_communication_at: datetime | None
    source: str | None
    detail: str | None
    late_answer: bool


class ProgramEvent(_Out):
    """A program event as Asset Hub recorded it from the DERMS."""

    event_id: str
    derms_instance_id: str
    program_code: str
    event_type: str
    start_at: datetime
    end_at: datetime
    status: str
    received_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None


class Participation(_Out):
    """A device's participation record in an event."""

    record_id: str
    event_id: str
    device_id: int
    status: str
    reservation_start_at: datetime
    reservation_end_at: datetime
    outcome: str | None
    preemptive_opt_out: bool | None
    participation_start_at: datetime | None
    participation_end_at: datetime | None
    shed_kw: float | None
    error_message: str | None
    outcome_reported_at: datetime | None


class ParticipationCounts(BaseModel):
    """How many of an event's participation records are in each status and have each outcome."""

    by_status: dict[str, int]
    by_outcome: dict[str, int]


class ScoreSnapshot(_Out):
    """A computed score file's summary."""

    file_id: str
    generated_at: datetime
    scoring_model_version: str
    programs: list[str]
    row_count: int
    eligible_count: int
    sha256: str
    byte_size: int


class DeviceScore(_Out):
    """A device's score in a program, with the components that explain it."""

    file_id: str
    program_code: str
    device_id: int
    score: float
    eligible: bool
    ineligibility_reason: str | None
    reliability: float
    connectivity: float
    fatigue: float
