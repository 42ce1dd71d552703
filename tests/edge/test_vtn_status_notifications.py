"""What the DERMS learns about an aggregator's resources reaches its VEN without polling, with the whole
system embedded and the ``openadr3`` client as the VEN:

- Asset Hub's F1 answer: a VEN subscribed to RESOURCE objects gets an UPDATE carrying ENROLLMENT_STATUS
  ACCEPTED, or REJECTED with the reasons;
- later lifecycle changes (F3): the device set up makes the enrollment ACTIVE, an unenrollment in Asset Hub
  makes it UNENROLLED — both show on the resource and are notified;
- an agent's status check: the DERMS answers from storage at once, and asks the VEN for a fresh reading with
  an event; the VEN's OPERATING_STATE report makes the DERMS answer again, and Asset Hub keeps the newer
  answer; the event is then withdrawn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from derbridge.derms.adapters import tables as dm
from tests.support.cis_rows import cis_row
from tests.support.edge import assert_problem, assert_schema, close_clients, make_client, off_loop, serve, ven_client
from tests.support.enrollment import create_program, load_customers, post_request, request_body
from tests.support.vtn import Receiver, attributes_of, enrollment_attributes, is_status_event

if TYPE_CHECKING:
    import openadr3

    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


@pytest.fixture
async def vtn(system: System) -> AsyncIterator[str]:
    system.runtime.settings.edge.allow_http_callbacks = True
    system.runtime.settings.edge.allow_private_callbacks = True
    async with serve(system.app) as base:
        try:
            yield base
        finally:
            close_clients()


async def enrolling_ven(system: System, vtn: str) -> tuple[openadr3.OpenADRClient, str]:
    """ECOBEE's VEN (registered), its ven id."""
    ven = await ven_client(vtn, make_client(system, "ECOBEE"))
    created = await off_loop(ven.create_ven, {"objectType": "VEN_VEN_REQUEST", "venName": "ecobee-ven"})
    assert created.status_code == 201, created.text
    ven_id: str = created.json()["id"]
    return ven, ven_id


