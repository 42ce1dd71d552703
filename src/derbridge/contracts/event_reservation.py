"""F5 · event-reservation (DERMS → Asset Hub): an event and its reserved devices."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from derbridge.contracts.common import Contract, HeadEnd, Id, ProgramCode
from derbridge.contracts.device_score_transfer import FileLocation, FileManifest

TYPE = "event-reservation.v1"
ACK_TYPE = "event-reservation-ack.v1"


class EventType(StrEnum):
    ECONOMIC = "ECONOMIC"
    EMERGENCY = "EMERGENCY"
    DEVICE_TEST = "DEVICE_TEST"


class EventStatus(StrEnum):
    SCHEDULED = "SCHEDULED"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class ReservedDevice(Contract):
    record_id: Id
    head_end_system: HeadEnd
    nic_id: Id
    reservation_start_at: AwareDatetime
    reservation_end_at: AwareDatetime


class EventReservation(Contract):
    """F5 payload. A large reservation list travels as a file (claim check): then ``devices`` is empty and
    ``devices_file`` says where the CSV of reserved devices lies."""

    event_id: Id
    derms_instance_id: Id
    program_code: ProgramCode
    event_type: EventType
    start_at: AwareDatetime
    end_at: AwareDatetime
    status: EventStatus
    devices: list[ReservedDevice] = Field(default_factory=list, max_length=10_000)
    devices_file: FileManifest | None = None
    devices_location: FileLocation | None = None
    update: bool = Field(False, description="True when this replaces an earlier reservation list (F3 releases).")
