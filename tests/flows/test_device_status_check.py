"""F2 · device-status-check end to end: the device-setup step of accepted enrollments and agents' checks,
asked of the DERMS over the bridge and answered from its stored communication status — with re-checks,
setup failure, timeouts and late answers driven by the simulated business clock, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.domain.status_checks import recheck_delay
from derbridge.contracts.device_status_check import (
    RESPONSE_TYPE,
    CheckResult,
    CommunicationStatus,
    StatusCheckResponse,
)
from derbridge.contracts.registry import new_envelope
from derbridge.usecases.status_checks import run_status_check
from tests.support.enrollment import (
    device,
    outbox_envelopes,
    read_request,
)
from tests.support.status_checks import checks, enroll, enrollment, next_check_at, report, steps, world

if TYPE_CHECKING:  # imported by pytest_plugins below: importing it first would stop pytest rewriting its asserts
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

PROBLEM = "application/problem+json"


# --- the device-setup step ----------------------------------------------------------------------------------


async def test_a_device_seen_online_makes_the_enrollment_active_and_synced(system: System, tmp_path: Path) -> None:
    await world(system, tmp_path)
    enrollment_id = await enroll(system, 1)
    now = system.clock.now()
    await report(system, "NIC1", "ONLINE", now - timedelta(hours=3))

    await system.settle(jobs=True)

    found = await enrollment(system, enrollment_id)
    assert found["state"] == "ACTIVE"
    assert steps(found) == [(None, "PENDING"), ("PENDING", "DEVICE_SETUP"), ("DEVICE_SETUP", "ACTIVE")]
    assert found["transitions"][2]["reason"] == "device setup complete: seen online (ECOBEE:NIC1)"
    [check] = await checks(system, enrollment_id)
    assert (check["reason"], check["status"], check["result"], check["communication_status"]) == (
        "ENROLLMENT_SETUP",
        "ANSWERED",
        "SUCCESS",
        "ONLINE",
    )
    assert (check["last_communication_at"], check["source"], check["late_answer"]) == (
        now - timedelta(hours=3),
        "ECOBEE",
        False,
    )
    assert check["timeout_at"] == now + timedelta(minutes=10)
    # The enrollment sync (F3) went out, and the aggregator reads the new state at the DERMS.
    e = ah.enrollment_syncs
    async with system.runtime.async_engine("assethub").connect() as connection:
        syncs = (await connection.execute(select(e.c.change).where(e.c.enrollment_id == enrollment_id))).all()
    assert [s.change for s in syncs] == ["ENROLLED"]
    recorded = await read_request(system.client, "ECOBEE", "R1")
    assert (recorded["status"], recorded["state"]) == ("ACCEPTED", "ACTIVE")


@pytest.mark.slow  # some 20 rounds of the whole system over the 72 h setup period
async def test_an_offline_device_is_rechecked_with_backoff_then_fails_its_setup(system: System, tmp_path: Path) -> None:
    await world(system, tmp_path)
    enrollment_id = await enroll(system, 1)
    started = system.clock.now()
    await report(system, "NIC1", "OFFLINE", started - timedelta(hours=1))

    await system.settle(jobs=True)
    found = await enrollment(system, enrollment_id)
    assert found["state"] == "DEVICE_SETUP"
    assert await next_check_at(system, enrollment_id) == started + timedelta(minutes=5)

    # Each failed check plans the next one: 5 min, doubling, at most 6 h, the last on the end of the period.
    deadline = started + timedelta(hours=72)
    planned: list[datetime] = []
    while (due := await next_check_at(system, enrollment_id)) is not None:
        planned.append(due)
        system.clock.set(due)
        await system.settle(jobs=True)
        assert len(planned) < 40, "the setup never ends"
    expected = [started]
    while expected[-1] < deadline:
        expected.append(min(expected[-1] + recheck_delay(len(expected)), deadline))
    assert planned == expected[1:]
    assert [p - q for p, q in zip(planned[:9], [started, *planned[:8]], strict=True)] == [
        timedelta(minutes=m) for m in (5, 10, 20, 40, 80, 160, 320, 360, 360)
    ]

    found = await enrollment(system, enrollment_id)
    assert found["state"] == "SETUP_FAILED"
    assert steps(found)[-1] == ("DEVICE_SETUP", "SETUP_FAILED")
    reason = found["transitions"][-1]["reason"]
    assert reason.startswith("ECOBEE:NIC1: the DERMS reports it OFFLINE")
    assert "72 h setup period" in reason
    done = await checks(system, enrollment_id)
    assert len(done) == len(planned) + 1
    assert all(c["status"] == "ANSWERED" and c["communication_status"] == "OFFLINE" for c in done)
    assert done[-1]["requested_at"] == deadline
    # Nothing more happens to a failed setup.
    system.clock.advance(timedelta(days=1))
    await system.settle(jobs=True)
    assert len(await checks(system, enrollment_id)) == len(done)


async def test_a_device_never_seen_fails_its_setup_after_the_programs_period(system: System, tmp_path: Path) -> None:
    await world(system, tmp_path, rules={"setup_recheck_period_hours": 1})
    enrollment_id = await enroll(system, 1)
    started = system.clock.now()
    await system.settle(jobs=True)
    [first] = await checks(system, enrollment_id)
    assert (first["result"], first["communication_status"]) == ("FAILURE", "UNKNOWN")
    assert "does not know this device" in first["detail"]

    times = []
    while (due := await next_check_at(system, enrollment_id)) is not None:
        times.append(due - started)
        system.clock.set(due)
        await system.settle(jobs=True)
    assert times == [timedelta(minutes=m) for m in (5, 15, 35, 60)]
    found = await enrollment(system, enrollment_id)
    assert found["state"] == "SETUP_FAILED"
    assert "the DERMS has no status for it" in found["transitions"][-1]["reason"]
    assert "1 h setup period" in found["transitions"][-1]["reason"]
    recorded = await read_request(system.client, "ECOBEE", "R1")
    assert (recorded["status"], recorded["state"]) == ("ACCEPTED", "PENDING")  # no sync for a failed setup


async def test_a_stale_online_status_is_rechecked_until_the_device_reports_again(
    system: System, tmp_path: Path
) -> None:
    await world(system, tmp_path)
    enrollment_id = await enroll(system, 1)
    now = system.clock.now()
    await report(system, "NIC1", "ONLINE", now - timedelta(hours=30))  # outside the 24 h freshness window
    await system.settle(jobs=True)
    assert (await enrollment(system, enrollment_id))["state"] == "DEVICE_SETUP"

    due = await next_check_at(system, enrollment_id)
    assert due == now + timedelta(minutes=5)
    await report(system, "NIC1", "ONLINE", due - timedelta(minutes=1))
    system.clock.set(due)
    await system.settle(jobs=True)
    found = await enrollment(system, enrollment_id)
    assert found["state"] == "ACTIVE"
    assert [c["status"] for c in await checks(system, enrollment_id)] == ["ANSWERED", "ANSWERED"]
    assert await next_check_at(system, enrollment_id) is None


async def test_every_device_of_an_enrollment_must_be_seen_online(system: System, tmp_path: Path) -> None:
    await world(system, tmp_path)
    devices = [device(1), device(2, sequence=2)]
    enrollment_id = await enroll(system, 1, devices=devices)
    now = system.clock.now()
    await report(system, "NIC1", "ONLINE", now)
    await report(system, "NIC2", "OFFLINE", now - timedelta(days=2))
    await system.settle(jobs=True)
    assert (await enrollment(system, enrollment_id))["state"] == "DEVICE_SETUP"
    assert len(await checks(system, enrollment_id)) == 2

    # The re-check asks only about the device not yet confirmed.
    await report(system, "NIC2", "ONLINE", now + timedelta(minutes=4))
    system.clock.advance(timedelta(minutes=5))
    await system.settle(jobs=True)
    done = await checks(system, enrollment_id)
    nic_of = {d["device_id"]: d["nic_id"] for d in (await enrollment(system, enrollment_id))["devices"]}
    assert [nic_of[c["device_id"]] for c in done] == ["NIC1", "NIC2", "NIC2"]
    found = await enrollment(system, enrollment_id)
    assert found["state"] == "ACTIVE"
    assert found["transitions"][-1]["reason"] == "device setup complete: seen online (ECOBEE:NIC1, ECOBEE:NIC2)"


# --- timeouts and late answers ---------------------------------------------------------------------------------


async def test_a_timed_out_check_is_rechecked_and_its_late_answer_changes_nothing(
    system: System, tmp_path: Path
) -> None:
    await world(system, tmp_path)
    enrollment_id = await enroll(system, 1)
    started = system.clock.now()
    await report(system, "NIC1", "ONLINE", started - timedelta(minutes=30))

    await system.run_jobs()  # the setup step asks; the bridge does not carry it (the DERMS is unreachable)
    [check] = await checks(system, enrollment_id)
    assert check["status"] == "OPEN"
    system.clock.advance(timedelta(minutes=11))
    done = await system.run_jobs()
    assert done["status-check-timeouts"] == 1
    [check] = await checks(system, enrollment_id)
    assert (check["status"], check["answered_at"], check["late_answer"]) == ("TIMED_OUT", None, False)
    retry_at = started + timedelta(minutes=16)  # 5 min after the timeout was seen
    assert await next_check_at(system, enrollment_id) == retry_at

    await system.settle()  # the DERMS is back: its answer (ONLINE) arrives late
    [check] = await checks(system, enrollment_id)
    assert (check["status"], check["late_answer"], check["communication_status"]) == ("TIMED_OUT", True, "ONLINE")
    assert check["answered_at"] == started + timedelta(minutes=11)
    found = await enrollment(system, enrollment_id)
    assert found["state"] == "DEVICE_SETUP"  # the late ONLINE decided nothing
    assert await next_check_at(system, enrollment_id) == retry_at

    system.clock.set(retry_at)
    await system.settle(jobs=True)
    assert (await enrollment(system, enrollment_id))["state"] == "ACTIVE"
    assert [c["status"] for c in await checks(system, enrollment_id)] == ["TIMED_OUT", "ANSWERED"]


async def test_an_answer_after_the_timeout_is_late_even_before_the_timeout_job_runs(
    system: System, tmp_path: Path
) -> None:
    await world(system, tmp_path)
    enrollment_id = await enroll(system, 1)
    await report(system, "NIC1", "ONLINE", system.clock.now())
    await system.run_jobs()
    system.clock.advance(timedelta(minutes=10, seconds=1))

    await system.settle()  # delivered and answered, but no job ran: the answer itself finds the check expired
    [check] = await checks(system, enrollment_id)
    assert (check["status"], check["late_answer"]) == ("TIMED_OUT", True)
    assert (await enrollment(system, enrollment_id))["state"] == "DEVICE_SETUP"
    assert await next_check_at(system, enrollment_id) == system.clock.now() + timedelta(minutes=5)


# --- agents' checks ----------------------------------------------------------------------------------------------


async def test_an_agents_check_is_answered_within_the_settle(system: System, tmp_path: Path) -> None:
    await world(system, tmp_path)
    await enroll(system, 1)
    await enroll(system, 2)
    seen = system.clock.now() - timedelta(minutes=7)
    await report(system, "NIC1", "OFFLINE", seen)

    response = await system.client.post(
        "/assethub/v1/status-checks", json={"head_end_system": "ECOBEE", "nic_id": "NIC1", "requested_by": "agent-17"}
    )
    assert response.status_code == 202, response.text
    started = response.json()
    assert (started["status"], started["reason"], started["requested_by"]) == ("OPEN", "AGENT_TROUBLESHOOT", "agent-17")
    assert started["enrollment_id"] is None
    await system.settle()

    answered = (await system.client.get(f"/assethub/v1/status-checks/{started['check_id']}")).json()
    assert (answered["status"], answered["result"], answered["communication_status"]) == (
        "ANSWERED",
        "SUCCESS",
        "OFFLINE",
    )
    assert datetime.fromisoformat(answered["last_communication_at"]) == seen
    assert answered["source"] == "ECOBEE"
    # The question and the answer are tied by the check id, and the answer was caused by the question.
    [question] = await outbox_envelopes(system, "assethub", "device-status-check.v1")
    assert (question.correlation_id, question.business_key) == (started["check_id"], "ECOBEE:NIC1")
    assert question.payload["device"] == {
        "head_end_system": "ECOBEE",
        "nic_id": "NIC1",
        "device_type": "THERMOSTAT",
        "manufacturer": "ecobee",
        "model": "ecobee3 lite",
        "division": "NORTH",
    }
    [reply] = await outbox_envelopes(system, "derms", "device-status-check-response.v1")
    assert (reply.correlation_id, reply.causation_id) == (started["check_id"], question.message_id)

    # A device the DERMS has never heard of: FAILURE / UNKNOWN, answered all the same.
    response = await system.client.post(
        "/assethub/v1/status-checks", json={"head_end_system": "ECOBEE", "nic_id": "NIC2", "requested_by": "agent-17"}
    )
    await system.settle()
    unknown = (await system.client.get(f"/assethub/v1/status-checks/{response.json()['check_id']}")).json()
    assert (unknown["status"], unknown["result"], unknown["communication_status"]) == (
        "ANSWERED",
        "FAILURE",
        "UNKNOWN",
    )
    # A stored UNKNOWN is no known status either.
    await report(system, "NIC2", "UNKNOWN", system.clock.now())
    response = await system.client.post(
        "/assethub/v1/status-checks", json={"head_end_system": "ECOBEE", "nic_id": "NIC2", "requested_by": "agent-17"}
    )
    await system.settle()
    stored_unknown = (await system.client.get(f"/assethub/v1/status-checks/{response.json()['check_id']}")).json()
    assert (stored_unknown["result"], stored_unknown["communication_status"]) == ("FAILURE", "UNKNOWN")
    assert stored_unknown["detail"] == "the head-end reports the device's status as UNKNOWN"
    # No agent check changes an enrollment.
    assert {e["state"] for e in (await system.client.get("/assethub/v1/enrollments")).json()["items"]} == {"PENDING"}


async def test_an_agents_check_of_an_unknown_device_is_refused(system: System) -> None:
    response = await system.client.post(
        "/assethub/v1/status-checks", json={"head_end_system": "ECOBEE", "nic_id": "NOPE", "requested_by": "agent-17"}
    )
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "ECOBEE:NOPE" in response.json()["detail"]
    response = await system.client.post(
        "/assethub/v1/status-checks", json={"head_end_system": "ecobee", "nic_id": "", "requested_by": "agent-17"}
    )
    assert response.status_code == 422
    assert {e["field"] for e in response.json()["errors"]} == {"body.head_end_system", "body.nic_id"}
    assert await checks(system) == []


async def test_the_cli_check_waits_for_the_answer(system: System, tmp_path: Path) -> None:
    await world(system, tmp_path)
    await enroll(system, 1)
    await report(system, "NIC1", "ONLINE", system.clock.now())

    task = asyncio.create_task(
        run_status_check(system.runtime, "ECOBEE", "NIC1", requested_by="cli-test", poll_seconds=0.01)
    )
    while not task.done():
        await system.settle()
        await asyncio.sleep(0.01)
    answered = task.result()
    assert (answered["status"], answered["communication_status"], answered["requested_by"]) == (
        "ANSWERED",
        "ONLINE",
        "cli-test",
    )

    # With no bridge to carry it, the wait is bounded and the check comes back still OPEN.
    unanswered = await run_status_check(system.runtime, "ECOBEE", "NIC1", timeout_seconds=0.2, poll_seconds=0.05)
    assert unanswered["status"] == "OPEN"


async def test_answers_for_two_devices_applied_at_once_complete_the_setup(system: System, tmp_path: Path) -> None:
    await world(system, tmp_path)
    enrollment_id = await enroll(system, 1, devices=[device(1), device(2, sequence=2)])
    await system.run_jobs()  # two OPEN setup checks; the DERMS's answers are delivered by hand below
    now = system.clock.now()
    questions = await checks(system, enrollment_id)
    assert [c["status"] for c in questions] == ["OPEN", "OPEN"]
    replies = [
        new_envelope(
            RESPONSE_TYPE,
            StatusCheckResponse(
                check_id=c["check_id"],
                result=CheckResult.SUCCESS,
                communication_status=CommunicationStatus.ONLINE,
                last_communication_at=now,
                source="ECOBEE",
            ),
            business_key=f"answer-{c['check_id']}",
            correlation_id=c["check_id"],
            occurred_at=now,
        )
        for c in questions
    ]
    responses = await asyncio.gather(
        *(
            system.client.post(
                "/assethub/v1/messages",
                json=r.model_dump(mode="json"),
                headers={"Idempotency-Key": r.message_id},
            )
            for r in replies
        )
    )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert [c["status"] for c in await checks(system, enrollment_id)] == ["ANSWERED", "ANSWERED"]
    assert (await enrollment(system, enrollment_id))["state"] == "ACTIVE"
