"""The scheduler puts due messages back on their queue without overwriting a settlement, once each.

Issue 13, defect 3: the scheduler used to read the due messages, publish them, and only then mark them
pending — unconditionally. A worker that took a republished copy and settled it (delivered, retrying …)
in between had its settlement overwritten, and the message sat "pending" with nothing queued until the
stale-pending sweep (300 s). Now the scheduler claims first (one conditional ``UPDATE … RETURNING``),
then publishes what it claimed: these tests put the settlement, or a second scheduler, exactly between
the two steps. They run on SQLite and PostgreSQL, with every database of the bridge on the server.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.bridge.delivery import Deliverer
from derbridge.bridge.tables import tracked_messages
from derbridge.bridge.tracking import MessageState, Settlement, Tracker
from derbridge.bridge.transport.sql import SqlTransport
from derbridge.bridge.worker import BridgeWorker
from derbridge.contracts.envelope import Envelope, SystemName
from derbridge.derms.adapters.tables import inbox as derms_inbox
from derbridge.infra.db import utcnow
from derbridge.infra.inbound import Inbox, inbound_router
from derbridge.infra.problems import install_problem_handlers
from derbridge.migrations.runner import SYSTEMS
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import BridgeSettings, Settings
from tests.support.messages import enrollment_sync
from tests.support.services import PostgresServer

TOKEN = "test-token"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def every_database(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings with the two systems *and the bridge* in fresh databases: SQLite files, then PostgreSQL."""
    data_dir = tmp_path / "var"
    if request.param == "sqlite":
        settings = Settings(data_dir=data_dir, api_token=TOKEN)
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        settings = Settings.model_validate(
            {"data_dir": data_dir, "api_token": TOKEN}
            | {system: {"database_url": server.create_database(system)} for system in SYSTEMS}
        )
    migrate_all(settings)
    return settings


@pytest.fixture
def runtimes(every_database: Settings) -> Iterator[list[Runtime]]:
    """Two runtimes on the same databases: what two bridge processes have (each its own engines)."""
    made = [Runtime(every_database), Runtime(every_database)]
    yield made
    for runtime in made:
        runtime.close_sync()


def target_app(runtime: Runtime) -> FastAPI:
    """The DERMS's inbound endpoint over its real inbox machinery, applying every enrollment sync."""

    async def apply(_connection: AsyncConnection, envelope: Envelope, _payload: Any) -> dict[str, Any]:
        return {"applied": envelope.business_key}

    inbox = Inbox(SystemName.DERMS, derms_inbox, handlers={"enrollment-sync.v1": apply})
    app = FastAPI()
    app.state.engine = runtime.async_engine("derms")
    app.state.api_token = TOKEN
    install_problem_handlers(app)
    app.include_router(inbound_router(inbox))
    root = FastAPI()
    root.mount("/derms/v1", app)
    return root


class WatchedTransport(SqlTransport):
    """The real SQL transport; it records what each publish carried and runs ``after_publish`` (the test's
    hook: what another worker does meanwhile) once the copies are on the queue."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published: list[str] = []
        self.after_publish: Callable[[], Awaitable[None]] | None = None

    async def publish(self, queue: str, messages: Sequence[tuple[str, bytes]]) -> None:
        self.published.extend(message_id for message_id, _ in messages)
        await super().publish(queue, messages)
        if self.after_publish is not None:
            await self.after_publish()


def make_worker(runtime: Runtime, client: httpx.AsyncClient) -> BridgeWorker:
    settings = BridgeSettings.model_validate({"batch_size": 100, "poll_seconds": 0.01})
    return BridgeWorker(
        WatchedTransport(runtime.async_engine("bridge"), lease_seconds=30, poll_seconds=0.01),
        Tracker(runtime.async_engine("bridge")),
        Deliverer({"derms": client}, TOKEN),
        [],
        settings,
    )


@pytest.fixture
async def workers(runtimes: list[Runtime]) -> AsyncIterator[list[BridgeWorker]]:
    """Two bridge workers, each on its own runtime, delivering to the DERMS's inbound endpoint."""
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=target_app(runtime)), base_url="http://target")
        for runtime in runtimes
    ]
    yield [make_worker(runtime, client) for runtime, client in zip(runtimes, clients, strict=True)]
    for client in clients:
        await client.aclose()
    for runtime in runtimes:
        await runtime.aclose()


