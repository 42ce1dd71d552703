"""F3 · enrollment-sync (Asset Hub → DERMS), acknowledged by the DERMS."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from derbridge.contracts.common import Contract, HeadEnd, Id, ProgramCode

TYPE = "enrollment-sync.v1"
ACK_TYPE = "enrollment-sync-ack.v1"


class SyncChange(StrEnum):
    # What happened to the enrollment that an enrollment sync reports (Asset Hub's enrollments and the
    # DERMS's availability rules, derbridge.derms.domain.availability, share this one definition).
    ENROLLED = "ENROLLED"
    """The enrollment became ACTIVE: its devices become AVAILABLE."""
    UNENROLLED = "UNENROLLED"
    """The enrollment ended: its devices become UNAVAILABLE."""
    DEVICE_REPLACED = "DEVICE_REPLACED"
    """The customer swapped a device: the old one becomes UNAVAILABLE and the new one AVAILABLE, together."""


class SubscriptionStatus(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class DeviceAvailability(StrEnum):
    AVAILABLE = "AVAILABLE"
    UNAVAILABLE = "UNAVAILABLE"


class Contact(Contract):
    contact_id: Id
    cis_person_id: Id


class Subscription(Contract):
    subscription_id: Id = Field(description="The enrollment id.")
    cis_account_id: Id
    program_code: ProgramCode
    status: SubscriptionStatus
    start_at: AwareDatetime
    end_at: AwareDatetime | None = None


class SyncLocation(Contract):
    division: str = Field(max_length=64)
    cis_premise_id: Id
    cis_service_point_id: Id


class SyncedDevice(Contract):
    head_end_system: HeadEnd
    nic_id: Id
    device_type: str = Field(max_length=32)
    manufacturer: str = Field(max_length=100)
    model: str = Field(max_length=100)
    availability: DeviceAvailability


class EnrollmentSync(Contract):
    """F3 payload. For DEVICE_REPLACED the old device is UNAVAILABLE and the new one AVAILABLE, applied
    atomically. The envelope's ``sequence`` orders changes per enrollment."""

    sync_id: Id
    change: SyncChange
    contact: Contact
    subscription: Subscription
    location: SyncLocation
    devices: list[SyncedDevice] = Field(min_length=1, max_length=50)
