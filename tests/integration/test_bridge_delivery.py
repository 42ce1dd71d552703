"""The bridge end to end against a target's real inbound endpoint: every outcome class of delivery.

Source: Asset Hub's outbox. Path: relay → sql transport → worker → target ``POST /derms/v1/messages``
served by the real inbox machinery (:mod:`derbridge.infra.inbound`) over the DERMS database. The target's
handler is scripted per test (fail, refuse, lack a prerequisite); effects are counted in the inbox table,
which holds one row per message applied.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters.tables import outbox as assethub_outbox
from derbridge.bridge import operations as ops
from derbridge.bridge.delivery import Deliverer
from derbridge.bridge.relay import Relay
from derbridge.bridge.tables import delivery_attempts, tracked_messages
from derbridge.bridge.tracking import MessageState, Tracker
from derbridge.bridge.transport.base import queue_name
from derbridge.bridge.transport.sql import SqlTransport
from derbridge.bridge.worker import BridgeWorker
from derbridge.contracts.enrollment_sync import EnrollmentSync
from derbridge.contracts.envelope import Envelope, Flow, SystemName
from derbridge.derms.adapters.tables import inbox as derms_inbox
from derbridge.errors import Conflict, MissingPrerequisite, NotFound
from derbridge.infra.inbound import Inbox, inbound_router
from derbridge.infra.logging import configure_logging
from derbridge.infra.outbox import serialize, write_outbox
from derbridge.infra.problems import ProblemError, install_problem_handlers
from derbridge.runtime import Runtime
from derbridge.settings import BridgeSettings, ParkPolicy, RetryPolicy
from tests.support.embedded import free_port
from tests.support.messages import enrollment_sync

TOKEN = "test-token"


@dataclass
class Script:
    """How the target behaves, changed by the test while the bridge runs."""

    failures_left: dict[str, int] = field(default_factory=dict)
    missing_accounts: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    calls: int = 0


def target_app(runtime: Runtime, script: Script) -> FastAPI:
    async def apply(_connection: AsyncConnection, envelope: Envelope, payload: Any) -> dict[str, Any]:
        script.calls += 1
        assert isinstance(payload, EnrollmentSync)
        left = script.failures_left.get(envelope.message_id, 0)
        if left:
            script.failures_left[envelope.message_id] = left - 1
            raise RuntimeError("target failure (scripted)")
        if payload.subscription.cis_account_id in script.missing_accounts:
            raise MissingPrerequisite(
                f"cis-account:{payload.subscription.cis_account_id}", "the customer is not in the DERMS yet"
            )
        if envelope.message_id in script.refused:
            raise ProblemError(422, "refused", "Refused", "the target refuses this message (scripted)")
        return {"applied": payload.subscription.subscription_id}

    inbox = Inbox(SystemName.DERMS, derms_inbox, handlers={"enrollment-sync.v1": apply})
    app = FastAPI()
    app.state.engine = runtime.async_engine("derms")
    app.state.api_token = TOKEN
    install_problem_handlers(app)
    app.include_router(inbound_router(inbox))
    root = FastAPI()
    root.mount("/derms/v1", app)
    return root


def bridge_settings(**changes: Any) -> BridgeSettings:
    base = {
        "retry": RetryPolicy(base_seconds=0.01, cap_seconds=0.05, max_attempts=10),
        "park": ParkPolicy(base_seconds=3600, cap_seconds=3600),
        "batch_size": 50,
        "poll_seconds": 0.01,
    }
    return BridgeSettings.model_validate(base | changes)


def make_worker(runtime: Runtime, client: httpx.AsyncClient, settings: BridgeSettings) -> BridgeWorker:
    transport = SqlTransport(runtime.async_engine("bridge"), lease_seconds=5, poll_seconds=0.01)
    relay = Relay(
        "assethub", runtime.async_engine("assethub"), assethub_outbox, transport, prefix="derbridge", batch=50
    )
    return BridgeWorker(
        transport, Tracker(runtime.async_engine("bridge")), Deliverer({"derms": client}, TOKEN), [relay], settings
    )


async def drain(worker: BridgeWorker, done: Callable[[], Awaitable[bool]], timeout: float = 20) -> None:
    """Run the worker's steps until ``done()`` (bounded)."""
    deadline = time.monotonic() + timeout
    while not await done():
        assert time.monotonic() < deadline, "the bridge did not settle in time"
        await worker.relay_once()
        await worker.consume_once()
        await worker.wait_in_flight()
        await worker.schedule_once()
        await asyncio.sleep(0.01)


