"""The relay: publishes a system's outbox rows to the transport, and marks them published only after the
transport confirmed them.

A crash between the confirm and the mark publishes the rows again on restart: a duplicate, which the
bridge's tracking and the target's inbox absorb. Never a loss. On PostgreSQL rows are taken with
``FOR UPDATE SKIP LOCKED`` so several relays share one outbox; on SQLite one relay per database file.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.bridge.transport.base import Transport, queue_name
from derbridge.infra.db import utcnow
from derbridge.infra.idlists import id_list
from derbridge.infra.metrics import OUTBOX_PUBLISHED


class Relay:
    """Moves one system's outbox to the transport."""

    def __init__(
        self, system: str, engine: AsyncEngine, outbox: Table, transport: Transport, *, prefix: str, batch: int
    ) -> None:
        self.system = system
        self.engine = engine
        self._engine = engine
        self._outbox = outbox
        self._transport = transport
        self._prefix = prefix
        self._batch = batch

    async def publish_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        o = self._outbox
        query = (
            select(o.c.position, o.c.message_id, o.c.flow, o.c.envelope)
            .where(o.c.published_at.is_(None))
            .order_by(o.c.position)
            .limit(self._batch)
        )
        if self._engine.dialect.name == "postgresql":
            async with self._engine.begin() as connection:
                rows = (await connection.execute(query.with_for_update(skip_locked=True))).all()
                await self._publish(rows)
                await connection.execute(update(o).where(self._taken(connection, rows)).values(published_at=utcnow()))
        else:
            async with self._engine.connect() as connection:
                rows = (await connection.execute(query)).all()
            await self._publish(rows)
            if rows:
                async with self._engine.begin() as connection:
                    await connection.execute(
                        update(o).where(self._taken(connection, rows)).values(published_at=utcnow())
                    )
        OUTBOX_PUBLISHED.labels(self.system).inc(len(rows))
        return len(rows)

    def _taken(self, connection: AsyncConnection, rows: Sequence[Row[Any]]) -> ColumnElement[bool]:
        """The condition naming ``rows`` by position, bound as one parameter: a thousand positions in an IN
        list were a long statement text for the driver to parse (and on SQLite to expand) at every batch."""
        return id_list(connection, self._outbox.c.position, [r.position for r in rows], "positions")

    async def _publish(self, rows: Sequence[Row[Any]]) -> None:
        by_flow: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for row in rows:
            by_flow[row.flow].append((row.message_id, row.envelope.encode()))
        for flow, messages in by_flow.items():
            await self._transport.publish(queue_name(self._prefix, flow), messages)
