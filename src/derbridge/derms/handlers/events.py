"""Events (F5, F6, F7), the DERMS's inbox and jobs: the ``event-lifecycle`` job, and Asset Hub's
acknowledgements of the event messages (``event-reservation-ack.v1``, ``event-cancellation-ack.v1``,
``event-outcome-ack.v1``).

The events themselves are created and cancelled through the API (:mod:`derbridge.derms.services.events`);
their messages are written by :mod:`derbridge.derms.services.event_messages`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.common import Acknowledgement, AckStatus
from derbridge.contracts.envelope import Envelope
from derbridge.derms.services.events import advance_lifecycle

log = structlog.get_logger("derbridge.derms.events")

LIFECYCLE_EVERY = timedelta(seconds=5)
"""How often the ``event-lifecycle`` job looks for events to start or close (wall-clock interval)."""


async def event_lifecycle_job(engine: AsyncEngine, now: datetime) -> int:
    """The ``event-lifecycle`` job: :func:`~derbridge.derms.services.events.advance_lifecycle` at the
    business time ``now``."""
    return await advance_lifecycle(engine, now)


async def record_acknowledgement(
    connection: AsyncConnection, envelope: Envelope, ack: Acknowledgement
) -> dict[str, Any]:
    """Asset Hub applied (or refused) an event message. Nothing in the DERMS depends on it: the event and
    its reservations are the DERMS's own record. It is logged, and the answer kept in the inbox: at DEBUG
    when it is plainly applied (one per message; the bridge's batch lines count them), else as a warning."""
    plain = ack.status is AckStatus.APPLIED and not ack.unknown_devices
    (log.debug if plain else log.warning)(
        "event message acknowledged",
        message_type=envelope.type,
        event_id=envelope.business_key,
        acknowledged_message_id=ack.acknowledged_message_id,
        correlation_id=envelope.correlation_id,
        status=ack.status.value,
        unknown_devices=len(ack.unknown_devices),
    )
    return {
        "event_id": envelope.business_key,
        "status": ack.status.value,
        "unknown_devices": len(ack.unknown_devices),
    }