async def register(ven: openadr3.OpenADRClient, ven_id: str, name: str, attributes: list[dict[str, Any]]) -> str:
    made = await off_loop(
        ven.create_resource,
        {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": name, "venID": ven_id, "attributes": attributes},
    )
    assert made.status_code == 201, made.text
    resource_id: str = made.json()["id"]
    return resource_id


def updates(receiver: Receiver) -> list[dict[str, Any]]:
    """The RESOURCE UPDATE notifications received, each validated, as (resource id, its attributes)."""
    found = []
    for token, body in receiver.received:
        assert token == "Bearer hook-secret"
        assert_schema(body, "notification")
        if (body["objectType"], body["operation"]) == ("RESOURCE", "UPDATE"):
            found.append(body["object"])
    return found


async def test_enrollment_answers_and_lifecycle_changes_are_notified(system: System, vtn: str, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2)])
    await create_program(system)
    ven, ven_id = await enrolling_ven(system, vtn)
    receiver = Receiver()
    async with serve(receiver.app) as hook:
        subscribed = await off_loop(
            ven.create_subscription,
            {
                "clientName": "ecobee",
                "objectOperations": [
                    {
                        "objects": ["RESOURCE"],
                        "operations": ["UPDATE"],
                        "callbackUrl": hook + "/hook",
                        "bearerToken": "hook-secret",
                    }
                ],
            },
        )
        assert subscribed.status_code == 201, subscribed.text
        accepted_id = await register(ven, ven_id, "NIC1", enrollment_attributes(1))
        # Customer 2 has no account A9: Asset Hub refuses the request.
        stranger = [a | {"values": ["A9"]} if a["type"] == "CIS_ACCOUNT_ID" else a for a in enrollment_attributes(2)]
        rejected_id = await register(ven, ven_id, "NIC2", stranger)

        # F1 there and back (no job ran yet: no device setup), then the webhook job.
        await system.settle()
        await system.derms_jobs.run_due(force=True)
        answered = {r["id"]: attributes_of(r) for r in updates(receiver)}
        assert set(answered) == {accepted_id, rejected_id}
        assert answered[accepted_id]["ENROLLMENT_STATUS"] == ["ACCEPTED"]
        assert answered[accepted_id]["ENROLLMENT_STATE"] == ["PENDING"]
        [enrollment_id] = answered[accepted_id]["ENROLLMENT_ID"]
        assert answered[rejected_id]["ENROLLMENT_STATUS"] == ["REJECTED"]
        [reason] = answered[rejected_id]["ENROLLMENT_REJECTION"]
        assert reason.split("|")[:2] == ["UNKNOWN_ACCOUNT", "customer.cis_account_id"], reason
        # The client's own attributes travel too, as a read shows them.
        assert answered[accepted_id]["NIC_ID"] == ["NIC1"]

        # The VEN's registration said the device is online: the setup check passes, the enrollment becomes
        # ACTIVE in Asset Hub, and F3 brings the new state to the DERMS — and to the VEN.
        await system.settle(jobs=True)
        await system.derms_jobs.run_due(force=True)
        assert (await system.client.get(f"/assethub/v1/enrollments/{enrollment_id}")).json()["state"] == "ACTIVE"
        read = (await off_loop(ven.get_resource_by_id, accepted_id)).json()
        assert_schema(read, "resource")
        assert attributes_of(read)["ENROLLMENT_STATE"] == ["ACTIVE"]
        activated = updates(receiver)[len(answered) :]
        assert [(r["id"], attributes_of(r)["ENROLLMENT_STATE"]) for r in activated] == [(accepted_id, ["ACTIVE"])]
        assert activated[0]["modificationDateTime"] == read["modificationDateTime"]

        # Asset Hub unenrolls it (an agent, or the customer): F3 again, UNENROLLED on the VEN's side.
        unenrolled = await system.client.post(
            f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "customer moved out"}
        )
        assert unenrolled.status_code == 200, unenrolled.text
        await system.settle()
        await system.derms_jobs.run_due(force=True)
        read = (await off_loop(ven.get_resource_by_id, accepted_id)).json()
        assert attributes_of(read)["ENROLLMENT_STATE"] == ["UNENROLLED"]
        assert attributes_of(read)["ENROLLMENT_STATUS"] == ["ACCEPTED"]  # the request's answer stands
        last = updates(receiver)[-1]
        assert (last["id"], attributes_of(last)["ENROLLMENT_STATE"]) == (accepted_id, ["UNENROLLED"])
        # The rejected request's resource was never told anything after its answer.
        assert [r["id"] for r in updates(receiver)].count(rejected_id) == 1


async def test_lifecycle_changes_show_on_reads_without_a_subscription(system: System, vtn: str, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1)])
    await create_program(system)
    ven, ven_id = await enrolling_ven(system, vtn)
    resource_id = await register(ven, ven_id, "NIC1", enrollment_attributes(1))
    await system.settle(jobs=True)
    read = attributes_of((await off_loop(ven.get_resource_by_id, resource_id)).json())
    assert (read["ENROLLMENT_STATUS"], read["ENROLLMENT_STATE"]) == (["ACCEPTED"], ["ACTIVE"])
    [enrollment_id] = read["ENROLLMENT_ID"]
    unenrolled = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "x"})
    assert unenrolled.status_code == 200, unenrolled.text
    await system.settle()
    [listed] = (await off_loop(ven.get_resources)).json()
    assert attributes_of(listed)["ENROLLMENT_STATE"] == ["UNENROLLED"]


