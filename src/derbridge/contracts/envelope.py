"""The envelope every message travels in (flows.md, "The envelope"), and the flow names.

A message is one envelope on one flow. ``message_id`` is a UUIDv7: unique, time-ordered, and the
idempotency key from the source's outbox to the target's inbox.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from derbridge.infra.ids import new_id


class Flow(StrEnum):
    """The flows between Asset Hub and the DERMS: flows.md's seven, and program sync. The value is the name
    used everywhere: message ``flow``, metric label, docs, console."""

    ENROLLMENT_REQUEST = "enrollment-request"
    """F1: aggregator → edge → DERMS → Asset Hub, answered per request."""
    DEVICE_STATUS_CHECK = "device-status-check"
    """F2: Asset Hub asks the DERMS for a device's latest communication status; answered asynchronously."""
    ENROLLMENT_SYNC = "enrollment-sync"
    """F3: Asset Hub → DERMS on enrollment, unenrollment and device replacement; acknowledged."""
    DEVICE_SCORE_TRANSFER = "device-score-transfer"
    """F4: Asset Hub's score file to the DERMS by claim check; acknowledged."""
    EVENT_RESERVATION = "event-reservation"
    """F5: the DERMS's event and reserved devices to Asset Hub; acknowledged."""
    EVENT_CANCELLATION = "event-cancellation"
    """F6: the DERMS cancels an event before its start; acknowledged."""
    EVENT_OUTCOME = "event-outcome"
    """F7: per-device outcomes from the DERMS to Asset Hub; acknowledged."""
    PROGRAM_SYNC = "program-sync"
    """F8: Asset Hub's programs (its master data) to the DERMS, ordered by version; acknowledged."""


class SystemName(StrEnum):
    """The systems a message goes between."""

    ASSETHUB = "assethub"
    DERMS = "derms"
    EDGE = "edge"


def utc_z(value: datetime) -> str:
    """``value`` as ISO 8601 in UTC with a ``Z`` suffix (flows.md: ``occurred_at`` is written so)."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


MessageId = Annotated[str, Field(min_length=1, max_length=64, description="UUIDv7 (or ULID) of the message.")]


class Endpoint(BaseModel):
    """A source or target: a system and, where a utility runs several, its instance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: SystemName
    instance: str = Field("default", min_length=1, max_length=64)


class Envelope(BaseModel):
    """One message on one flow. ``payload`` is the flow's body, validated against the model its ``type``
    names (:mod:`derbridge.contracts.registry`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: MessageId = Field(default_factory=new_id)
    type: str = Field(pattern=r"^[a-z][a-z0-9-]*\.v[0-9]+$", examples=["enrollment-request.v1"])
    flow: Flow
    correlation_id: str = Field(min_length=1, max_length=64)
    causation_id: str | None = Field(None, max_length=64)
    source: Endpoint
    target: Endpoint
    business_key: str = Field(min_length=1, max_length=200, description="What an operator searches by.")
    sequence: int | None = Field(None, ge=0, description="Per business key, increasing; stale ones are ignored.")
    occurred_at: AwareDatetime
    payload: dict[str, Any]

    @field_serializer("occurred_at")
    def _occurred_at_z(self, value: datetime) -> str:
        return utc_z(value)
