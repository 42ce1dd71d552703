"""Set-based application of a batch delivery (``Inbox.handles_batch``): a run of F1/F2/F3 messages applied
set-based has exactly the effect of applying them one by one, and every run the batch path cannot take
(an unknown check, a repeated message, a message applied before) falls back to one by one with the same
answers a single delivery would get."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from rich.console import Console
from sqlalchemy import select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.cis.importer import import_extract
from derbridge.contracts.device_status_check import RESPONSE_TYPE, CheckResult, CommunicationStatus, StatusCheckResponse
from derbridge.contracts.enrollment_request import RESPONSE_TYPE as ENROLLMENT_RESPONSE
from derbridge.contracts.enrollment_request import TYPE as ENROLLMENT_REQUEST
from derbridge.contracts.enrollment_request import EnrollmentRequestBatch
from derbridge.contracts.registry import new_envelope
from derbridge.demo.report import Narration
from derbridge.demo.script import DEMO_PROGRAM, DEMO_START, Demo, loopback
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.embedded import EmbeddedSystem
from derbridge.infra.clock import SimulatedClock
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from derbridge.sim.aggregator import load_aggregators
from derbridge.sim.generator import generate_utility
from tests.support.enrollment import (
    codes,
    device,
    outbox_envelopes,
    post_request,
    read_request,
    request_body,
)
from tests.support.status_checks import checks, enroll, enrollment, world

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


# --- the same effect as one by one ---------------------------------------------------------------------------


async def _setup_world(data_dir: Path, batch: bool, used: Counter[str]) -> dict[str, Any]:
    """A small utility enrolled, checked (with re-checks, and the failures at the end of the setup period)
    and synced through the whole system; what both systems hold then, by natural keys."""
    settings = Settings(data_dir=data_dir)
    migrate_all(settings)
    generated = generate_utility(200, 11, data_dir / "utility", program_code=DEMO_PROGRAM)
    clock = SimulatedClock(DEMO_START)
    runtime = Runtime(settings, clock=clock)
    try:
        async with EmbeddedSystem(runtime) as system, loopback(system.app) as base:
            # This system's own inboxes (each EmbeddedSystem builds its systems anew): their batch handlers
            # counted, or taken away so that every message is applied one by one.
            for built in (system.assethub, system.derms):
                handlers = cast("dict[str, Any]", built.inbox.batch_handlers)
                counted = {t: _counting(t, h, used) for t, h in handlers.items()} if batch else {}
                handlers.clear()
                handlers.update(counted)
            import_extract(
                generated.cis_extract,
                [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))],
            )
            # The demo's own stages, up to the end of device setup: aggregators enroll through the edge.
            demo = Demo(settings, 200, 11, Narration(Console(quiet=True)))
            demo.system, demo.clock, demo.base, demo.vens = system, clock, base, []
            try:
                await demo.programs()
                await demo.connect_vens(load_aggregators(data_dir / "utility" / "aggregators"))
                await demo.enroll()
                await demo.heartbeats()
                await demo.setup()
            finally:
                for ven in demo.vens:
                    ven.close()
            # Re-checks of the devices not seen online, then the end of the setup period: the failure paths.
            for step in (timedelta(minutes=6), timedelta(minutes=30), timedelta(days=8)):
                clock.set(clock.now() + step)
                await system.settle(jobs=True)
            return await _state(runtime)
    finally:
        runtime.close_sync()


def _counting(
    message_type: str, handler: Callable[..., Awaitable[list[dict[str, Any]]]], used: Counter[str]
) -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    async def counted(connection: Any, messages: Any) -> list[dict[str, Any]]:
        results = await handler(connection, messages)
        used[message_type] += len(messages)
        return results

    return counted


async def _state(runtime: Runtime) -> dict[str, Any]:
    async def rows(system: str, query: Any) -> Counter[tuple[Any, ...]]:
        async with runtime.async_engine(system).connect() as connection:
            return Counter(tuple(r) for r in await connection.execute(query))

    e, tr, c, d, ed, s = (
        ah.enrollments,
        ah.enrollment_transitions,
        ah.device_status_checks,
        ah.devices,
        ah.enrollment_devices,
        ah.enrollment_syncs,
    )
    device = (d.c.head_end_system, d.c.nic_id)
    return {
        "enrollments": await rows(
            "assethub",
            select(*device, e.c.state, e.c.next_check_at, e.c.sync_state, e.c.sync_sequence, e.c.sync_detail)
            .join(ed, ed.c.enrollment_id == e.c.enrollment_id)
            .join(d, d.c.device_id == ed.c.device_id),
        ),
        "transitions": await rows(
            "assethub",
            select(*device, tr.c.from_state, tr.c.to_state, tr.c.reason, tr.c.at)
            .join(ed, ed.c.enrollment_id == tr.c.enrollment_id)
            .join(d, d.c.device_id == ed.c.device_id),
        ),
        "checks": await rows(
            "assethub",
            select(
                *device,
                c.c.reason,
                c.c.status,
                c.c.requested_at,
                c.c.answered_at,
                c.c.result,
                c.c.communication_status,
                c.c.last_communication_at,
                c.c.late_answer,
            ).join(d, d.c.device_id == c.c.device_id),
        ),
        "syncs": await rows(
            "assethub",
            select(*device, s.c.sequence, s.c.change, s.c.state, s.c.detail)
            .join(ed, ed.c.enrollment_id == s.c.enrollment_id)
            .join(d, d.c.device_id == ed.c.device_id),
        ),
        "availability": await rows(
            "derms",
            select(
                dm.devices.c.head_end_system,
                dm.devices.c.nic_id,
                dm.device_availability.c.program_code,
                dm.device_availability.c.availability,
                dm.device_availability.c.sequence,
            ).join(dm.devices, dm.devices.c.device_id == dm.device_availability.c.device_id),
        ),
        "sync_log": await rows(
            "derms",
            select(
                dm.enrollment_sync_log.c.sequence,
                dm.enrollment_sync_log.c.change,
                dm.enrollment_sync_log.c.result,
                dm.enrollment_sync_log.c.detail,
            ),
        ),
        "requests": await rows("derms", select(dm.enrollment_requests.c.state, dm.enrollment_requests.c.answer)),
    }


@pytest.mark.slow  # some 15 s: one world set up twice, one by one and set-based
async def test_runs_applied_set_based_leave_both_systems_as_one_by_one_would(tmp_path: Path) -> None:
    used: Counter[str] = Counter()
    one_by_one = await _setup_world(tmp_path / "one-by-one", batch=False, used=used)
    assert not used
    set_based = await _setup_world(tmp_path / "set-based", batch=True, used=used)

    # Every batch handler took part (the runs were not all declined) ...
    assert set(used) == {
        "enrollment-request.v1",
        "enrollment-response.v1",
        "device-status-check.v1",
        "device-status-check-response.v1",
        "enrollment-sync.v1",
        "enrollment-sync-ack.v1",
    }, used
    assert used["device-status-check-response.v1"] > 100
    # ... and the world holds what answering every message alone made of it: every state, transition (with
    # its reason), check and answer, sync and acknowledgement, availability and sync log.
    states = Counter(state for (_h, _n, state, *_rest) in one_by_one["enrollments"].elements())
    assert {"ACTIVE", "SETUP_FAILED"} <= set(states), states  # both the success and the failure paths ran
    for table in one_by_one:
        assert set_based[table] == one_by_one[table], table


# --- falling back to one by one ------------------------------------------------------------------------------


def _answer(check_id: str, seen: Any) -> dict[str, Any]:
    envelope = new_envelope(
        RESPONSE_TYPE,
        StatusCheckResponse(
            check_id=check_id,
            result=CheckResult.SUCCESS,
            communication_status=CommunicationStatus.ONLINE,
            last_communication_at=seen,
            source="ECOBEE",
        ),
        business_key="ECOBEE:test",
        correlation_id=check_id,
        occurred_at=seen,
    )
    body: dict[str, Any] = envelope.model_dump(mode="json")
    return body


async def _post_batch(system: System, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = await system.client.post("/assethub/v1/messages/batch", json={"messages": messages})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


async def _open_setup_checks(system: System, tmp_path: Path, customers: int) -> tuple[list[str], list[str]]:
    """``customers`` accepted enrollments with their setup checks OPEN (asked, not yet answered)."""
    await world(system, tmp_path, customers=customers)
    enrollments = [await enroll(system, n) for n in range(1, customers + 1)]
    await system.run_jobs()  # the setup step asks; nobody answers yet
    found = {c["enrollment_id"]: c["check_id"] for c in await checks(system) if c["status"] == "OPEN"}
    assert set(found) == set(enrollments)
    return enrollments, [found[e] for e in enrollments]


async def test_a_run_with_an_unknown_check_is_applied_one_by_one_and_only_that_answer_is_refused(
    system: System, tmp_path: Path
) -> None:
    enrollments, check_ids = await _open_setup_checks(system, tmp_path, 3)
    seen = system.clock.now() - timedelta(hours=1)
    batch = [_answer(check_ids[0], seen), _answer(check_ids[1], seen), _answer(str(uuid.uuid4()), seen)]
    batch.append(_answer(check_ids[2], seen))

    results = await _post_batch(system, batch)

    assert [r["status_code"] for r in results] == [200, 200, 422, 200]
    assert results[2]["problem"]["type"].endswith("unknown-status-check")
    assert [r["answer"]["status"] for r in (results[0], results[1], results[3])] == ["applied"] * 3
    for enrollment_id in enrollments:
        assert (await enrollment(system, enrollment_id))["state"] == "ACTIVE"


async def test_a_repeated_run_is_answered_from_the_inbox_with_no_second_effect(system: System, tmp_path: Path) -> None:
    enrollments, check_ids = await _open_setup_checks(system, tmp_path, 2)
    seen = system.clock.now() - timedelta(hours=1)
    batch = [_answer(check_id, seen) for check_id in check_ids]
    first = await _post_batch(system, batch)
    transitions = [len((await enrollment(system, e))["transitions"]) for e in enrollments]

    again = await _post_batch(system, batch)

    assert [r["answer"]["status"] for r in first] == ["applied", "applied"]
    assert [r["answer"]["status"] for r in again] == ["already-applied", "already-applied"]
    assert [r["answer"]["result"] for r in again] == [r["answer"]["result"] for r in first]
    assert [len((await enrollment(system, e))["transitions"]) for e in enrollments] == transitions


async def test_the_same_message_twice_in_one_batch_has_one_effect(system: System, tmp_path: Path) -> None:
    enrollments, [check_id] = await _open_setup_checks(system, tmp_path, 1)
    message = _answer(check_id, system.clock.now() - timedelta(hours=1))

    results = await _post_batch(system, [message, message])

    assert [r["answer"]["status"] for r in results] == ["applied", "already-applied"]
    found = await enrollment(system, enrollments[0])
    assert [x["to_state"] for x in found["transitions"]].count("ACTIVE") == 1


async def test_a_run_plans_the_recheck_of_a_device_seen_too_long_ago_and_activates_the_other(
    system: System, tmp_path: Path
) -> None:
    enrollments, check_ids = await _open_setup_checks(system, tmp_path, 2)
    now = system.clock.now()
    stale = _answer(check_ids[0], now - timedelta(days=30))  # seen online, but far outside the freshness window
    fresh = _answer(check_ids[1], now - timedelta(hours=1))

    results = await _post_batch(system, [stale, fresh])

    assert [r["status_code"] for r in results] == [200, 200]
    assert [(await enrollment(system, e))["state"] for e in enrollments] == ["DEVICE_SETUP", "ACTIVE"]
    e = ah.enrollments
    async with system.runtime.async_engine("assethub").connect() as connection:
        planned = await connection.scalar(select(e.c.next_check_at).where(e.c.enrollment_id == enrollments[0]))
    assert planned == now + timedelta(minutes=5)  # the first re-check, 5 min after the first failure


# --- F1: runs of single-request messages (the edge forwards each resource alone) ------------------------------


def _counted(monkeypatch: Any, inbox: Any, message_type: str, used: Counter[str]) -> None:
    handler = inbox.batch_handlers[message_type]
    monkeypatch.setitem(inbox.batch_handlers, message_type, _counting(message_type, handler, used))


def _request_message(head_end: str, *bodies: dict[str, Any]) -> dict[str, Any]:
    payload = EnrollmentRequestBatch.model_validate(
        {"head_end_system": head_end, "requests": [b | {"requested_at": "2027-05-20T10:00:00Z"} for b in bodies]}
    )
    envelope = new_envelope(
        ENROLLMENT_REQUEST, payload, business_key=f"{head_end}:{bodies[0]['request_id']}", occurred_at=DEMO_START
    )
    body: dict[str, Any] = envelope.model_dump(mode="json")
    return body


async def test_single_requests_forwarded_one_message_each_are_answered_as_one_by_one(
    system: System, tmp_path: Path, monkeypatch: Any
) -> None:
    used: Counter[str] = Counter()
    _counted(monkeypatch, system.assethub.inbox, ENROLLMENT_REQUEST, used)
    _counted(monkeypatch, system.derms.inbox, ENROLLMENT_RESPONSE, used)
    await world(system, tmp_path, customers=3)
    # Three requests, one message each (as the edge forwards single resources); the third asks for the
    # first one's device, so it must be judged after the first is accepted.
    for body in (request_body(1), request_body(2), request_body(3, devices=[device(1)])):
        await post_request(system.client, body)

    await system.settle()

    assert used == {ENROLLMENT_REQUEST: 3, ENROLLMENT_RESPONSE: 3}
    recorded = [await read_request(system.client, "ECOBEE", f"R{n}") for n in (1, 2, 3)]
    assert [r["status"] for r in recorded] == ["ACCEPTED", "ACCEPTED", "REJECTED"]
    assert [r["state"] for r in recorded] == ["PENDING", "PENDING", "REJECTED"]
    assert codes(recorded[2]) == ["DEVICE_ALREADY_ENROLLED"]
    for r in recorded:
        found = await enrollment(system, r["enrollment_id"])
        assert found["request_id"] == r["request_id"]
        assert found["state"] == r["state"]
    # One reply per request message, each answering its own request.
    replies = await outbox_envelopes(system, "assethub", ENROLLMENT_RESPONSE)
    assert [[a["request_id"] for a in e.payload["answers"]] for e in replies] == [["R1"], ["R2"], ["R3"]]


async def test_a_request_repeated_in_a_later_message_of_the_run_gets_its_first_answer(
    system: System, tmp_path: Path, monkeypatch: Any
) -> None:
    used: Counter[str] = Counter()
    _counted(monkeypatch, system.assethub.inbox, ENROLLMENT_REQUEST, used)
    await world(system, tmp_path, customers=3)
    first = _request_message("ECOBEE", request_body(1))
    batch = [
        first,
        _request_message("ECOBEE", request_body(2), request_body(1)),
        _request_message("HONEYWELL", request_body(3, devices=[device(3, head_end="HONEYWELL")])),
    ]

    results = await _post_batch(system, batch)
    again = await _post_batch(system, [first, batch[1]])

    assert used == {ENROLLMENT_REQUEST: 3}  # the second delivery is answered from the inbox
    assert [r["status_code"] for r in results] == [200, 200, 200]
    assert [r["answer"]["status"] for r in results] == ["applied", "applied", "applied"]
    assert [r["answer"]["result"]["accepted"] for r in results] == [1, 2, 1]
    assert [r["answer"]["status"] for r in again] == ["already-applied", "already-applied"]
    assert [r["answer"]["result"] for r in again] == [r["answer"]["result"] for r in results[:2]]
    replies = await outbox_envelopes(system, "assethub", ENROLLMENT_RESPONSE)
    answers = [[(a["request_id"], a["answer"], a["enrollment_id"]) for a in e.payload["answers"]] for e in replies]
    assert len(answers) == 3
    [(r1, accepted, enrollment_r1)] = answers[0]
    assert (r1, accepted) == ("R1", "ACCEPTED")
    assert [(r, a) for r, a, _ in answers[1]] == [("R2", "ACCEPTED"), ("R1", "ACCEPTED")]
    assert answers[1][1][2] == enrollment_r1  # the first answer, not a second enrollment
    assert [(r, a) for r, a, _ in answers[2]] == [("R3", "ACCEPTED")]
    e = ah.enrollments
    async with system.runtime.async_engine("assethub").connect() as connection:
        stored = (await connection.execute(select(e.c.head_end_system, e.c.request_id).order_by(e.c.request_id))).all()
    assert [tuple(r) for r in stored] == [("ECOBEE", "R1"), ("ECOBEE", "R2"), ("HONEYWELL", "R3")]
