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
import json
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    column,
    event,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.envelope import Envelope
from derbridge.infra.db import BigIntPK, UTCDateTime, utcnow
from derbridge.infra.upsert import insert_for


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


def insert_rows(
    dialect_name: str, table: Table, rows: Sequence[dict[str, Any]]
) -> tuple[Any, list[dict[str, Any]] | None]:
    """An INSERT of ``rows`` (dicts with the same keys, at least one) into ``table``, and the parameters to
    execute it with; it offers ``on_conflict_do_nothing`` and ``returning`` like :func:`insert_for`'s.

    On PostgreSQL: ``INSERT … SELECT … FROM jsonb_to_recordset(:rows)``, the rows as one JSON parameter. The
    executemany form (SQLAlchemy's "insertmanyvalues": a multi-row ``VALUES`` with a parameter per row and
    column) made a statement text of a batch's placeholders at every call, which psycopg parses anew each
    time (it caches only short ones) — most of the cost of writing a batch of small messages; array
    parameters instead are dumped escaping each quote of an envelope in Python, where ``json.dumps`` does
    it in C. Elsewhere: executemany (SQLite binds the rows in C).
    """
    if dialect_name != "postgresql":
        return insert_for(dialect_name, table), list(rows)
    names = list(rows[0])
    data = json.dumps([{name: _jsonable(row[name]) for name in names} for row in rows])
    source = (
        func.jsonb_to_recordset(cast(bindparam("rows", data, type_=Text()), JSONB))
        .table_valued(*(column(name, table.c[name].type) for name in names))
        .render_derived("r", with_types=True)
    )
    return insert_for(dialect_name, table).from_select(names, select(*(source.c[name] for name in names))), None


def _jsonable(value: Any) -> Any:
    """``value`` as JSON carries it to PostgreSQL: a time as ISO 8601 in UTC (the column reads it back)."""
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


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
        # One statement for any number of rows (see :func:`insert_rows`): a batch handler writes a hundred.
        statement, parameters = insert_rows(connection.dialect.name, outbox, outbox_rows(envelopes))
        await connection.execute(statement, parameters)
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
