"""F2 · device-status-check (Asset Hub → DERMS) and its asynchronous answer (DERMS → Asset Hub)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, Field

from derbridge.contracts.common import Contract, HeadEnd, Id

TYPE = "device-status-check.v1"
RESPONSE_TYPE = "device-status-check-response.v1"


class CheckReason(StrEnum):
    ENROLLMENT_SETUP = "ENROLLMENT_SETUP"
    AGENT_TROUBLESHOOT = "AGENT_TROUBLESHOOT"


class CheckedDevice(Contract):
    head_end_system: HeadEnd
    nic_id: Id
    device_type: str = Field(max_length=32)
    manufacturer: str = Field(max_length=100)
    model: str = Field(max_length=100)
    division: str | None = Field(None, max_length=64)


class StatusCheckRequest(Contract):
    """F2 request: ``check_id`` is also the message's ``correlation_id``."""

    check_id: Id
    reason: CheckReason
    requested_by: str = Field(max_length=100)
    device: CheckedDevice


class CheckResult(StrEnum):
    SUCCESS = "SUCCESS"
    """The device is known and its status is known."""
    FAILURE = "FAILURE"
    """Unknown device, or no status ever."""


class CommunicationStatus(StrEnum):
    """A device's last known communication status."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"


class StatusCheckResponse(Contract):
    """F2 answer."""

    check_id: Id
    result: CheckResult
    communication_status: CommunicationStatus
    last_communication_at: AwareDatetime | None = None
    source: str | None = Field(None, max_length=64, description="The head-end that reported the status.")
    detail: str | None = Field(None, max_length=2000)