async def check_answer(system: System, check_id: str) -> dict[str, Any]:
    response = await system.client.get(f"/assethub/v1/status-checks/{check_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_an_agents_check_asks_the_ven_for_a_fresh_reading(system: System, vtn: str, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2)])
    await create_program(system)
    ven, ven_id = await enrolling_ven(system, vtn)
    resource_id = await register(ven, ven_id, "NIC1", enrollment_attributes(1))
    registered_at = system.clock.now()
    await system.settle(jobs=True)  # enrolled and set up (a setup check, which asks the VEN nothing)
    events = (await off_loop(ven.get_events)).json()
    assert [e["eventName"] for e in events] == ["SUMMER-BYOT status"]

    # An hour later an agent checks the device: the DERMS answers at once from what it stores.
    system.clock.advance(timedelta(hours=1))
    started = await system.client.post(
        "/assethub/v1/status-checks", json={"head_end_system": "ECOBEE", "nic_id": "NIC1", "requested_by": "agent-17"}
    )
    assert started.status_code == 202, started.text
    check_id = started.json()["check_id"]
    await system.settle()
    first = await check_answer(system, check_id)
    assert (first["status"], first["result"], first["communication_status"]) == ("ANSWERED", "SUCCESS", "ONLINE")
    assert datetime.fromisoformat(first["last_communication_at"]) == registered_at

    # … and asks the VEN for a reading: an event targeted at the one resource, wanting OPERATING_STATE once.
    listed = (await off_loop(ven.get_events)).json()
    assert_schema(listed, "event", many=True)
    [asked] = [e for e in listed if not is_status_event(e)]
    assert asked["targets"] == ["NIC1"]
    descriptors = {d["payloadType"]: d for d in asked["reportDescriptors"]}
    assert {"OPERATING_STATE", "COMMUNICATION_STATUS"} <= set(descriptors)
    assert descriptors["OPERATING_STATE"].get("repeat", 1) == 1
    # Another aggregator's VEN does not see it.
    other = await ven_client(vtn, make_client(system, "NEST"))
    assert [e for e in (await off_loop(other.get_events)).json() if not is_status_event(e)] == []

    # Outcomes do not belong on it.
    system.clock.advance(timedelta(minutes=2))
    reading = {
        "eventID": asked["id"],
        "clientName": "ecobee",
        "resources": [
            {
                "resourceName": "NIC1",
                "intervals": [{"id": 0, "payloads": [{"type": "OPERATING_STATE", "values": ["NORMAL"]}]}],
            }
        ],
    }
    outcome = {"type": "PARTICIPATION", "values": ["SUCCESSFUL_PARTICIPATION"]}
    wrong = {
        **reading,
        "resources": [{"resourceName": "NIC1", "intervals": [{"id": 0, "payloads": [outcome]}]}],
    }
    assert_problem(await off_loop(ven.create_report, wrong), 400)
    # The VEN reports the reading: the DERMS records it and answers the check again, newer.
    sent = await off_loop(ven.create_report, reading)
    assert sent.status_code == 201, sent.text
    assert_schema(sent.json(), "report")
    reported_at = system.clock.now()
    await system.settle()
    second = await check_answer(system, check_id)
    assert (second["status"], second["result"], second["communication_status"]) == ("ANSWERED", "SUCCESS", "ONLINE")
    assert datetime.fromisoformat(second["last_communication_at"]) == reported_at
    async with system.runtime.async_engine("derms").connect() as connection:
        state = await connection.scalar(
            select(dm.communication_status.c.operating_state).where(dm.communication_status.c.nic_id == "NIC1")
        )
    assert state == "NORMAL"
    # The request is fulfilled: the event is withdrawn; a second report on it finds no event.
    assert [e for e in (await off_loop(ven.get_events)).json() if not is_status_event(e)] == []
    assert_problem(await off_loop(ven.get_event_by_id, asked["id"]), 404)
    assert_problem(await off_loop(ven.create_report, reading), 400)  # POST /reports: no 404 in the spec
    # The resource itself is unchanged by all this.
    assert (await off_loop(ven.get_resource_by_id, resource_id)).status_code == 200


async def test_a_check_of_a_device_no_ven_registered_makes_no_event(system: System, vtn: str, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2)])
    await create_program(system)
    ven, ven_id = await enrolling_ven(system, vtn)
    await register(ven, ven_id, "NIC1", enrollment_attributes(1))
    # NIC2 enrolled through the DERMS's own API, not through any VEN.
    await post_request(system.client, request_body(2))
    await system.settle(jobs=True)
    started = await system.client.post(
        "/assethub/v1/status-checks", json={"head_end_system": "ECOBEE", "nic_id": "NIC2", "requested_by": "agent-17"}
    )
    assert started.status_code == 202, started.text
    await system.settle()
    assert (await check_answer(system, started.json()["check_id"]))["status"] == "ANSWERED"
    assert [e for e in (await off_loop(ven.get_events)).json() if not is_status_event(e)] == []
