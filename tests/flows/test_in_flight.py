"""What ``derbridge wait idle`` reads (:func:`derbridge.bridge.operations.in_flight`), stepped through each
place a message can be: in an outbox, in the transport between relay and worker, delivered with its reply
still in the target's outbox, parked (settled, or woken and due), and finally carried."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import update

from derbridge.assethub.adapters.tables import outbox as assethub_outbox
from derbridge.bridge.operations import InFlight, in_flight
from derbridge.bridge.tables import tracked_messages
from derbridge.bridge.tracking import MessageState
from derbridge.derms.adapters.tables import outbox as derms_outbox
from derbridge.infra.db import utcnow

if TYPE_CHECKING:  # imported by pytest_plugins below: importing it first would stop pytest rewriting its asserts
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


async def now_in_flight(system: System) -> InFlight:
    runtime = system.runtime
    outboxes = {
        "assethub": (runtime.async_engine("assethub"), assethub_outbox),
        "derms": (runtime.async_engine("derms"), derms_outbox),
    }
    return await in_flight(runtime.async_engine("bridge"), outboxes)


async def test_a_message_is_in_flight_from_the_outbox_until_its_reply_is_carried_too(system: System) -> None:
    assert (await now_in_flight(system)).idle  # nothing sent yet

    created = await system.client.post(
        "/assethub/v1/programs", json={"program_code": "IDLE-TEST", "name": "Idle test", "status": "ACTIVE"}
    )
    assert created.status_code == 201, created.text
    state = await now_in_flight(system)
    assert (state.unpublished, state.published, state.tracked) == (1, 0, 0)
    assert not state.idle

    # Relayed, but not yet taken by the worker: the outbox is empty, and still it is not idle.
    assert await system.worker.relay_once() == 1
    state = await now_in_flight(system)
    assert (state.unpublished, state.published, state.tracked) == (0, 1, 0)
    assert not state.idle

    # Delivered: the DERMS applied it and wrote its acknowledgement, which nobody relayed yet.
    assert await system.worker.consume_once() == 1
    await system.worker.wait_in_flight()
    state = await now_in_flight(system)
    assert state.tracked == 1
    assert state.unsettled == 0
    assert state.unpublished == 1  # the acknowledgement
    assert not state.idle

    await system.settle()
    state = await now_in_flight(system)
    assert state.idle
    assert (state.unpublished, state.published, state.tracked, state.unsettled) == (0, 2, 2, 0)


async def test_a_parked_message_is_settled_until_it_is_due_again(system: System) -> None:
    created = await system.client.post(
        "/assethub/v1/programs", json={"program_code": "PARK-TEST", "name": "Park test", "status": "ACTIVE"}
    )
    assert created.status_code == 201, created.text
    await system.settle()
    later = utcnow() + timedelta(hours=1)
    async with system.runtime.async_engine("bridge").begin() as connection:
        await connection.execute(
            update(tracked_messages)
            .where(tracked_messages.c.flow == "program-sync", tracked_messages.c.type == "program-sync.v1")
            .values(state=MessageState.PARKED.value, next_attempt_at=later)
        )
    state = await now_in_flight(system)
    assert (state.parked, state.unsettled) == (1, 0)
    assert state.idle  # waiting for a prerequisite, not for the bridge

    # Woken (its condition announced): due now, so in flight until the scheduler sends it again.
    async with system.runtime.async_engine("bridge").begin() as connection:
        await connection.execute(
            update(tracked_messages)
            .where(tracked_messages.c.state == MessageState.PARKED.value)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    state = await now_in_flight(system)
    assert (state.parked, state.unsettled) == (0, 1)
    assert not state.idle
