"""The outbox and the inbox: the tables that make each system's side of a message exactly-once.

- **Outbox**: a service writes the messages its change causes into its own database, in the same
  transaction as the change. The relay publishes them later and marks them published only after the
  transport confirmed, so a message exists if and only if its change committed.
- **Inbox**: a target applies a message and records its ``message_id`` in one transaction, so a message
  delivered twice takes effect once; the stored answer is returned to the duplicate.

Both systems add the same two tables to their own metadata with :func:`add_messaging_tables`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Integer, MetaData, String, Table, Text, event, insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.envelope import Envelope
from derbridge.infra.db import BigIntPK, UTCDateTime, utcnow


def add_messaging_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Add ``outbox`` and ``inbox`` to a system's ``metadata``; returns them."""
    outbox = Table(
        "outbox",
        metadata,
        # ``position`` orders publication: an auto-increment, so rows come out in commit order per writer.
        Column("position", BigIntPK, primary_key=True, autoincrement=True),
        Column("message_id", String(64), nullable=False, unique=True),
        Column("flow", String(40), nullable=False),
        Column("type", String(64), nullable=False),
        Column("envelope", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Column("published_at", UTCDateTime),
        Index(
            "ix_outbox_unpublished",
            "position",
            sqlite_where=Column("published_at").is_(None),
            postgresql_where=Column("published_at").is_(None),
        ),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("message_id", String(64), primary_key=True),
        Column("type", String(64), nullable=False),
        Column("source", String(64), nullable=False),
        Column("received_at", UTCDateTime, nullable=False),
        Column("status_code", Integer),
        Column("response", JSON),
    )
    return outbox, inbox


def serialize(envelope: Envelope) -> str:
    """The envelope as it travels: compact JSON."""
    return envelope.model_dump_json()


def deserialize(body: str | bytes) -> Envelope:
    """An envelope from the wire (raises pydantic.ValidationError when it is not one)."""
    return Envelope.model_validate_json(body)


def outbox_rows(envelopes: Sequence[Envelope], now: datetime | None = None) -> list[dict[str, Any]]:
    """Outbox rows for ``envelopes`` (what :func:`write_outbox` inserts; bulk writers use it directly)."""
    created = now or utcnow()
    return [
        {
            "message_id": e.message_id,
            "flow": e.flow.value,
            "type": e.type,
            "envelope": serialize(e),
            "created_at": created,
            "published_at": None,
        }
        for e in envelopes
    ]


async def write_outbox(connection: AsyncConnection, outbox: Table, envelopes: Sequence[Envelope]) -> None:
    """Write ``envelopes`` to ``outbox`` inside the caller's transaction (the one making the change)."""
    if envelopes:
        await connection.execute(insert(outbox), outbox_rows(envelopes))
        # Tells this process's relays, once the transaction commits (see :func:`watch_outbox`).
        connection.info[_WRITTEN] = True


_WRITTEN = "derbridge.outbox_written"
_watchers: weakref.WeakKeyDictionary[Engine, weakref.WeakSet[asyncio.Event]] = weakref.WeakKeyDictionary()


def watch_outbox(engine: AsyncEngine, signal: asyncio.Event) -> None:
    """Set ``signal`` each time a transaction of ``engine`` that wrote the outbox (:func:`write_outbox`)
    commits, in this process: the relay waits on it instead of sleeping its whole poll interval, so an
    embedded system carries a message on at once. Other processes' writes are still found by polling.
    The engine keeps ``signal`` only as long as its owner does (a weak reference)."""
    sync = engine.sync_engine
    watchers = _watchers.get(sync)
    if watchers is None:
        watchers = _watchers[sync] = weakref.WeakSet()
        event.listen(sync, "commit", _committed(watchers))
        event.listen(sync, "rollback", _rolled_back)
    watchers.add(signal)


def _committed(watchers: weakref.WeakSet[asyncio.Event]) -> Any:
    def committed(connection: Connection) -> None:
        if connection.info.pop(_WRITTEN, False):
            for signal in list(watchers):
                signal.set()

    return committed


def _rolled_back(connection: Connection) -> None:
    connection.info.pop(_WRITTEN, None)
