"""What operators do with messages: find them, read their journey, replay them, count them, wake them.

Shared by the CLI (``derbridge messages …``) and the API (``/bridge/v1/…``).
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.bridge.tables import delivery_attempts, tracked_messages
from derbridge.bridge.tracking import STATES, MessageState, Tracker
from derbridge.bridge.transport.base import Transport, queue_name
from derbridge.contracts.envelope import Flow
from derbridge.errors import Conflict, not_found

t = tracked_messages


class MessageSummary(BaseModel):
    """A message as a listing shows it."""

    message_id: str
    flow: str
    type: str
    source: str
    target: str
    business_key: str
    correlation_id: str
    state: MessageState
    attempts: int
    occurred_at: datetime
    received_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None
    wake_on: str | None
    last_status: int | None


class Attempt(BaseModel):
    """One delivery attempt (or an operator's replay)."""

    attempt: int
    at: datetime
    outcome: str
    status_code: int | None
    detail: str | None
    duration_ms: int


class MessageJourney(MessageSummary):
    """A message with its envelope, its last problem and every attempt."""

    envelope: dict[str, Any] | str
    last_problem: dict[str, Any] | None
    journey: list[Attempt]


class MessageFilter(BaseModel):
    """What to list: every field is optional and they combine."""

    flow: Flow | None = None
    state: MessageState | None = None
    business_key: str | None = None
    correlation_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_messages(
    engine: AsyncEngine, where: MessageFilter, *, limit: int, after: str | None
) -> tuple[list[MessageSummary], str | None]:
    """One page of tracked messages, oldest first (message ids are time-ordered)."""
    query = select(*(t.c[name] for name in MessageSummary.model_fields))
    if where.flow is not None:
        query = query.where(t.c.flow == where.flow.value)
    if where.state is not None:
        query = query.where(t.c.state == where.state.value)
    if where.business_key is not None:
        query = query.where(t.c.business_key == where.business_key)
    if where.correlation_id is not None:
        query = query.where(t.c.correlation_id == where.correlation_id)
    if where.since is not None:
        query = query.where(t.c.occurred_at >= where.since)
    if where.until is not None:
        query = query.where(t.c.occurred_at < where.until)
    if after is not None:
        query = query.where(t.c.message_id > after)
    query = query.order_by(t.c.message_id).limit(limit + 1)
    async with engine.connect() as connection:
        rows = [MessageSummary.model_validate(dict(r)) for r in (await connection.execute(query)).mappings()]
    if len(rows) > limit:
        rows = rows[:limit]
        return rows, rows[-1].message_id
    return rows, None


async def show_message(engine: AsyncEngine, message_id: str) -> MessageJourney:
    """A message's whole journey; 404 when the bridge never saw it."""
    async with engine.connect() as connection:
        row = (await connection.execute(select(t).where(t.c.message_id == message_id))).mappings().first()
        if row is None:
            raise not_found("message", message_id)
        attempts = await connection.execute(
            select(delivery_attempts)
            .where(delivery_attempts.c.message_id == message_id)
            .order_by(delivery_attempts.c.attempt_id)
        )
        journey = [Attempt.model_validate(dict(a)) for a in attempts.mappings()]
    data = dict(row)
    # An unreadable message is kept as the text that arrived; every other envelope is JSON.
    with contextlib.suppress(ValueError):
        data["envelope"] = json.loads(data["envelope"])
    return MessageJourney.model_validate(data | {"journey": journey})


async def replay_message(tracker: Tracker, transport: Transport, prefix: str, message_id: str) -> None:
    """Send a dead or parked message again, after its cause was fixed. The target's inbox guarantees no
    second effect even if an earlier copy had in fact been applied."""
    prepared = await tracker.prepare_replay(message_id)
    if prepared is None:
        async with tracker.engine.connect() as connection:
            state = await connection.scalar(select(t.c.state).where(t.c.message_id == message_id))
        if state is None:
            raise not_found("message", message_id)
        raise Conflict(
            "not-replayable",
            "Only dead or parked messages are replayed",
            f"Message {message_id} is {state}; a {state} message needs no replay.",
        )
    flow, envelope = prepared
    # Tracking already says pending: if this publish fails, the scheduler republishes the stale pending copy.
    await transport.publish(queue_name(prefix, flow), [(message_id, envelope.encode())])


async def message_stats(tracker: Tracker) -> dict[str, dict[str, int]]:
    """Per flow (every flow listed), the count of messages in each state."""
    counts = await tracker.counts()
    return {flow.value: counts.get(flow.value, {s.value: 0 for s in STATES}) for flow in Flow} | {
        flow: c for flow, c in counts.items() if flow not in {f.value for f in Flow}
    }


class InFlight(BaseModel):
    """What the bridge still has to carry: an operator's (or a script's) answer to "is it done?"."""

    unpublished: int
    """Messages still in a system's outbox, not yet handed to the transport."""
    published: int
    """Messages the systems' outboxes have handed over, in all."""
    tracked: int
    """Messages the bridge has received (each once, however often it was handed over)."""
    unsettled: int
    """Received messages still pending or retrying, and parked ones whose next attempt is due (woken)."""
    parked: int
    """Parked messages waiting for their prerequisite (not yet due)."""
    dead: int

    @property
    def idle(self) -> bool:
        """Nothing in flight: every message was handed over and received, and none waits for a delivery.
        Parked and dead messages count as settled: they wait for a person or a prerequisite, not for the
        bridge. Comparing the outboxes' total with what the bridge received covers the moment a message is
        between the two (in the transport's queue, or taken by a worker that has not recorded it yet)."""
        return self.unpublished == 0 and self.unsettled == 0 and self.tracked >= self.published


async def in_flight(
    bridge: AsyncEngine, outboxes: dict[str, tuple[AsyncEngine, Any]], now: datetime | None = None
) -> InFlight:
    """Count what is in flight: ``outboxes`` maps each source system to its engine and outbox table (the
    same outboxes the relay reads).

    The bridge is read *before* the outboxes, and that order is what makes :attr:`InFlight.idle` safe: a
    message the bridge counted as settled had already committed its effect, replies included, so the outbox
    read that follows sees those replies (unpublished, or published but not yet received, which leaves
    ``tracked`` short of ``published``). Read the other way round, a reply written between the two reads
    would be missed. A parked or retrying message whose next attempt is due is still in flight.
    """
    from sqlalchemy import func

    from derbridge.infra.db import utcnow

    moment = now or utcnow()
    due = t.c.next_attempt_at.is_not(None) & (t.c.next_attempt_at <= moment)
    async with bridge.connect() as connection:
        rows = (
            await connection.execute(select(t.c.state, func.count(), func.count().filter(due)).group_by(t.c.state))
        ).all()
    by_state = {str(state): (int(count), int(due_now)) for state, count, due_now in rows}
    unpublished = published = 0
    for engine, outbox in outboxes.values():
        async with engine.connect() as connection:
            waiting, handed = (
                await connection.execute(
                    select(
                        func.count().filter(outbox.c.published_at.is_(None)),
                        func.count().filter(outbox.c.published_at.is_not(None)),
                    )
                )
            ).one()
        unpublished += int(waiting)
        published += int(handed)
    pending = by_state.get(MessageState.PENDING.value, (0, 0))[0]
    retrying = by_state.get(MessageState.RETRYING.value, (0, 0))[0]
    parked, parked_due = by_state.get(MessageState.PARKED.value, (0, 0))
    return InFlight(
        unpublished=unpublished,
        published=published,
        tracked=sum(count for count, _ in by_state.values()),
        unsettled=pending + retrying + parked_due,
        parked=parked - parked_due,
        dead=by_state.get(MessageState.DEAD.value, (0, 0))[0],
    )
