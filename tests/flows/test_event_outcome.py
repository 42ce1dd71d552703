"""F7 · event-outcome, end to end: outcomes reported to the DERMS API reach Asset Hub's participation
records once; a correction replaces an outcome and is recorded; at ``end_at + grace`` the lifecycle job
closes the event, giving the silent devices NON_RESPONSIVE, and the event is COMPLETED. Refusals (unknown
event, cancelled or not started event, devices not reserved) change nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from derbridge.assethub.adapters import tables as ah
from derbridge.derms.adapters import tables as dm
from tests.support.api import assert_problem, fields
from tests.support.events import (
    ASSETHUB,
    DERMS,
    GRACE_HOURS,
    RANKED,
    create_event,
    inbox_answers,
    outbox_payloads,
    participations,
    prepare,
)

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

START_IN = timedelta(hours=1)
LASTS = timedelta(hours=2)


@pytest.fixture
async def fleet(system: System, tmp_path: Path) -> System:
    """The whole system with customers, the program and its devices (see tests/support/events.py, prepare)."""
    await prepare(system, tmp_path)
    return system


async def started_event(system: System, devices: int = 3) -> dict[str, Any]:
    """An event holding the top ``devices`` of RANKED, recorded in Asset Hub, that has started (ACTIVE)."""
    event = await create_event(system, start_in=START_IN, lasts=LASTS, target_devices=devices)
    await system.settle()
    system.clock.advance(START_IN + timedelta(minutes=5))
    await system.run_jobs()
    assert (await system.client.get(f"{DERMS}/events/{event['event_id']}")).json()["status"] == "ACTIVE"
    return event


def outcome(device: tuple[str, str], kind: str = "SUCCESSFUL_PARTICIPATION", **extra: Any) -> dict[str, Any]:
    return {"head_end_system": device[0], "nic_id": device[1], "outcome": kind} | extra


async def report(system: System, event_id: str, *outcomes: dict[str, Any]) -> dict[str, Any]:
    response = await system.client.post(f"{DERMS}/events/{event_id}/outcomes", json={"outcomes": list(outcomes)})
    assert response.status_code == 200, response.text
    receipt: dict[str, Any] = response.json()
    return receipt


async def corrections(system: System) -> list[tuple[str, str, str]]:
    async with system.runtime.async_engine("assethub").connect() as connection:
        rows = await connection.execute(
            select(
                ah.participation_corrections.c.record_id,
                ah.participation_corrections.c.previous_outcome,
                ah.participation_corrections.c.new_outcome,
            ).order_by(ah.participation_corrections.c.correction_id)
        )
        return [(r.record_id, r.previous_outcome, r.new_outcome) for r in rows]


async def derms_outcomes(system: System, event_id: str) -> dict[tuple[str, str], tuple[str, str]]:
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(dm.devices.c.head_end_system, dm.devices.c.nic_id, dm.outcomes.c.outcome, dm.outcomes.c.origin)
            .join(dm.devices, dm.devices.c.device_id == dm.outcomes.c.device_id)
            .where(dm.outcomes.c.event_id == event_id)
        )
        return {(r.head_end_system, r.nic_id): (r.outcome, r.origin) for r in rows}


async def test_reported_outcomes_reach_asset_hub_once(fleet: System) -> None:
    system = fleet
    event = await started_event(system)
    start = datetime.fromisoformat(event["start_at"])
    receipt = await report(
        system,
        event["event_id"],
        outcome(RANKED[0], shed_kw=1.2, participation_start_at=start.isoformat(), participation_end_at=None),
        outcome(RANKED[1], "IN_FLIGHT_OVERRIDE", preemptive_opt_out=True),
    )
    assert receipt == {"event_id": event["event_id"], "event_status": "ACTIVE", "accepted": 2, "messages": 1}
    assert await derms_outcomes(system, event["event_id"]) == {
        RANKED[0]: ("SUCCESSFUL_PARTICIPATION", "REPORTED"),
        RANKED[1]: ("IN_FLIGHT_OVERRIDE", "REPORTED"),
    }
    (sent,) = await outbox_payloads(system, "derms", "event-outcome.v1")
    assert [(o["nic_id"], o["outcome"]) for o in sent["payload"]["outcomes"]] == [
        (RANKED[0][1], "SUCCESSFUL_PARTICIPATION"),
        (RANKED[1][1], "IN_FLIGHT_OVERRIDE"),
    ]

    await system.settle()

    held = await participations(system, event["event_id"])
    first, second, silent = (held[k] for k in RANKED[:3])
    assert (first["outcome"], first["shed_kw"], first["preemptive_opt_out"]) == ("SUCCESSFUL_PARTICIPATION", 1.2, False)
    assert datetime.fromisoformat(first["participation_start_at"]) == start
    assert datetime.fromisoformat(first["outcome_reported_at"]) == system.clock.now()
    assert (second["outcome"], second["preemptive_opt_out"]) == ("IN_FLIGHT_OVERRIDE", True)
    assert (silent["outcome"], silent["status"]) == (None, "RESERVED")
    assert await corrections(system) == []

    # The same batch again: stored again in the DERMS and sent again, but Asset Hub changes nothing.
    system.clock.advance(timedelta(minutes=1))
    await report(
        system,
        event["event_id"],
        outcome(RANKED[0], shed_kw=1.2, participation_start_at=start.isoformat()),
        outcome(RANKED[1], "IN_FLIGHT_OVERRIDE", preemptive_opt_out=True),
    )
    await system.settle()
    assert await participations(system, event["event_id"]) == held
    assert await corrections(system) == []
    answers = await inbox_answers(system, "assethub", "event-outcome.v1")
    assert sorted((a["recorded"], a["corrected"], a["unchanged"]) for a in answers) == [(0, 0, 2), (2, 0, 0)]
    acks = await inbox_answers(system, "derms", "event-outcome-ack.v1")
    assert [a["status"] for a in acks] == ["APPLIED", "APPLIED"]


async def test_a_correction_replaces_the_outcome_and_is_recorded(fleet: System) -> None:
    system = fleet
    event = await started_event(system)
    await report(system, event["event_id"], outcome(RANKED[0]), outcome(RANKED[1]))
    await system.settle()
    before = await participations(system, event["event_id"])

    system.clock.advance(timedelta(minutes=10))
    await report(system, event["event_id"], outcome(RANKED[0], "ERROR", error_message="relay stuck"))
    await system.settle()

    after = await participations(system, event["event_id"])
    assert (after[RANKED[0]]["outcome"], after[RANKED[0]]["error_message"]) == ("ERROR", "relay stuck")
    assert datetime.fromisoformat(after[RANKED[0]]["outcome_reported_at"]) == system.clock.now()
    assert after[RANKED[1]] == before[RANKED[1]]
    assert await corrections(system) == [(before[RANKED[0]]["record_id"], "SUCCESSFUL_PARTICIPATION", "ERROR")]
    assert (await derms_outcomes(system, event["event_id"]))[RANKED[0]] == ("ERROR", "REPORTED")


async def test_silent_devices_are_closed_non_responsive_at_end_plus_grace(fleet: System) -> None:
    system = fleet
    event = await started_event(system)
    await report(system, event["event_id"], outcome(RANKED[0]))
    await system.settle()
    end = datetime.fromisoformat(event["end_at"])
    closing = end + timedelta(hours=GRACE_HOURS)

    system.clock.set(closing - timedelta(seconds=1))  # the grace is per program (2 h here): still open
    await system.run_jobs()
    assert (await system.client.get(f"{DERMS}/events/{event['event_id']}")).json()["status"] == "ACTIVE"
    assert len(await outbox_payloads(system, "derms", "event-outcome.v1")) == 1  # only the report so far

    system.clock.set(closing)
    await system.run_jobs()
    closed = (await system.client.get(f"{DERMS}/events/{event['event_id']}")).json()
    assert (closed["status"], datetime.fromisoformat(closed["closed_at"])) == ("COMPLETED", closing)
    assert await derms_outcomes(system, event["event_id"]) == {
        RANKED[0]: ("SUCCESSFUL_PARTICIPATION", "REPORTED"),
        RANKED[1]: ("NON_RESPONSIVE", "CLOSED"),
        RANKED[2]: ("NON_RESPONSIVE", "CLOSED"),
    }
    listed = (await system.client.get(f"{DERMS}/events/{event['event_id']}/outcomes")).json()["items"]
    assert len(listed) == 3
    # One message carries the closing's outcomes; running the job again changes and sends nothing.
    sent = await outbox_payloads(system, "derms", "event-outcome.v1")
    assert len(sent) == 2
    assert sorted((o["nic_id"], o["outcome"]) for o in sent[1]["payload"]["outcomes"]) == sorted(
        [(RANKED[1][1], "NON_RESPONSIVE"), (RANKED[2][1], "NON_RESPONSIVE")]
    )
    system.clock.advance(timedelta(hours=1))
    await system.run_jobs()
    assert len(await outbox_payloads(system, "derms", "event-outcome.v1")) == 2

    await system.settle()
    held = await participations(system, event["event_id"])
    assert {k: r["outcome"] for k, r in held.items()} == {
        RANKED[0]: "SUCCESSFUL_PARTICIPATION",
        RANKED[1]: "NON_RESPONSIVE",
        RANKED[2]: "NON_RESPONSIVE",
    }

    # An aggregator's late report after the closing still counts: it replaces the NON_RESPONSIVE.
    receipt = await report(system, event["event_id"], outcome(RANKED[2], "IN_FLIGHT_OVERRIDE"))
    assert receipt["event_status"] == "COMPLETED"
    await system.settle()
    assert (await participations(system, event["event_id"]))[RANKED[2]]["outcome"] == "IN_FLIGHT_OVERRIDE"
    assert await corrections(system) == [(held[RANKED[2]]["record_id"], "NON_RESPONSIVE", "IN_FLIGHT_OVERRIDE")]


async def test_an_event_the_scheduler_missed_entirely_is_started_and_closed_in_one_run(fleet: System) -> None:
    system = fleet
    event = await create_event(system, start_in=START_IN, lasts=LASTS, target_devices=2)
    await system.settle()
    system.clock.advance(START_IN + LASTS + timedelta(hours=GRACE_HOURS, minutes=1))
    await system.run_jobs()
    closed = (await system.client.get(f"{DERMS}/events/{event['event_id']}")).json()
    assert closed["status"] == "COMPLETED"
    assert set((await derms_outcomes(system, event["event_id"])).values()) == {("NON_RESPONSIVE", "CLOSED")}
    await system.settle()
    assert {r["outcome"] for r in (await participations(system, event["event_id"])).values()} == {"NON_RESPONSIVE"}


async def test_refused_reports_change_nothing(fleet: System) -> None:
    system = fleet
    unknown = await system.client.post(
        f"{DERMS}/events/no-such-event/outcomes", json={"outcomes": [outcome(RANKED[0])]}
    )
    assert_problem(unknown, 404, "not-found")

    scheduled = await create_event(system, start_in=START_IN, lasts=LASTS, target_devices=3)
    early = await system.client.post(
        f"{DERMS}/events/{scheduled['event_id']}/outcomes", json={"outcomes": [outcome(RANKED[0])]}
    )
    assert_problem(early, 409, "event-not-started")

    cancelled = await create_event(system, start_in=START_IN + LASTS, lasts=LASTS, target_devices=1)
    assert (await system.client.post(f"{DERMS}/events/{cancelled['event_id']}/cancel")).status_code == 200
    late = await system.client.post(
        f"{DERMS}/events/{cancelled['event_id']}/outcomes", json={"outcomes": [outcome(RANKED[3])]}
    )
    assert_problem(late, 409, "event-cancelled")

    system.clock.advance(START_IN)
    await system.run_jobs()
    strangers = await system.client.post(
        f"{DERMS}/events/{scheduled['event_id']}/outcomes",
        json={"outcomes": [outcome(RANKED[0]), outcome(RANKED[4]), outcome(("NEST", "n-03")), outcome(("X", "y"))]},
    )
    problem = assert_problem(strangers, 422, "devices-not-reserved")
    assert fields(problem) == ["body.outcomes.1", "body.outcomes.2", "body.outcomes.3"]
    assert "SENSI:s-01" in problem["errors"][0]["message"]
    twice = await system.client.post(
        f"{DERMS}/events/{scheduled['event_id']}/outcomes", json={"outcomes": [outcome(RANKED[0]), outcome(RANKED[0])]}
    )
    assert fields(assert_problem(twice, 422, "duplicate-devices")) == ["body.outcomes.1"]
    invalid = await system.client.post(
        f"{DERMS}/events/{scheduled['event_id']}/outcomes", json={"outcomes": [outcome(RANKED[0], "WENT_FISHING")]}
    )
    assert fields(assert_problem(invalid, 422, "validation-error")) == ["body.outcomes.0.outcome"]
    empty = await system.client.post(f"{DERMS}/events/{scheduled['event_id']}/outcomes", json={"outcomes": []})
    assert fields(assert_problem(empty, 422, "validation-error")) == ["body.outcomes"]

    assert await derms_outcomes(system, scheduled["event_id"]) == {}
    assert await outbox_payloads(system, "derms", "event-outcome.v1") == []


async def test_asset_hub_ignores_and_reports_outcomes_it_cannot_apply(fleet: System) -> None:
    system = fleet
    event = await started_event(system)
    await report(system, event["event_id"], outcome(RANKED[0]), outcome(RANKED[1]))
    (sent,) = await outbox_payloads(system, "derms", "event-outcome.v1")
    # Asset Hub is told the event was cancelled (as if a cancellation had crossed the outcomes), then
    # receives the outcomes through its inbound API: the records are CANCELLED, so nothing is applied.
    async with system.runtime.async_engine("assethub").begin() as connection:
        first = select(ah.devices.c.device_id).where(ah.devices.c.nic_id == RANKED[0][1]).scalar_subquery()
        await connection.execute(
            ah.participation_records.update()
            .where(
                ah.participation_records.c.event_id == event["event_id"], ah.participation_records.c.device_id == first
            )
            .values(status="CANCELLED")
        )
    await system.settle()
    answers = await inbox_answers(system, "assethub", "event-outcome.v1")
    assert [(a["recorded"], a["ignored"], a["without_record"]) for a in answers] == [(1, 1, 0)]
    (ack,) = await outbox_payloads(system, "assethub", "event-outcome-ack.v1")
    assert "1 ignored (participation not RESERVED)" in ack["payload"]["detail"]
    assert "ignored: " in ack["payload"]["detail"]
    held = await participations(system, event["event_id"])
    cancelled = [r for r in held.values() if r["status"] == "CANCELLED"]
    assert len(cancelled) == 1
    assert cancelled[0]["outcome"] is None
    assert sent["payload"]["event_id"] == event["event_id"]


async def test_outcomes_for_an_event_asset_hub_has_not_recorded_wait_for_it(fleet: System) -> None:
    system = fleet
    event = await create_event(system, start_in=START_IN, lasts=LASTS, target_devices=2)
    system.clock.advance(START_IN)
    await system.run_jobs()
    await report(system, event["event_id"], outcome(RANKED[0]))
    (sent,) = await outbox_payloads(system, "derms", "event-outcome.v1")
    early = await system.client.post(f"{ASSETHUB}/messages", json=sent, headers={"Idempotency-Key": sent["message_id"]})
    assert assert_problem(early, 409, "missing-prerequisite")["wake_on"] == f"program-event:{event['event_id']}"
    assert await inbox_answers(system, "assethub", "event-outcome.v1") == []
