"""What the DERMS's services take: the validated commands of its use cases (the API's request bodies are
these models, re-exported by :mod:`derbridge.derms.api.schemas`; a service imports no API module)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from derbridge.contracts.device_status_check import CommunicationStatus
from derbridge.derms.domain.event import EventType
from derbridge.infra.web import NO_NUL, UtcDateTime

HeadEnd = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,63}$", examples=["ECOBEE"])]
NicId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\s/\x00]+$")]


ProgramCode = Annotated[
    str,
    Field(
        pattern=r"^[A-Z0-9][A-Z0-9_-]{1,63}$",
        description="Upper-case letters, digits, '-' and '_', e.g. SUMMER-BYOT.",
        examples=["SUMMER-BYOT"],
    ),
]
"""A program code as the DERMS's API takes it: the same rule as Asset Hub's, where programs are created (the
DERMS imports nothing of Asset Hub's; the flow contracts' ``ProgramCode`` is the wire's, a little wider)."""


class CommunicationStatusIn(BaseModel):
    """A device's communication status, as the edge records it from an aggregator."""

    model_config = ConfigDict(extra="forbid")

    communication_status: CommunicationStatus
    last_communication_at: UtcDateTime
    operating_state: str | None = Field(None, max_length=32, pattern=NO_NUL)
    source: HeadEnd = Field(description="The head-end system that reported it.")


class CommunicationReport(CommunicationStatusIn):
    """One device's communication status in a batch."""

    head_end_system: HeadEnd
    nic_id: NicId


class EventIn(BaseModel):
    """A program event to create. Give exactly one target: a number of devices or a kW amount."""

    model_config = ConfigDict(extra="forbid")

    program_code: ProgramCode
    event_type: EventType
    start_at: UtcDateTime
    end_at: UtcDateTime
    target_devices: int | None = Field(None, gt=0, le=10_000_000)
    target_kw: float | None = Field(None, gt=0, le=10_000_000, validate_default=True)
    created_by: str = Field("api", min_length=1, max_length=100, pattern=NO_NUL)

    # Field validators rather than one model validator, so that the problem names the field (a model
    # validator's error is located at "body" only). Each runs after the fields it compares; a field that
    # failed its own validation is absent from ``info.data`` and is not compared.
    @field_validator("end_at")
    @classmethod
    def _ends_after_start(cls, end_at: datetime, info: ValidationInfo) -> datetime:
        start_at = info.data.get("start_at")
        if start_at is not None and end_at <= start_at:
            raise ValueError("end_at must be after start_at")
        return end_at

    @field_validator("target_kw")
    @classmethod
    def _one_target(cls, target_kw: float | None, info: ValidationInfo) -> float | None:
        if "target_devices" in info.data and (info.data["target_devices"] is None) == (target_kw is None):
            raise ValueError("give exactly one of target_devices or target_kw")
        return target_kw


class EventCancel(BaseModel):
    """Why an event is cancelled."""

    model_config = ConfigDict(extra="forbid")

    reason_text: str = Field("cancelled by operator", min_length=1, max_length=500, pattern=NO_NUL)
