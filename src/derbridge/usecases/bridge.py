"""What the bridge still has to carry, counted over both systems' outboxes and the bridge's tracking:
``derbridge wait idle`` polls it."""

from __future__ import annotations

from derbridge.assethub.adapters.tables import outbox as assethub_outbox
from derbridge.bridge.operations import InFlight, in_flight
from derbridge.derms.adapters.tables import outbox as derms_outbox
from derbridge.runtime import Runtime


async def messages_in_flight(runtime: Runtime) -> InFlight:
    """:func:`derbridge.bridge.operations.in_flight` over Asset Hub's and the DERMS's outboxes (the ones the
    relay reads)."""
    outboxes = {
        "assethub": (runtime.async_engine("assethub"), assethub_outbox),
        "derms": (runtime.async_engine("derms"), derms_outbox),
    }
    return await in_flight(runtime.async_engine("bridge"), outboxes)
