"""One event as the DERMS holds it (with its reservations and outcomes counted) and as Asset Hub recorded it
(with its participations counted). ``derbridge events show`` reads it this way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from derbridge.assethub import queries as assethub
from derbridge.derms import queries as derms
from derbridge.errors import NotFound
from derbridge.runtime import Runtime


@dataclass(frozen=True)
class EventInBothSystems:
    """The DERMS's event and its counts; Asset Hub's record and its participation counts (None until the
    bridge delivered the event)."""

    event: Any
    counts: Any
    assethub_event: Any | None
    participations: Any | None


async def event_in_both_systems(runtime: Runtime, event_id: str) -> EventInBothSystems:
    """The event ``event_id`` in both systems; an event the DERMS does not know is a 404 problem."""
    async with runtime.async_engine("derms").connect() as connection:
        event = await derms.get_event(connection, event_id)
        tallies = await derms.event_counts(connection, event_id)
    async with runtime.async_engine("assethub").connect() as connection:
        try:
            hub = await assethub.get_event(connection, event_id)
        except NotFound:
            hub, participations = None, None
        else:
            participations = await assethub.participation_counts(connection, event_id)
    return EventInBothSystems(event, tallies, hub, participations)
