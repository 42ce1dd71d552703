"""Tracking: every message's state and journey, in the bridge's database.

States (``MessageState``): a message is **pending** from the moment the bridge sees it until an attempt
settles it: **delivered**, **retrying** (a transient failure; ``next_attempt_at`` says when), **parked**
(waiting for ``wake_on``; tried again on a slow backoff too) or **dead** (refused; needs a person).
Every attempt is kept with its result. Nothing here is ever deleted by the bridge.

The tracking row is also how redeliveries are told apart: a copy of a message that is already delivered
or dead, or that is scheduled for later, is acknowledged without a second delivery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.bridge.tables import delivery_attempts, tracked_messages
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import CONTRACTS, MessageContract
from derbridge.infra.db import utcnow
from derbridge.infra.idlists import id_list
from derbridge.infra.outbox import insert_rows, serialize
from derbridge.infra.upsert import insert_for

t = tracked_messages

# The contracts whose delivery announces a condition, by the condition's prefix (``program`` → program sync).
ANNOUNCERS: dict[str, tuple[MessageContract, ...]] = {}
for _contract in CONTRACTS:
    if _contract.announces is not None:
        ANNOUNCERS[_contract.announces] = (*ANNOUNCERS.get(_contract.announces, ()), _contract)


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

    async def see(
        self, envelopes: Sequence[Envelope], now: datetime | None = None, *, texts: Mapping[str, str] | None = None
    ) -> dict[str, Tracked]:
        """Record new ``envelopes`` as pending, in one transaction; return every one's tracking state.

        Set-based: one ``INSERT … ON CONFLICT DO NOTHING RETURNING`` of every row tells the new from the known,
        and one ``SELECT`` reads the known ones' states. ``texts`` (by message id) are the envelopes as they
        travelled, stored as they are; an envelope without one is serialised.
        """
        now = now or utcnow()
        unique = list({e.message_id: e for e in envelopes}.values())
        if not unique:
            return {}
        rows = [
            {
                "message_id": e.message_id,
                "flow": e.flow.value,
                "type": e.type,
                "source": e.source.system.value,
                "target": e.target.system.value,
                "business_key": e.business_key,
                "correlation_id": e.correlation_id,
                "state": MessageState.PENDING.value,
                "attempts": 0,
                "occurred_at": e.occurred_at,
                "received_at": now,
                "updated_at": now,
                "envelope": texts[e.message_id] if texts and e.message_id in texts else serialize(e),
            }
            for e in unique
        ]
        result: dict[str, Tracked] = {}
        async with self.engine.begin() as connection:
            statement, parameters = insert_rows(connection.dialect.name, t, rows)
            inserted = await connection.execute(
                statement.on_conflict_do_nothing(index_elements=[t.c.message_id]).returning(t.c.message_id),
                parameters,
            )
            for message_id in inserted.scalars():
                result[message_id] = Tracked(MessageState.PENDING, 0, None, new=True)
            known = [e.message_id for e in unique if e.message_id not in result]
            if known:
                current = await connection.execute(
                    select(t.c.message_id, t.c.state, t.c.attempts, t.c.next_attempt_at).where(
                        id_list(connection, t.c.message_id, known, "known")
                    )
                )
                for row in current:
                    result[row.message_id] = Tracked(
                        MessageState(row.state), row.attempts, row.next_attempt_at, new=False
                    )
        return result

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

    async def settle(
        self,
        settlements: Sequence[tuple[str, int, Settlement]],
        now: datetime | None = None,
        *,
        attempted_at: datetime | None = None,
    ) -> None:
        """Record attempts — ``(message_id, attempt number, settlement)`` — and the states they lead to,
        all in one transaction: one UPDATE per group of messages settled alike (a delivered batch), an
        ``executemany`` for the rest, one multi-row INSERT of the attempts.

        A message parked for a condition that was announced since its attempt began (``attempted_at``) is made
        due at once: its target may have answered before the prerequisite landed, and the announcement's
        wake ran before this park existed (:meth:`parked_for_past_announcements`)."""
        if not settlements:
            return
        now = now or utcnow()
        updates = [
            {
                "key": message_id,
                "state": s.state.value,
                "next_attempt_at": s.next_attempt_at,
                "wake_on": s.wake_on,
                "last_status": s.status_code,
                "last_problem": s.problem,
                "delivered_at": now if s.state is MessageState.DELIVERED else None,
            }
            for message_id, _, s in settlements
        ]
        attempts = [
            {
                "message_id": message_id,
                "attempt": attempt,
                "at": now,
                "outcome": s.outcome,
                "status_code": s.status_code,
                "detail": s.detail,
                "duration_ms": s.duration_ms,
            }
            for message_id, attempt, s in settlements
        ]
        # The common case — a batch delivered — is one UPDATE for every message settled the same way (no
        # problem, no schedule), instead of one statement per message; the others go by executemany.
        same: dict[tuple[Any, ...], list[str]] = {}
        one_by_one: list[dict[str, Any]] = []
        for row in updates:
            if row["last_problem"] is None and row["next_attempt_at"] is None and row["wake_on"] is None:
                same.setdefault((row["state"], row["last_status"], row["delivered_at"]), []).append(str(row["key"]))
            else:
                one_by_one.append(row)
        async with self.engine.begin() as connection:
            for (state, last_status, delivered_at), keys in same.items():
                # The ids as one parameter: an IN list of a hundred made a new statement text each time, which
                # psycopg parses again (it caches only short ones).
                await connection.execute(
                    update(t)
                    .where(id_list(connection, t.c.message_id, keys, "keys"))
                    .values(
                        state=state,
                        attempts=t.c.attempts + 1,
                        updated_at=now,
                        next_attempt_at=None,
                        wake_on=None,
                        last_status=last_status,
                        last_problem=None,
                        delivered_at=func.coalesce(
                            bindparam("delivered_at", delivered_at, type_=t.c.delivered_at.type), t.c.delivered_at
                        ),
                    )
                )
            if one_by_one:
                await connection.execute(
                    update(t)
                    .where(t.c.message_id == bindparam("key"))
                    .values(
                        state=bindparam("state"),
                        attempts=t.c.attempts + 1,
                        updated_at=now,
                        next_attempt_at=bindparam("next_attempt_at"),
                        wake_on=bindparam("wake_on"),
                        last_status=bindparam("last_status"),
                        last_problem=bindparam("last_problem"),
                        delivered_at=func.coalesce(
                            bindparam("delivered_at", type_=t.c.delivered_at.type), t.c.delivered_at
                        ),
                    ),
                    one_by_one,
                )
            statement, parameters = insert_rows(connection.dialect.name, delivery_attempts, attempts)
            await connection.execute(statement, parameters)
            parks = {message_id: s.wake_on for message_id, _, s in settlements if s.wake_on is not None}
            if parks and attempted_at is not None:
                await self.parked_for_past_announcements(connection, parks, attempted_at, now)

    @staticmethod
    async def parked_for_past_announcements(
        connection: AsyncConnection, parks: Mapping[str, str], since: datetime, now: datetime
    ) -> list[str]:
        """Make due now the parked messages of ``parks`` (message id → ``wake_on``) whose condition a message
        delivered at or after ``since`` announced (``MessageContract.announces``); returns their ids.

        The worker wakes parked messages after it settles the announcing message. Two batches in parallel —
        the prerequisite in one, the message that needs it in the other — could otherwise miss each other:
        the target parks the second because the first has not landed yet, the first's wake finds nothing
        parked yet, and the second waits its whole park backoff. Only announcements since the attempt began
        count, so a target that parks again after its prerequisite is long delivered backs off as usual
        rather than being retried in a loop."""
        satisfied: list[str] = []
        for message_id, condition in parks.items():
            prefix, _, key = condition.partition(":")
            for contract in ANNOUNCERS.get(prefix, ()):
                match = (
                    t.c.message_id == key
                    if contract.announces_by == "message_id"
                    else and_(t.c.business_key == key, t.c.type == contract.type)
                )
                found = await connection.execute(
                    select(t.c.message_id)
                    .where(match, t.c.state == MessageState.DELIVERED.value, t.c.delivered_at >= since)
                    .limit(1)
                )
                if found.first() is not None:
                    satisfied.append(message_id)
                    break
        if satisfied:
            await connection.execute(
                update(t)
                .where(t.c.message_id.in_(satisfied), t.c.state == MessageState.PARKED.value)
                .values(next_attempt_at=now, updated_at=now)
            )
        return satisfied

    async def claim_due(self, now: datetime, limit: int, stale_pending_before: datetime) -> list[tuple[str, str, str]]:
        """Claim the messages to put back on their queue — retrying or parked ones whose time has come, and
        pending ones untouched since ``stale_pending_before`` (a publication that was interrupted) — and
        return them as ``(message_id, flow, envelope)`` for the caller to publish.

        Claim first, publish after: one conditional ``UPDATE … RETURNING`` makes them pending (the copies
        about to be published are their pending deliveries) and takes only rows that are *still* in the
        state that made them due. So nothing the scheduler writes can land on a settlement made meanwhile:
        a worker that takes a republished copy settles a row that is already pending, and that settlement
        stays. (Marking after the publication, as the scheduler once did, overwrote such settlements with
        "pending" and left the message waiting for the stale sweep.)

        Two schedulers at once claim disjoint sets: on SQLite the statements run one after the other (one
        writer); on PostgreSQL the second one's ``UPDATE`` waits for the first's row locks, then re-checks
        the condition on the rows as committed — a claimed row is pending and fresh, no longer due — and
        skips them. A crash between the claim and the publication leaves the messages pending with nothing
        queued: the stale-pending sweep (this same query, ``stale_pending_before``) publishes them again.
        """
        condition = or_(
            and_(t.c.state.in_([MessageState.RETRYING.value, MessageState.PARKED.value]), t.c.next_attempt_at <= now),
            and_(t.c.state == MessageState.PENDING.value, t.c.updated_at < stale_pending_before),
        )
        candidates = select(t.c.message_id).where(condition).order_by(t.c.next_attempt_at).limit(limit)
        async with self.engine.begin() as connection:
            rows = await connection.execute(
                update(t)
                # The condition again on the row itself, not only in the subquery: on PostgreSQL it is what is
                # re-checked on a row another scheduler claimed (and committed) while this statement waited.
                .where(t.c.message_id.in_(candidates.scalar_subquery()), condition)
                .values(state=MessageState.PENDING.value, next_attempt_at=None, updated_at=now)
                .returning(t.c.message_id, t.c.flow, t.c.envelope)
            )
            return [(r.message_id, r.flow, r.envelope) for r in rows]

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
