"""``POST /derms/v1/events/{event_id}/outcomes``: per-device outcomes of an event, as the edge reports them
(F7). The router translates HTTP; :func:`derbridge.derms.services.outcomes.record_outcomes` does the work."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from derbridge.contracts.event_outcome import DeviceOutcome
from derbridge.derms.domain.event import EventStatus
from derbridge.derms.services import outcomes
from derbridge.infra.problems import PROBLEM_RESPONSES
from derbridge.infra.web import BusinessNow, IdPath, SystemEngine, require_service_token

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)


class OutcomeReport(BaseModel):
    """A batch of per-device outcomes of one event (the edge normalises the aggregators' reports to this)."""

    model_config = ConfigDict(extra="forbid")

    outcomes: list[DeviceOutcome] = Field(min_length=1, max_length=outcomes.MAX_OUTCOMES_PER_REPORT)


class OutcomeReceipt(BaseModel):
    """What the DERMS did with a report."""

    event_id: str
    event_status: EventStatus = Field(description="The event's status at the time of the report.")
    accepted: int = Field(description="Outcomes stored, each replacing any earlier one of its device.")
    messages: int = Field(description="event-outcome messages written for Asset Hub.")


@router.post("/events/{event_id}/outcomes", tags=["events"])
async def report_outcomes(
    engine: SystemEngine, now: BusinessNow, event_id: IdPath, report: OutcomeReport
) -> OutcomeReceipt:
    """Record per-device outcomes of an event that has started (ACTIVE or COMPLETED) and forward them to Asset
    Hub. A later report for a device replaces the earlier one. 404 for an unknown event, 409 for a cancelled
    or not yet started one, 422 naming each device not reserved for the event or repeated in the batch."""
    done = await outcomes.record_outcomes(engine, event_id, report.outcomes, now)
    return OutcomeReceipt(
        event_id=done.event_id, event_status=done.event_status, accepted=done.accepted, messages=done.messages
    )
