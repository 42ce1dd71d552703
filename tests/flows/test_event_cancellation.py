"""F6 · event-cancellation, end to end: an event cancelled through the DERMS API before its start is
CANCELLED in both systems with no reservation left; after its start the cancellation is refused with a 409
problem and nothing changes anywhere. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from derbridge.derms.adapters import tables as dm
from tests.support.api import assert_problem
from tests.support.events import (
    ASSETHUB,
    BRIDGE,
    DERMS,
    RANKED,
    create_event,
    get_all,
    inbox_answers,
    outbox_payloads,
    participations,
    prepare,
)

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


@pytest.fixture
async def fleet(system: System, tmp_path: Path) -> System:
    """The whole system with customers, the program and its devices (see tests/support/events.py, prepare)."""
    await prepare(system, tmp_path)
    return system


async def derms_reservation_statuses(system: System, event_id: str) -> list[str]:
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(dm.reservations.c.status)
            .where(dm.reservations.c.event_id == event_id)
            .order_by(dm.reservations.c.rank)
        )
        return [r.status for r in rows]


async def test_cancelling_before_the_start_cancels_the_event_in_both_systems(fleet: System) -> None:
    system = fleet
    event = await create_event(system, target_devices=3)
    await system.settle()
    assert {r["status"] for r in (await participations(system, event["event_id"])).values()} == {"RESERVED"}

    response = await system.client.post(
        f"{DERMS}/events/{event['event_id']}/cancel", json={"reason_text": "heat wave forecast revised"}
    )
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("CANCELLED", "heat wave forecast revised")
    assert datetime.fromisoformat(cancelled["cancelled_at"]) == system.clock.now()
    # The release and the message were written together.
    assert await derms_reservation_statuses(system, event["event_id"]) == ["RELEASED"] * 3
    (sent,) = await outbox_payloads(system, "derms", "event-cancellation.v1")
    assert sent["payload"] == {
        "event_id": event["event_id"],
        "derms_instance_id": "derms-1",
        "cancelled_at": system.clock.now().isoformat().replace("+00:00", "Z"),
        "reason_text": "heat wave forecast revised",
    }

    await system.settle()

    recorded = (await system.client.get(f"{ASSETHUB}/events/{event['event_id']}")).json()
    assert (recorded["status"], recorded["cancel_reason"]) == ("CANCELLED", "heat wave forecast revised")
    assert datetime.fromisoformat(recorded["cancelled_at"]) == system.clock.now()
    held = await participations(system, event["event_id"])
    assert sorted(held) == sorted(RANKED[:3])
    assert {r["status"] for r in held.values()} == {"CANCELLED"}
    (ack,) = await outbox_payloads(system, "assethub", "event-cancellation-ack.v1")
    assert (ack["payload"]["status"], ack["payload"]["acknowledged_message_id"]) == ("APPLIED", sent["message_id"])
    assert "3 participation record(s)" in ack["payload"]["detail"]
    assert await inbox_answers(system, "derms", "event-cancellation-ack.v1") == [
        {"event_id": event["event_id"], "status": "APPLIED", "unknown_devices": 0}
    ]
    # The released devices are free again for a new event in the same window.
    again = await create_event(system, target_devices=3)
    assert again["reserved_count"] == 3


async def test_cancelling_after_the_start_is_refused_and_changes_nothing(fleet: System) -> None:
    system = fleet
    event = await create_event(system, start_in=timedelta(minutes=30), target_devices=3)
    await system.settle()
    system.clock.advance(timedelta(minutes=31))
    await system.run_jobs()
    assert (await system.client.get(f"{DERMS}/events/{event['event_id']}")).json()["status"] == "ACTIVE"

    refused = assert_problem(
        await system.client.post(f"{DERMS}/events/{event['event_id']}/cancel"), 409, "event-started"
    )
    assert "can no longer be cancelled" in refused["detail"]

    stored = (await system.client.get(f"{DERMS}/events/{event['event_id']}")).json()
    assert (stored["status"], stored["cancelled_at"], stored["cancel_reason"]) == ("ACTIVE", None, None)
    assert await derms_reservation_statuses(system, event["event_id"]) == ["RESERVED"] * 3
    assert await outbox_payloads(system, "derms", "event-cancellation.v1") == []
    await system.settle()
    assert (await system.client.get(f"{ASSETHUB}/events/{event['event_id']}")).json()["status"] == "SCHEDULED"
    assert {r["status"] for r in (await participations(system, event["event_id"])).values()} == {"RESERVED"}


async def test_the_start_refuses_cancellation_even_before_the_lifecycle_job_ran(fleet: System) -> None:
    system = fleet
    event = await create_event(system, start_in=timedelta(minutes=30), target_devices=2)
    system.clock.advance(timedelta(minutes=30))  # exactly the start; the job has not marked it ACTIVE yet
    assert (await system.client.get(f"{DERMS}/events/{event['event_id']}")).json()["status"] == "SCHEDULED"
    assert_problem(await system.client.post(f"{DERMS}/events/{event['event_id']}/cancel"), 409, "event-started")
    assert await derms_reservation_statuses(system, event["event_id"]) == ["RESERVED"] * 2
    assert await outbox_payloads(system, "derms", "event-cancellation.v1") == []


async def test_a_second_cancellation_is_refused_and_sends_nothing_more(fleet: System) -> None:
    system = fleet
    event = await create_event(system, target_devices=1)
    assert (await system.client.post(f"{DERMS}/events/{event['event_id']}/cancel")).status_code == 200
    again = assert_problem(
        await system.client.post(f"{DERMS}/events/{event['event_id']}/cancel"), 409, "event-not-cancellable"
    )
    assert "already cancelled" in again["detail"]
    assert len(await outbox_payloads(system, "derms", "event-cancellation.v1")) == 1
    assert_problem(await system.client.post(f"{DERMS}/events/no-such-event/cancel"), 404, "not-found")


async def test_a_cancellation_that_overtakes_its_reservation_waits_for_it(fleet: System) -> None:
    system = fleet
    event = await create_event(system, target_devices=2)
    assert (await system.client.post(f"{DERMS}/events/{event['event_id']}/cancel")).status_code == 200
    (cancellation,) = await outbox_payloads(system, "derms", "event-cancellation.v1")
    # The cancellation reaches Asset Hub first (the flows have queues of their own): it cannot apply yet.
    early = await system.client.post(
        f"{ASSETHUB}/messages", json=cancellation, headers={"Idempotency-Key": cancellation["message_id"]}
    )
    problem = assert_problem(early, 409, "missing-prerequisite")
    assert problem["wake_on"] == f"program-event:{event['event_id']}"
    assert_problem(await system.client.get(f"{ASSETHUB}/events/{event['event_id']}"), 404, "not-found")

    await system.settle()
    # Whichever order the bridge delivered them in, announcing the event's arrival lets a parked
    # cancellation through; then the event is cancelled in Asset Hub with every record.
    woken = await system.client.post(f"{BRIDGE}/wake", json={"conditions": [f"program-event:{event['event_id']}"]})
    assert woken.status_code == 200, woken.text
    await system.settle()

    assert (await system.client.get(f"{ASSETHUB}/events/{event['event_id']}")).json()["status"] == "CANCELLED"
    held = await participations(system, event["event_id"])
    assert {r["status"] for r in held.values()} == {"CANCELLED"}
    assert len(held) == 2
    assert len(await get_all(system, f"{ASSETHUB}/events")) == 1