async def state_of(runtime: Runtime, message_id: str) -> str | None:
    async with runtime.async_engine("bridge").connect() as connection:
        return await connection.scalar(
            select(tracked_messages.c.state).where(tracked_messages.c.message_id == message_id)
        )


async def applied(runtime: Runtime) -> int:
    async with runtime.async_engine("derms").connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(derms_inbox)) or 0)


async def send(runtime: Runtime, *envelopes: Envelope) -> None:
    async with runtime.async_engine("assethub").begin() as connection:
        await write_outbox(connection, assethub_outbox, envelopes)


@pytest.fixture
async def script() -> Script:
    return Script()


@pytest.fixture
async def in_process(runtime: Runtime, script: Script) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=target_app(runtime, script), raise_app_exceptions=False),
        base_url="http://target",
    ) as client:
        yield client
    await runtime.aclose()


async def test_messages_are_delivered_once_and_the_outbox_is_marked_published(
    runtime: Runtime, in_process: httpx.AsyncClient
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    envelopes = [enrollment_sync(n) for n in range(30)]
    await send(runtime, *envelopes)

    async def all_delivered() -> bool:
        return all([await state_of(runtime, e.message_id) == "delivered" for e in envelopes])

    await drain(worker, all_delivered)
    assert await applied(runtime) == 30
    async with runtime.async_engine("assethub").connect() as connection:
        unpublished = await connection.scalar(
            select(func.count()).select_from(assethub_outbox).where(assethub_outbox.c.published_at.is_(None))
        )
    assert unpublished == 0
    assert await worker.transport.depth(queue_name("derbridge", "enrollment-sync")) == 0


async def test_a_target_answering_5xx_then_2xx_is_delivered_after_retries(
    runtime: Runtime, in_process: httpx.AsyncClient, script: Script
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    message = enrollment_sync(1)
    script.failures_left[message.message_id] = 3
    await send(runtime, message)

    async def delivered() -> bool:
        return await state_of(runtime, message.message_id) == "delivered"

    await drain(worker, delivered)
    journey = await ops.show_message(runtime.async_engine("bridge"), message.message_id)
    assert [a.outcome for a in journey.journey] == ["retry", "retry", "retry", "delivered"]
    assert [a.status_code for a in journey.journey] == [500, 500, 500, 200]
    assert journey.attempts == 4
    assert await applied(runtime) == 1


async def test_retries_give_up_as_dead_after_the_maximum_and_a_replay_delivers_once_fixed(
    runtime: Runtime, in_process: httpx.AsyncClient, script: Script
) -> None:
    worker = make_worker(
        runtime, in_process, bridge_settings(retry=RetryPolicy(base_seconds=0.01, cap_seconds=0.02, max_attempts=3))
    )
    message = enrollment_sync(2)
    script.failures_left[message.message_id] = 100
    await send(runtime, message)

    async def dead() -> bool:
        return await state_of(runtime, message.message_id) == "dead"

    await drain(worker, dead)
    journey = await ops.show_message(runtime.async_engine("bridge"), message.message_id)
    assert journey.attempts == 3
    assert "gave up after 3 attempts" in (journey.journey[-1].detail or "")

    script.failures_left.clear()  # the cause is fixed
    await ops.replay_message(worker.tracker, worker.transport, "derbridge", message.message_id)

    async def delivered() -> bool:
        return await state_of(runtime, message.message_id) == "delivered"

    await drain(worker, delivered)
    assert await applied(runtime) == 1


async def test_a_permanent_refusal_is_dead_with_the_problem_and_replayable_after_the_fix(
    runtime: Runtime, in_process: httpx.AsyncClient, script: Script
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    message = enrollment_sync(3)
    script.refused.add(message.message_id)
    await send(runtime, message)

    async def dead() -> bool:
        return await state_of(runtime, message.message_id) == "dead"

    await drain(worker, dead)
    journey = await ops.show_message(runtime.async_engine("bridge"), message.message_id)
    assert journey.attempts == 1  # a refusal is not retried
    assert journey.last_status == 422
    assert journey.last_problem is not None
    assert journey.last_problem["detail"] == "the target refuses this message (scripted)"
    assert await applied(runtime) == 0

    with pytest.raises(NotFound):  # only dead or parked messages are replayed
        await ops.replay_message(worker.tracker, worker.transport, "derbridge", enrollment_sync(99).message_id)

    script.refused.clear()
    await ops.replay_message(worker.tracker, worker.transport, "derbridge", message.message_id)

    async def delivered() -> bool:
        return await state_of(runtime, message.message_id) == "delivered"

    await drain(worker, delivered)
    journey = await ops.show_message(runtime.async_engine("bridge"), message.message_id)
    assert [a.outcome for a in journey.journey] == ["dead", "replayed", "delivered"]
    with pytest.raises(Conflict):
        await ops.replay_message(worker.tracker, worker.transport, "derbridge", message.message_id)


async def test_a_missing_prerequisite_parks_the_message_until_it_arrives_then_it_is_delivered_without_a_person(
    runtime: Runtime, in_process: httpx.AsyncClient, script: Script
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    message = enrollment_sync(4, account="A-LATE")
    script.missing_accounts.add("A-LATE")
    await send(runtime, message)

    async def parked() -> bool:
        return await state_of(runtime, message.message_id) == "parked"

    await drain(worker, parked)
    summary = (
        await ops.list_messages(
            runtime.async_engine("bridge"), ops.MessageFilter(state=MessageState.PARKED), limit=10, after=None
        )
    )[0]
    assert [(m.message_id, m.wake_on) for m in summary] == [(message.message_id, "cis-account:A-LATE")]
    for _ in range(5):  # while the customer is missing, nothing happens: no busy retrying
        await worker.consume_once()
        await worker.wait_in_flight()
        await worker.schedule_once()
    assert await state_of(runtime, message.message_id) == "parked"
    assert await applied(runtime) == 0

    script.missing_accounts.clear()  # the CIS import brings the customer…
    assert await worker.tracker.wake({"cis-account:A-LATE", "cis-account:OTHER"}) == 1  # …and announces it

    async def delivered() -> bool:
        return await state_of(runtime, message.message_id) == "delivered"

    await drain(worker, delivered)
    assert await applied(runtime) == 1


async def test_a_duplicate_delivery_has_one_effect(
    runtime: Runtime, in_process: httpx.AsyncClient, script: Script
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    message = enrollment_sync(5)
    await send(runtime, message)

    async def delivered() -> bool:
        return await state_of(runtime, message.message_id) == "delivered"

    await drain(worker, delivered)
    # The same message again: straight to the target twice (a redelivery the bridge did not see) …
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Idempotency-Key": message.message_id,
        "Content-Type": "application/json",
    }
    again = await in_process.post("/derms/v1/messages", content=serialize(message), headers=headers)
    assert again.status_code == 200
    assert again.json() == {
        "status": "already-applied",
        "message_id": message.message_id,
        "result": {"applied": "E0000005"},
    }
    # … and through the queue (a relay that crashed before marking its outbox row published).
    await worker.transport.publish(
        queue_name("derbridge", "enrollment-sync"), [(message.message_id, serialize(message).encode())]
    )
    await worker.consume_once()
    await worker.wait_in_flight()
    assert await applied(runtime) == 1
    assert script.calls == 1
    async with runtime.async_engine("bridge").connect() as connection:
        attempts = await connection.scalar(select(func.count()).select_from(delivery_attempts))
    assert attempts == 1  # the queued duplicate was recognised by tracking and not delivered again


async def test_a_message_that_breaks_its_contract_is_dead_without_reaching_the_target(
    runtime: Runtime, in_process: httpx.AsyncClient, script: Script
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    good = enrollment_sync(6)
    broken = good.model_copy(update={"payload": {**good.payload, "change": "EXPLODED"}})
    await send(runtime, broken)

    async def dead() -> bool:
        return await state_of(runtime, broken.message_id) == "dead"

    await drain(worker, dead)
    journey = await ops.show_message(runtime.async_engine("bridge"), broken.message_id)
    assert journey.last_problem is not None
    assert journey.last_problem["errors"][0]["field"] == "payload.change"
    assert script.calls == 0


async def test_an_unreadable_queue_copy_is_kept_as_dead_never_dropped(
    runtime: Runtime, in_process: httpx.AsyncClient
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    await worker.transport.publish(queue_name("derbridge", "event-outcome"), [("garbage-1", b"{not json")])
    await worker.consume_once()
    await worker.wait_in_flight()
    journey = await ops.show_message(runtime.async_engine("bridge"), "garbage-1")
    assert journey.state is MessageState.DEAD
    assert journey.flow == "event-outcome"
    assert journey.envelope == "{not json"
    assert await worker.transport.depth(queue_name("derbridge", "event-outcome")) == 0


async def test_a_target_down_for_a_while_gets_the_message_when_it_is_back(runtime: Runtime, script: Script) -> None:
    port = free_port()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        worker = make_worker(runtime, client, bridge_settings())
        message = enrollment_sync(7)
        await send(runtime, message)

        async def retrying() -> bool:
            return await state_of(runtime, message.message_id) == "retrying"

        await drain(worker, retrying)  # nobody listens: connection refused, retried
        server = uvicorn.Server(
            uvicorn.Config(
                target_app(runtime, script), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:

            async def delivered() -> bool:
                return await state_of(runtime, message.message_id) == "delivered"

            await drain(worker, delivered)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    journey = await ops.show_message(runtime.async_engine("bridge"), message.message_id)
    assert journey.journey[0].outcome == "retry"
    assert journey.journey[0].status_code is None
    assert "ConnectError" in (journey.journey[0].detail or "")
    assert journey.journey[-1].outcome == "delivered"
    assert await applied(runtime) == 1
    await runtime.aclose()


async def test_stats_count_every_flow_and_state(
    runtime: Runtime, in_process: httpx.AsyncClient, script: Script
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    refused = enrollment_sync(8)
    script.refused.add(refused.message_id)
    await send(runtime, refused, enrollment_sync(9), enrollment_sync(10))

    async def settled() -> bool:
        stats = await ops.message_stats(worker.tracker)
        return stats["enrollment-sync"]["delivered"] + stats["enrollment-sync"]["dead"] == 3

    await drain(worker, settled)
    stats = await ops.message_stats(worker.tracker)
    assert stats["enrollment-sync"] == {"pending": 0, "delivered": 2, "retrying": 0, "parked": 0, "dead": 1}
    assert stats["event-outcome"] == {"pending": 0, "delivered": 0, "retrying": 0, "parked": 0, "dead": 0}
    assert len(stats) == len(Flow)  # every flow listed, even with nothing in it


async def test_the_worker_logs_one_line_per_batch_at_info_and_each_attempt_at_debug(
    runtime: Runtime, in_process: httpx.AsyncClient
) -> None:
    worker = make_worker(runtime, in_process, bridge_settings())
    envelopes = [enrollment_sync(n) for n in range(30)]
    await send(runtime, *envelopes)

    async def all_delivered() -> bool:
        return all([await state_of(runtime, e.message_id) == "delivered" for e in envelopes])

    configure_logging("DEBUG", json=True)
    try:
        with structlog.testing.capture_logs() as logs:
            await drain(worker, all_delivered)
    finally:
        configure_logging("WARNING", json=True)
    batches = [entry for entry in logs if entry["event"] == "batch settled"]
    attempts = [entry for entry in logs if entry["event"] == "delivery attempt"]
    assert {entry["log_level"] for entry in batches} == {"info"}
    assert {entry["log_level"] for entry in attempts} == {"debug"}
    assert len(attempts) == 30
    assert len(batches) < len(attempts)
    assert sum(entry["settled"]["enrollment-sync"]["delivered"] for entry in batches) == 30
    assert not [entry for entry in logs if entry["log_level"] == "info" and entry not in batches]