async def due_for_retry(tracker: Tracker, count: int) -> list[str]:
    """``count`` messages that failed once and whose retry time has come (as the worker settles them)."""
    envelopes = [enrollment_sync(n) for n in range(count)]
    await tracker.see(envelopes)
    retry = Settlement(
        state=MessageState.RETRYING,
        outcome="retry",
        status_code=503,
        detail="the target restarted",
        problem=None,
        duration_ms=3,
        next_attempt_at=utcnow() - timedelta(seconds=1),
    )
    await tracker.settle([(e.message_id, 1, retry) for e in envelopes])
    return [e.message_id for e in envelopes]


async def states(tracker: Tracker, message_ids: list[str]) -> dict[str, str]:
    async with tracker.engine.connect() as connection:
        rows = await connection.execute(
            select(tracked_messages.c.message_id, tracked_messages.c.state).where(
                tracked_messages.c.message_id.in_(message_ids)
            )
        )
        return {row.message_id: row.state for row in rows}


async def test_a_settlement_made_while_the_scheduler_publishes_is_not_overwritten(
    workers: list[BridgeWorker],
) -> None:
    scheduler, consumer = workers
    message_ids = await due_for_retry(scheduler.tracker, 3)

    async def another_worker_delivers_the_copies() -> None:
        # Between the scheduler's publish and whatever it does next, a worker takes the republished copies,
        # delivers them and settles them: what happens when the target is back and the queue is fast.
        while await consumer.consume_once():
            await consumer.wait_in_flight()

    assert isinstance(scheduler.transport, WatchedTransport)
    scheduler.transport.after_publish = another_worker_delivers_the_copies
    assert await scheduler.schedule_once() == 3
    assert await states(scheduler.tracker, message_ids) == dict.fromkeys(message_ids, MessageState.DELIVERED.value)
    # Nothing is left to schedule: a delivered message is not due, and no copy is waiting on the queue.
    scheduler.transport.after_publish = None
    assert await scheduler.schedule_once() == 0
    assert await scheduler.transport.receive(list(scheduler.queues), 100, 0) == []


async def test_a_message_settled_again_before_the_claim_is_not_claimed(workers: list[BridgeWorker]) -> None:
    scheduler, _ = workers
    message_ids = await due_for_retry(scheduler.tracker, 2)
    # One of them is settled (delivered by a copy still on its way) before the scheduler looks.
    delivered = Settlement(MessageState.DELIVERED, "delivered", 200, None, None, 2)
    await scheduler.tracker.settle([(message_ids[0], 2, delivered)])
    assert await scheduler.schedule_once() == 1
    assert isinstance(scheduler.transport, WatchedTransport)
    assert scheduler.transport.published == [message_ids[1]]
    assert await states(scheduler.tracker, message_ids) == {
        message_ids[0]: MessageState.DELIVERED.value,
        message_ids[1]: MessageState.PENDING.value,
    }


async def test_two_schedulers_at_once_publish_each_due_message_once(workers: list[BridgeWorker]) -> None:
    first, second = workers
    message_ids = await due_for_retry(first.tracker, 20)
    in_publish = asyncio.Event()
    go_on = asyncio.Event()

    async def hold() -> None:
        in_publish.set()
        await go_on.wait()

    assert isinstance(first.transport, WatchedTransport)
    assert isinstance(second.transport, WatchedTransport)
    first.transport.after_publish = hold  # the first scheduler stops right after its publish …
    first_run = asyncio.create_task(first.schedule_once())
    await asyncio.wait_for(in_publish.wait(), timeout=60)
    second_count = await second.schedule_once()  # … while the second one runs a whole turn
    go_on.set()
    first_count = await asyncio.wait_for(first_run, timeout=60)

    published = Counter(first.transport.published + second.transport.published)
    assert published == Counter(message_ids), "every due message is published exactly once"
    assert first_count + second_count == 20
    assert await states(first.tracker, message_ids) == dict.fromkeys(message_ids, MessageState.PENDING.value)


async def test_claims_running_truly_at_once_never_share_a_message(runtimes: list[Runtime]) -> None:
    # No gate here: two trackers on their own engines (on PostgreSQL, two connections whose statements
    # really overlap) claim round after round until nothing is due; every message is claimed once.
    first, second = (Tracker(runtime.async_engine("bridge")) for runtime in runtimes)
    message_ids = await due_for_retry(first, 120)
    claimed: list[str] = []
    try:
        for _ in range(20):
            now = utcnow()
            stale = now - timedelta(seconds=300)
            rounds = await asyncio.gather(first.claim_due(now, 50, stale), second.claim_due(now, 50, stale))
            batch = [message_id for claims in rounds for message_id, _, _ in claims]
            claimed.extend(batch)
            if not batch:
                break
    finally:
        for runtime in runtimes:
            await runtime.aclose()
    assert Counter(claimed) == Counter(message_ids)
