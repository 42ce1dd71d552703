"""Tracking: every message's state and journey, in the bridge's database.

States (``MessageState``): a message is **pending** from the moment the bridge sees it until an attempt
settles it: **delivered**, **retrying** (a transient failure; ``next_attempt_at`` says when), **parked**
(waiting for ``wake_on``; tried again on a slow backoff too) or **dead** (refused; needs a person).
Every attempt is kept with its result. Nothing here is ever deleted by the bridge.

The tracking row is also how redeliveries are told apart: a copy of a message that is already delivered
or dead, or that is scheduled for later, is acknowledged without a second delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.bridge.tables import delivery_attempts, tracked_messages
from derbridge.contracts.envelope import Envelope
from derbridge.infra.db import utcnow
from derbridge.infra.outbox import serialize
from derbridge.infra.upsert import insert_for

t = tracked_messages


class MessageState(StrEnum):
    """Where a message is on its way to its target."""

    PENDING = "pending"
    """Seen by the bridge, on its way (queued, or being delivered)."""
    DELIVERED = "delivered"
    """The target applied it (or had already applied it)."""
    RETRYING = "retrying"
    """The target failed transiently; it is tried again at ``next_attempt_at``."""
    PARKED = "parked"
    """The target lacks a prerequisite (``wake_on``); delivered again when it arrives."""
    DEAD = "dead"
    """The target refused it: it needs a person. Replayable once the cause is fixed."""


STATES: tuple[MessageState, ...] = tuple(MessageState)


@dataclass(frozen=True)
class Tracked:
    """What the bridge knows of a message when a copy of it arrives."""

    state: MessageState
    attempts: int
    next_attempt_at: datetime | None
    new: bool
    """True when this is the first time the bridge sees the message."""

    def should_deliver(self, now: datetime) -> bool:
        """Deliver this copy? Not when settled, nor when another delivery is scheduled for later."""
        if self.state in (MessageState.DELIVERED, MessageState.DEAD):
            return False
        if self.state in (MessageState.RETRYING, MessageState.PARKED):
            return self.next_attempt_at is not None and self.next_attempt_at <= now
        return True


@dataclass(frozen=True)
class Settlement:
    """The result of one delivery attempt, as tracking records it."""

    state: MessageState
    outcome: str
    status_code: int | None
    detail: str | None
    problem: dict[str, Any] | None
    duration_ms: int
    next_attempt_at: datetime | None = None
    wake_on: str | None = None


class Tracker:
    """Reads and writes the tracking tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def see(self, envelope: Envelope, now: datetime | None = None) -> Tracked:
        """Record ``envelope`` as pending if it is new; return its tracking state either way."""
        now = now or utcnow()
        async with self.engine.begin() as connection:
            row = {
                "message_id": envelope.message_id,
                "flow": envelope.flow.value,
                "type": envelope.type,
                "source": envelope.source.system.value,
                "target": envelope.target.system.value,
                "business_key": envelope.business_key,
                "correlation_id": envelope.correlation_id,
                "state": MessageState.PENDING.value,
                "attempts": 0,
                "occurred_at": envelope.occurred_at,
                "received_at": now,
                "updated_at": now,
                "envelope": serialize(envelope),
            }
            statement = insert_for(connection.dialect.name, t).values(**row)
            inserted = await connection.execute(
                statement.on_conflict_do_nothing(index_elements=[t.c.message_id]).returning(t.c.message_id)
            )
            if inserted.first() is not None:
                return Tracked(MessageState.PENDING, 0, None, new=True)
            current = (
                await connection.execute(
                    select(t.c.state, t.c.attempts, t.c.next_attempt_at).where(t.c.message_id == envelope.message_id)
                )
            ).one()
        return Tracked(MessageState(current.state), current.attempts, current.next_attempt_at, new=False)

    async def see_unreadable(self, message_id: str, flow: str, body: bytes, reason: str) -> None:
        """Keep a copy that is not an envelope at all, as dead: visible to operators, never dropped."""
        now = utcnow()
        async with self.engine.begin() as connection:
            statement = insert_for(connection.dialect.name, t).values(
                message_id=message_id,
                flow=flow,
                type="unreadable",
                source="unknown",
                target="unknown",
                business_key="unreadable",
                correlation_id=message_id,
                state=MessageState.DEAD.value,
                attempts=0,
                occurred_at=now,
                received_at=now,
                updated_at=now,
                last_problem={"title": "Not an envelope", "detail": reason},
                envelope=body.decode("utf-8", errors="replace"),
            )
            await connection.execute(statement.on_conflict_do_nothing(index_elements=[t.c.message_id]))

    async def settle(self, message_id: str, settlement: Settlement, now: datetime | None = None) -> int:
        """Record one attempt and the state it leads to, in one transaction; returns the attempt number."""
        now = now or utcnow()
        async with self.engine.begin() as connection:
            values: dict[str, Any] = {
                "state": settlement.state.value,
                "attempts": t.c.attempts + 1,
                "updated_at": now,
                "next_attempt_at": settlement.next_attempt_at,
                "wake_on": settlement.wake_on,
                "last_status": settlement.status_code,
                "last_problem": settlement.problem,
            }
            if settlement.state is MessageState.DELIVERED:
                values["delivered_at"] = now
            attempts = int(
                (
                    await connection.execute(
                        update(t).where(t.c.message_id == message_id).values(**values).returning(t.c.attempts)
                    )
                ).scalar_one()
            )
            await connection.execute(
                insert(delivery_attempts).values(
                    message_id=message_id,
                    attempt=attempts,
                    at=now,
                    outcome=settlement.outcome,
                    status_code=settlement.status_code,
                    detail=settlement.detail,
                    duration_ms=settlement.duration_ms,
                )
            )
        return attempts

    async def due(self, now: datetime, limit: int, stale_pending_before: datetime) -> list[tuple[str, str, str]]:
        """Messages to put back on their queue: retrying or parked ones whose time has come, and pending
        ones untouched since ``stale_pending_before`` (a replay whose publication was interrupted)."""
        condition = or_(
            and_(t.c.state.in_([MessageState.RETRYING.value, MessageState.PARKED.value]), t.c.next_attempt_at <= now),
            and_(t.c.state == MessageState.PENDING.value, t.c.updated_at < stale_pending_before),
        )
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(t.c.message_id, t.c.flow, t.c.envelope)
                .where(condition)
                .order_by(t.c.next_attempt_at)
                .limit(limit)
            )
            return [(r.message_id, r.flow, r.envelope) for r in rows]

    async def mark_requeued(self, message_ids: Sequence[str], now: datetime | None = None) -> None:
        """After republishing: the copies on the queue are the pending deliveries now."""
        if not message_ids:
            return
        now = now or utcnow()
        async with self.engine.begin() as connection:
            await connection.execute(
                update(t)
                .where(t.c.message_id.in_(list(message_ids)))
                .values(state=MessageState.PENDING.value, next_attempt_at=None, updated_at=now)
            )

    async def wake(self, conditions: set[str], now: datetime | None = None) -> int:
        """Make parked messages waiting for any of ``conditions`` due now; returns how many woke."""
        if not conditions:
            return 0
        now = now or utcnow()
        async with self.engine.begin() as connection:
            waiting = (
                await connection.execute(
                    select(t.c.message_id, t.c.wake_on).where(t.c.state == MessageState.PARKED.value)
                )
            ).all()
            # Parked messages are few; the conditions may be a million accounts from a CIS import.
            woken = [row.message_id for row in waiting if row.wake_on in conditions]
            for start in range(0, len(woken), 500):
                await connection.execute(
                    update(t)
                    .where(t.c.message_id.in_(woken[start : start + 500]), t.c.state == MessageState.PARKED.value)
                    .values(next_attempt_at=now, updated_at=now)
                )
        return len(woken)

    async def prepare_replay(self, message_id: str, now: datetime | None = None) -> tuple[str, str] | None:
        """Make a dead or parked message pending again; returns (flow, envelope) to republish, or None when
        there is no such message or it is not dead or parked."""
        now = now or utcnow()
        async with self.engine.begin() as connection:
            row = (
                await connection.execute(select(t.c.state, t.c.flow, t.c.envelope).where(t.c.message_id == message_id))
            ).first()
            if row is None or row.state not in (MessageState.DEAD.value, MessageState.PARKED.value):
                return None
            await connection.execute(
                update(t)
                .where(t.c.message_id == message_id)
                .values(state=MessageState.PENDING.value, next_attempt_at=None, updated_at=now)
            )
            await connection.execute(
                insert(delivery_attempts).values(
                    message_id=message_id,
                    attempt=0,
                    at=now,
                    outcome="replayed",
                    status_code=None,
                    detail=f"replayed by an operator from {row.state}",
                    duration_ms=0,
                )
            )
        return row.flow, row.envelope

    async def counts(self) -> dict[str, dict[str, int]]:
        """Per flow, how many messages are in each state (every state present, zeros included)."""
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(t.c.flow, t.c.state, func.count()).group_by(t.c.flow, t.c.state))
            result: dict[str, dict[str, int]] = {}
            for flow, state, count in rows.tuples():
                result.setdefault(flow, {s.value: 0 for s in STATES})[state] = int(count)
        return result


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> timedelta:
    """Capped exponential backoff with full jitter: a random delay in [0, min(cap, base·2^(attempt-1))].

    ``jitter`` is a number in [0, 1) from the caller's random source (pure: testable). Full jitter spreads
    the retries of many messages that failed together, so a recovering target is not hit all at once.
    """
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    return timedelta(seconds=max(base / 10, ceiling * jitter))
