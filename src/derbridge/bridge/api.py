"""The bridge's operations API, ``/bridge/v1``: find messages, read their journey, replay, count, wake."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, Field

from derbridge import __version__
from derbridge.bridge import operations as ops
from derbridge.bridge.tracking import MessageState, Tracker
from derbridge.bridge.transport.base import Transport
from derbridge.contracts.envelope import Flow
from derbridge.infra.docs_ui import install_api_docs
from derbridge.infra.problems import PROBLEM_RESPONSES, install_problem_handlers
from derbridge.infra.text import install_text_guard
from derbridge.infra.web import Page, instrument, require_service_token

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)
MessageId = Annotated[str, Path(max_length=64)]


def _tracker(request: Request) -> Tracker:
    tracker: Tracker = request.app.state.tracker
    return tracker


TrackerDep = Annotated[Tracker, Depends(_tracker)]


@router.get("/messages", tags=["messages"])
async def list_messages(
    tracker: TrackerDep,
    flow: Flow | None = None,
    state: MessageState | None = None,
    business_key: Annotated[str | None, Query(max_length=200)] = None,
    correlation_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="occurred_at at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="occurred_at before (ISO 8601).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=64, description="Cursor from next_after.")] = None,
) -> Page[ops.MessageSummary]:
    """Messages, oldest first, filtered by flow, state, business key, correlation id and time."""
    where = ops.MessageFilter(
        flow=flow, state=state, business_key=business_key, correlation_id=correlation_id, since=since, until=until
    )
    items, next_after = await ops.list_messages(tracker.engine, where, limit=limit, after=after)
    return Page[ops.MessageSummary](items=items, next_after=next_after)


@router.get("/messages/{message_id}", tags=["messages"])
async def show_message(tracker: TrackerDep, message_id: MessageId) -> ops.MessageJourney:
    """A message's envelope, state and whole journey: every attempt with its result."""
    return await ops.show_message(tracker.engine, message_id)


class Replayed(BaseModel):
    """A replay that was accepted."""

    message_id: str
    state: MessageState = MessageState.PENDING


@router.post("/messages/{message_id}/replay", status_code=202, tags=["messages"])
async def replay_message(request: Request, tracker: TrackerDep, message_id: MessageId) -> Replayed:
    """Deliver a dead or parked message again (after fixing its cause); 409 for any other state."""
    transport: Transport = request.app.state.transport
    await ops.replay_message(tracker, transport, request.app.state.queue_prefix, message_id)
    return Replayed(message_id=message_id)


@router.get("/stats", tags=["messages"])
async def stats(tracker: TrackerDep) -> dict[str, dict[str, int]]:
    """Per flow, how many messages are in each state."""
    return await ops.message_stats(tracker)


class WakeRequest(BaseModel):
    """Conditions that are now met (e.g. ``cis-account:A123`` after a CIS import)."""

    conditions: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=100_000)


class Woken(BaseModel):
    """How many parked messages became due."""

    woken: int


@router.post("/wake", tags=["messages"])
async def wake(tracker: TrackerDep, body: WakeRequest) -> Woken:
    """Wake the parked messages waiting for any of these conditions: they are delivered again at once."""
    return Woken(woken=await tracker.wake(set(body.conditions)))


def create_bridge_app(tracker: Tracker, transport: Transport, queue_prefix: str, api_token: str) -> FastAPI:
    """The bridge's operations API as its own application (mounted at ``/bridge/v1``)."""
    app = FastAPI(
        title="derbridge bridge operations API",
        version=__version__,
        description="Every message between Asset Hub and the DERMS: find it, follow it, replay it.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.tracker = tracker
    app.state.transport = transport
    app.state.queue_prefix = queue_prefix
    app.state.api_token = api_token
    install_problem_handlers(app)
    install_text_guard(app)
    instrument(app, "bridge")
    install_api_docs(app)
    app.include_router(router)
    return app
