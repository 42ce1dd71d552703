"""F6 · event-cancellation (DERMS → Asset Hub)."""

from __future__ import annotations

from pydantic import AwareDatetime, Field

from derbridge.contracts.common import Contract, Id

TYPE = "event-cancellation.v1"
ACK_TYPE = "event-cancellation-ack.v1"


class EventCancellation(Contract):
    """F6 payload."""

    event_id: Id
    derms_instance_id: Id
    cancelled_at: AwareDatetime
    reason_text: str = Field(max_length=500)
