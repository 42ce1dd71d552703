"""The ``sql`` transport: a queue table in the bridge's own database.

Receivers lease rows (``lease_owner``, ``lease_until``): a lease that expires — its receiver crashed —
makes the row visible again. On PostgreSQL the lease is taken with ``FOR UPDATE SKIP LOCKED``, so any
number of bridge workers share the work without blocking each other; on SQLite the database serialises
writers, which gives the same exclusivity inside one host. Acknowledging deletes the row.

Within one process, ``publish`` wakes waiting receivers at once; across processes they poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.bridge.tables import queue_messages as q
from derbridge.bridge.transport.base import Delivery, Transport, TransportError
from derbridge.infra.db import utcnow
from derbridge.infra.idlists import id_list
from derbridge.infra.ids import new_id
from derbridge.infra.upsert import frozen, insert_for


def _publish_statement(dialect_name: str) -> Any:
    """Enqueue a message unless the queue already holds it (a relay repeating a publish)."""
    columns = ("queue", "message_id", "body", "enqueued_at", "deliveries")
    return (
        insert_for(dialect_name, q)
        .values({name: bindparam(name) for name in columns})
        .on_conflict_do_nothing(index_elements=[q.c.queue, q.c.message_id])
    )


class SqlTransport(Transport):
    """Queues in a table of the bridge database (SQLite or PostgreSQL)."""

    name = "sql"

    def __init__(self, engine: AsyncEngine, *, lease_seconds: float = 60.0, poll_seconds: float = 0.2) -> None:
        self._engine = engine
        self._lease = timedelta(seconds=lease_seconds)
        self._poll = poll_seconds
        self._owner = new_id()
        self._published = asyncio.Event()
        self._skip_locked = engine.dialect.name == "postgresql"

    async def start(self, queues: Sequence[str]) -> None:
        # Queues are rows' labels: nothing to declare. Check the table answers, to fail early.
        try:
            async with self._engine.connect() as connection:
                await connection.execute(select(q.c.id).limit(1))
        except DBAPIError as error:
            raise TransportError(f"the queue table does not answer: {error}") from error

    async def close(self) -> None:
        # The engine belongs to whoever made it (the bridge shares it with tracking); nothing of ours to
        # close. Rows we still lease come back when the lease expires, or at once through release().
        return

    async def publish(self, queue: str, messages: Sequence[tuple[str, bytes]]) -> None:
        if not messages:
            return
        now = utcnow()
        rows = [
            {"queue": queue, "message_id": message_id, "body": body, "enqueued_at": now, "deliveries": 0}
            for message_id, body in messages
        ]
        try:
            async with self._engine.begin() as connection:
                await connection.execute(frozen(connection.dialect, ("queue-publish",), _publish_statement), rows)
        except DBAPIError as error:
            raise TransportError(f"publishing to {queue} failed: {error}") from error
        self._published.set()

    async def receive(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            self._published.clear()
            deliveries = await self._take(queues, max_messages)
            remaining = deadline - time.monotonic()
            if deliveries or remaining <= 0:
                return deliveries
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), timeout=min(self._poll, remaining))

    async def _take(self, queues: Sequence[str], max_messages: int) -> list[Delivery]:
        now = utcnow()
        candidates = (
            select(q.c.id)
            .where(q.c.queue.in_(list(queues)), or_(q.c.lease_until.is_(None), q.c.lease_until < now))
            .order_by(q.c.id)
            .limit(max_messages)
        )
        if self._skip_locked:
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            update(q)
            .where(q.c.id.in_(candidates.scalar_subquery()))
            .values(lease_owner=self._owner, lease_until=now + self._lease, deliveries=q.c.deliveries + 1)
            .returning(q.c.id, q.c.queue, q.c.message_id, q.c.body, q.c.deliveries)
        )
        try:
            async with self._engine.begin() as connection:
                rows = (await connection.execute(statement)).all()
        except DBAPIError as error:
            raise TransportError(f"receiving failed: {error}") from error
        return [
            Delivery(
                queue=row.queue,
                message_id=row.message_id,
                body=bytes(row.body),
                delivery_count=row.deliveries,
                handle=row.id,
            )
            for row in sorted(rows, key=lambda r: r.id)
        ]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle(deliveries, delete(q))

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle(deliveries, update(q).values(lease_owner=None, lease_until=None))
        self._published.set()

    async def _settle(self, deliveries: Sequence[Delivery], statement: Any) -> None:
        if not deliveries:
            return
        ids = [d.handle for d in deliveries]
        # Only rows we still hold: if our lease expired and another receiver took a row, it is theirs now.
        try:
            async with self._engine.begin() as connection:
                # The ids as one parameter (an array, or a JSON array on SQLite): the same short statement
                # text every time, where an IN list made a new one per batch size for the driver to parse.
                await connection.execute(
                    statement.where(id_list(connection, q.c.id, ids, "ids"), q.c.lease_owner == self._owner)
                )
        except DBAPIError as error:
            raise TransportError(f"settling deliveries failed: {error}") from error

    async def depth(self, queue: str) -> int:
        try:
            async with self._engine.connect() as connection:
                count = await connection.scalar(select(func.count()).select_from(q).where(q.c.queue == queue))
        except DBAPIError as error:
            # Like every other operation: an unreachable database is a TransportError (the worker's measure
            # loop backs off on it), not a driver exception escaping the port.
            raise TransportError(f"reading the depth of {queue} failed: {error}") from error
        return int(count or 0)
