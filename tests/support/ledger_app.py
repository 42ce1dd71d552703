"""A target system for crash tests: applies enrollment-sync messages through the real inbox machinery and
counts every effect in a ledger database that lives outside the bridge's processes.

Run it as ``python -m uvicorn --factory tests.support.ledger_app:create_app`` with ``LEDGER_URL`` (a
database URL) and ``LEDGER_FAILURE_RATE`` (share of calls answered 500, to exercise retries while the
bridge is killed).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, create_engine
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts.envelope import Envelope, SystemName
from derbridge.infra.db import create_async_db_engine, sync_url
from derbridge.infra.inbound import Inbox, inbound_router
from derbridge.infra.logging import configure_logging
from derbridge.infra.outbox import add_messaging_tables
from derbridge.infra.problems import install_problem_handlers
from derbridge.infra.upsert import insert_for

metadata = MetaData()
_, inbox_table = add_messaging_tables(metadata)
effects = Table(
    "effects",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("applied", Integer, nullable=False),
)

FAILURE_RATE = float(os.environ.get("LEDGER_FAILURE_RATE", "0"))


async def apply(connection: AsyncConnection, envelope: Envelope, _payload: Any) -> dict[str, Any]:
    if FAILURE_RATE and random.random() < FAILURE_RATE:  # test noise, not security
        raise RuntimeError("ledger target: scripted transient failure")
    # Counting, not just inserting: a second application of one message would show as applied = 2.
    statement = insert_for(connection.dialect.name, effects).values(message_id=envelope.message_id, applied=1)
    await connection.execute(
        statement.on_conflict_do_update(index_elements=[effects.c.message_id], set_={"applied": effects.c.applied + 1})
    )
    return {"ledger": "ok"}


async def apply_many(connection: AsyncConnection, messages: Sequence[tuple[Envelope, Any]]) -> list[dict[str, Any]]:
    """The same effect for a run of messages, set-based, so that the crash test covers the batch path too."""
    # A scripted failure hits a run as it would hit one of its messages: the inbox then applies them one by one.
    if FAILURE_RATE and random.random() < 1 - (1 - FAILURE_RATE) ** len(messages):  # test noise, not security
        raise RuntimeError("ledger target: scripted transient failure of a run")
    statement = insert_for(connection.dialect.name, effects).values(message_id=bindparam("message_id"), applied=1)
    await connection.execute(
        statement.on_conflict_do_update(index_elements=[effects.c.message_id], set_={"applied": effects.c.applied + 1}),
        [{"message_id": envelope.message_id} for envelope, _ in messages],
    )
    return [{"ledger": "ok"} for _ in messages]


inbox = Inbox(
    SystemName.DERMS,
    inbox_table,
    handlers={"enrollment-sync.v1": apply},
    batch_handlers={"enrollment-sync.v1": apply_many},
)


def create_ledger_tables(url: str) -> None:
    """Create the ledger's tables (the test does it once, before starting the server)."""
    engine = create_engine(sync_url(url))
    metadata.create_all(engine)
    engine.dispose()


def create_app() -> FastAPI:
    """The ledger target as served (``uvicorn --factory``): built when the server starts, not at import, so
    that a test importing the tables opens no database and leaves the test process's logging alone."""
    # JSON logs at WARNING: the scripted failures are logged with their traceback, and structlog's default
    # (rich, with local variables) would make the target slower than the bridge under test.
    configure_logging("WARNING", json=True)
    system = FastAPI()
    system.state.engine = create_async_db_engine(os.environ["LEDGER_URL"])
    system.state.api_token = os.environ.get("DERBRIDGE_API_TOKEN", "test-token")
    install_problem_handlers(system)
    system.include_router(inbound_router(inbox))
    app = FastAPI()
    app.mount("/derms/v1", system)
    return app
