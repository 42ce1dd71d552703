"""Pieces several flows share: identifiers, a device's identity, acknowledgements."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=64)]
HeadEnd = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,63}$", examples=["ECOBEE"])]
ProgramCode = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,63}$", examples=["SUMMER-BYOT"])]


class Contract(BaseModel):
    """Base of every payload: immutable, and unknown fields refused (a typo is an error, not silence)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceIdentity(Contract):
    """How messages name a device: the head-end system and its device id."""

    head_end_system: HeadEnd
    nic_id: Id


class AckStatus(StrEnum):
    """What a target did with a message it acknowledges."""

    APPLIED = "APPLIED"
    """The effect took place."""
    STALE = "STALE"
    """A newer change was already applied; this one was recorded and ignored."""
    REJECTED = "REJECTED"
    """The target refused it for the reason given."""


class Acknowledgement(Contract):
    """A target's answer to a state-carrying message (F3, F4, F5, F6, F7, program sync)."""

    acknowledged_message_id: Id
    status: AckStatus
    detail: str | None = Field(None, max_length=2000)
    unknown_devices: list[DeviceIdentity] = Field(
        default_factory=list, description="Devices the target does not know (reported, not fatal)."
    )
