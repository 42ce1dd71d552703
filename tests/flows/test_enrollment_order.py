"""Cross-flow ordering of an enrollment's messages (issue 13, defects 2 and 4), with the whole system in one
process on SQLite and PostgreSQL: messages are held back and delivered in the order a reordering bridge (two
workers, parallel batches, a killed worker's lease) could deliver them, and the end state is checked in Asset
Hub, in the DERMS and on the VTN.

- **Defect 2.** Asset Hub's F1 answer and the enrollment's F3 syncs reach the DERMS in any order: its record
  of the request, and the resource's ENROLLMENT_STATE on the VTN, end at Asset Hub's latest state.
- **Defect 4.** Requests about one device are judged in the order the DERMS recorded them (the aggregator's
  order), whichever message reaches Asset Hub first: a later request parks until its predecessor is judged.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import select, update

from derbridge.assethub.adapters import tables as ah
from derbridge.bridge.tables import tracked_messages
from derbridge.bridge.transport.base import queue_name
from derbridge.derms.adapters import tables as dm
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from tests.support.cis_rows import cis_row
from tests.support.enrollment import (
    codes,
    create_program,
    device,
    load_customers,
    post_request,
    read_request,
    request_body,
)

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

VTN = "/openadr3/3.1.0"
ANSWER = "enrollment-response.v1"
SYNC = "enrollment-sync.v1"
REQUEST = "enrollment-request.v1"


# --- holding messages back, delivering them in a chosen order ----------------------------------------------


async def _hold_new(system: System, which: str, types: set[str]) -> list[tuple[str, str, str]]:
    """Take the unpublished messages of ``types`` out of ``which``'s outbox without relaying them (marked
    published, as if a bridge worker had taken them and then stalled); (message id, type, body) in order."""
    outbox = ah.outbox if which == "assethub" else dm.outbox
    async with system.runtime.async_engine(which).begin() as connection:  # type: ignore[arg-type]
        rows = (
            await connection.execute(
                select(outbox.c.message_id, outbox.c.type, outbox.c.envelope)
                .where(outbox.c.published_at.is_(None), outbox.c.type.in_(sorted(types)))
                .order_by(outbox.c.position)
            )
        ).all()
        if rows:
            await connection.execute(
                update(outbox)
                .where(outbox.c.message_id.in_([r.message_id for r in rows]))
                .values(published_at=datetime.now(UTC))
            )
    return [(r.message_id, r.type, r.envelope) for r in rows]


async def settle_holding(system: System, types: set[str], *, jobs: bool = True) -> list[tuple[str, str, str]]:
    """:meth:`EmbeddedSystem.settle`, except that every Asset Hub message of ``types`` is held back before
    the relay sees it; returns the held messages in the order Asset Hub wrote them."""
    held: list[tuple[str, str, str]] = []
    for _ in range(200):
        moved = sum((await system.run_jobs()).values()) if jobs else 0
        held += await _hold_new(system, "assethub", types)
        moved += await system.worker.relay_once()
        while (taken := await system.worker.consume_once()) > 0:
            moved += taken
        await system.worker.wait_in_flight()
        moved += await system.worker.schedule_once()
        held += await _hold_new(system, "assethub", types)
        if not moved and not await system.busy():
            return held
    raise AssertionError("messages still moving after 200 rounds")


async def deliver(system: System, message_id: str, body: str) -> None:
    """Publish one held message on its flow's queue, as the relay would, and let the worker deliver it."""
    flow = json.loads(body)["flow"]
    queue = queue_name(system.runtime.settings.bridge.queue_prefix, flow)
    await system.worker.transport.publish(queue, [(message_id, body.encode())])
    await system.worker.consume_once()
    await system.worker.wait_in_flight()


async def tracked(system: System, message_id: str) -> dict[str, Any]:
    """The bridge's tracking of one message (state, wake_on, last problem)."""
    async with system.runtime.async_engine("bridge").connect() as connection:
        row = (
            (await connection.execute(select(tracked_messages).where(tracked_messages.c.message_id == message_id)))
            .mappings()
            .one()
        )
    return dict(row)


# --- the aggregator at the VTN, in process -----------------------------------------------------------------


async def ven(system: System) -> dict[str, str]:
    """ECOBEE's VEN: a client made as ``derbridge edge client add`` makes it, its token fetched from the
    VTN, and its VEN registered; the headers its calls carry."""
    made = add_client(system.runtime.sync_engine("derms"), "ECOBEE ven", "ECOBEE", Role.VEN)
    token = await system.client.post(
        f"{VTN}/auth/token",
        data={"grant_type": "client_credentials", "client_id": made.client_id, "client_secret": made.client_secret},
    )
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    created = await system.client.post(
        f"{VTN}/vens", json={"objectType": "VEN_VEN_REQUEST", "venName": "ecobee-ven"}, headers=headers
    )
    assert created.status_code == 201, created.text
    return headers | {"X-Ven-Id": created.json()["id"]}


def enrollment_attributes(n: int) -> list[dict[str, Any]]:
    """The enrollment attributes of request n of the F1 tests (customer n, device NIC{n})."""
    body = request_body(n)
    c, p, loc, d = body["customer"], body["program"], body["location"], body["devices"][0]
    pairs = {
        "ENROLLMENT_PROGRAM": p["program_code"],
        "PROGRAM_START_DATE": p["start_date"],
        "CIS_PERSON_ID": c["cis_person_id"],
        "CIS_ACCOUNT_ID": c["cis_account_id"],
        "CUSTOMER_NAME": c["name"],
        "DIVISION": loc["division"],
        "CIS_PREMISE_ID": loc["cis_premise_id"],
        "CIS_SERVICE_POINT_ID": loc["cis_service_point_id"],
        "TIME_ZONE": loc["time_zone"],
        "CITY": loc["city"],
        "STATE": loc["state"],
        "POSTAL_CODE": loc["postal"],
        "COUNTRY": loc["country"],
        "DEVICE_TYPE": d["device_type"],
        "MANUFACTURER": d["manufacturer"],
        "MODEL": d["model"],
        "SERIAL_NUMBER": d["serial_no"],
        "NIC_ID": d["nic_id"],
        "INSTALLATION_METHOD": body["installation_method"],
        "ASSET_OWNERSHIP": body["asset_ownership"],
    }
    return [{"type": k, "values": [v]} for k, v in pairs.items()] + [{"type": "ADDRESS", "values": [loc["address1"]]}]


async def register_resource(system: System, headers: dict[str, str], n: int) -> str:
    """The VEN registers device NIC{n} as a resource with enrollment attributes (an F1 request whose request
    id is the resource id); the resource id."""
    made = await system.client.post(
        f"{VTN}/resources",
        json={
            "objectType": "VEN_RESOURCE_REQUEST",
            "resourceName": f"NIC{n}",
            "venID": headers["X-Ven-Id"],
            "attributes": enrollment_attributes(n),
        },
        headers={"Authorization": headers["Authorization"]},
    )
    assert made.status_code == 201, made.text
    resource_id: str = made.json()["id"]
    return resource_id


async def vtn_attributes(system: System, headers: dict[str, str], resource_id: str) -> dict[str, list[Any]]:
    """The resource's attributes as the aggregator reads them on the VTN."""
    read = await system.client.get(
        f"{VTN}/resources/{resource_id}", headers={"Authorization": headers["Authorization"]}
    )
    assert read.status_code == 200, read.text
    return {a["type"]: a["values"] for a in read.json().get("attributes", [])}


async def assethub_state(client: httpx.AsyncClient, enrollment_id: str) -> str:
    read = await client.get(f"/assethub/v1/enrollments/{enrollment_id}")
    assert read.status_code == 200, read.text
    state: str = read.json()["state"]
    return state


# --- defect 2: an answer and its enrollment's syncs, in any order --------------------------------------------


ORDERS = [
    pytest.param(["sync1", "answer"], "ACTIVE", id="sync-before-answer"),
    pytest.param(["sync2", "sync1", "answer"], "UNENROLLED", id="syncs-reversed-then-answer"),
    pytest.param(["sync1", "sync2", "answer"], "UNENROLLED", id="both-syncs-then-answer"),
    pytest.param(["sync2", "answer", "sync1"], "UNENROLLED", id="newest-sync-answer-older-sync"),
    pytest.param(["answer", "sync2", "sync1"], "UNENROLLED", id="answer-first-syncs-reversed"),
]


@pytest.mark.parametrize(("order", "final"), ORDERS)
async def test_the_derms_and_the_vtn_end_at_asset_hubs_state_whatever_the_order_of_answer_and_syncs(
    system: System, tmp_path: Path, order: list[str], final: str
) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1)])
    await create_program(system)
    headers = await ven(system)
    resource_id = await register_resource(system, headers, 1)

    # F1 there, its answer held back; the device setup makes the enrollment ACTIVE and its ENROLLED sync is
    # held back too.
    held = await settle_holding(system, {ANSWER, SYNC})
    assert [kind for _, kind, _ in held] == [ANSWER, SYNC]
    (enrollment,) = (await system.client.get("/assethub/v1/enrollments")).json()["items"]
    enrollment_id = enrollment["enrollment_id"]
    assert await assethub_state(system.client, enrollment_id) == "ACTIVE"
    messages = {"answer": held[0], "sync1": held[1]}
    if final == "UNENROLLED":
        unenrolled = await system.client.post(
            f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "moving out"}
        )
        assert unenrolled.status_code == 200, unenrolled.text
        (sync2,) = await settle_holding(system, {SYNC}, jobs=False)
        assert sync2[1] == SYNC
        messages["sync2"] = sync2
    assert (await read_request(system.client, "ECOBEE", resource_id))["status"] == "RECEIVED"

    for name in order:
        message_id, _, body = messages[name]
        await deliver(system, message_id, body)
        await system.settle()

    assert await assethub_state(system.client, enrollment_id) == final
    recorded = await read_request(system.client, "ECOBEE", resource_id)
    assert (recorded["status"], recorded["enrollment_id"], recorded["state"]) == ("ACCEPTED", enrollment_id, final)
    shown = await vtn_attributes(system, headers, resource_id)
    assert shown["ENROLLMENT_STATUS"] == ["ACCEPTED"]
    assert shown["ENROLLMENT_STATE"] == [final]
    # Every message was delivered once; none is left waiting.
    for message_id, _, _ in messages.values():
        assert (await tracked(system, message_id))["state"] == "delivered"


async def test_an_answer_and_a_sync_applied_at_once_end_active(system: System, tmp_path: Path) -> None:
    """The answer and the sync delivered to the DERMS at the same moment (two workers): on PostgreSQL two
    transactions, serialised by the enrollment's row in ``enrollment_states``; whichever commits first, the
    other sees it."""
    load_customers(system.runtime, tmp_path, [cis_row(1)])
    await create_program(system)
    headers = await ven(system)
    resource_id = await register_resource(system, headers, 1)
    (answer, sync) = await settle_holding(system, {ANSWER, SYNC})

    async def post(message_id: str, body: str) -> httpx.Response:
        return await system.client.post(
            "/derms/v1/messages",
            content=body,
            headers={"Idempotency-Key": message_id, "Content-Type": "application/json"},
        )

    answers = await asyncio.gather(post(sync[0], sync[2]), post(answer[0], answer[2]))
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert (await read_request(system.client, "ECOBEE", resource_id))["state"] == "ACTIVE"
    assert (await vtn_attributes(system, headers, resource_id))["ENROLLMENT_STATE"] == ["ACTIVE"]


async def test_a_late_copy_of_the_answer_does_not_put_pending_back(system: System, tmp_path: Path) -> None:
    """The answer is applied once: a second copy (another message id, e.g. an operator's re-send) after the
    sync leaves the state the sync set."""
    load_customers(system.runtime, tmp_path, [cis_row(1)])
    await create_program(system)
    headers = await ven(system)
    resource_id = await register_resource(system, headers, 1)
    ((answer_id, _, answer_body),) = await settle_holding(system, {ANSWER}, jobs=False)
    await deliver(system, answer_id, answer_body)
    await system.settle(jobs=True)
    assert (await read_request(system.client, "ECOBEE", resource_id))["state"] == "ACTIVE"

    copy = json.loads(answer_body) | {"message_id": "answer-copy", "correlation_id": "answer-copy"}
    sent = await system.client.post("/derms/v1/messages", json=copy, headers={"Idempotency-Key": "answer-copy"})
    assert sent.status_code == 200, sent.text
    assert (await read_request(system.client, "ECOBEE", resource_id))["state"] == "ACTIVE"
    assert (await vtn_attributes(system, headers, resource_id))["ENROLLMENT_STATE"] == ["ACTIVE"]


# --- defect 4: requests about one device, judged in the aggregator's order -----------------------------------


async def _two_requests_for_one_device(system: System, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Customer 1 asks for device 7 (R1), then customer 2 asks for the same device (R2): each request in its
    own message, both held in the DERMS's outbox; the two messages' bodies by request id, and their ids."""
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2)])
    await create_program(system)
    await post_request(system.client, request_body(1, devices=[device(7)]))
    await post_request(system.client, request_body(2, devices=[device(7)]))
    held = await _hold_new(system, "derms", {REQUEST})
    assert len(held) == 2
    (first_id, _, first), (second_id, _, second) = held
    return {"R1": first, "R2": second}, {"R1": first_id, "R2": second_id}


async def _answers(system: System) -> dict[str, tuple[str, list[str]]]:
    """request id → (status, rejection codes) as the aggregator reads them at the DERMS."""
    found = {}
    for request_id in ("R1", "R2"):
        recorded = await read_request(system.client, "ECOBEE", request_id)
        found[request_id] = (recorded["status"], codes(recorded))
    return found


async def test_the_derms_names_each_requests_predecessor_for_its_devices(system: System, tmp_path: Path) -> None:
    bodies, ids = await _two_requests_for_one_device(system, tmp_path)
    assert json.loads(bodies["R1"])["payload"]["requests"][0]["previous_requests"] == []
    assert json.loads(bodies["R2"])["payload"]["requests"][0]["previous_requests"] == [
        {"head_end_system": "ECOBEE", "request_id": "R1", "message_id": ids["R1"]}
    ]
    # A third request for the device follows the second, not the first; a batch chains within itself.
    load_customers(system.runtime, tmp_path, [cis_row(3), cis_row(4)])
    batch = await system.client.post(
        "/derms/v1/enrollment-requests/batch",
        json={
            "head_end_system": "ECOBEE",
            "requests": [
                request_body(3, devices=[device(7)]),
                request_body(4, devices=[device(7), device(8, sequence=2)]),
            ],
        },
    )
    assert batch.status_code == 202, batch.text
    ((batch_id, _, body),) = await _hold_new(system, "derms", {REQUEST})
    third, fourth = json.loads(body)["payload"]["requests"]
    assert third["previous_requests"] == [{"head_end_system": "ECOBEE", "request_id": "R2", "message_id": ids["R2"]}]
    assert fourth["previous_requests"] == [{"head_end_system": "ECOBEE", "request_id": "R3", "message_id": batch_id}]


async def test_a_request_held_back_is_judged_before_a_later_one_for_the_same_device(
    system: System, tmp_path: Path
) -> None:
    bodies, ids = await _two_requests_for_one_device(system, tmp_path)

    # R2's message overtakes R1's (R1's is held by a stalled worker's lease): it parks, waiting for R1's.
    await deliver(system, ids["R2"], bodies["R2"])
    await system.settle()
    parked = await tracked(system, ids["R2"])
    assert (parked["state"], parked["wake_on"]) == ("parked", f"enrollment-request:{ids['R1']}")
    assert "ECOBEE:R1" in parked["last_problem"]["detail"]
    listed = await system.client.get("/bridge/v1/messages", params={"state": "parked", "flow": "enrollment-request"})
    assert [m["message_id"] for m in listed.json()["items"]] == [ids["R2"]]
    assert await _answers(system) == {"R1": ("RECEIVED", []), "R2": ("RECEIVED", [])}

    # R1's message arrives: it is judged first, and its delivery wakes R2's at once (no park backoff).
    await deliver(system, ids["R1"], bodies["R1"])
    await system.settle()

    assert await _answers(system) == {"R1": ("ACCEPTED", []), "R2": ("REJECTED", ["DEVICE_ALREADY_ENROLLED"])}
    assert (await tracked(system, ids["R2"]))["state"] == "delivered"
    async with system.runtime.async_engine("assethub").connect() as connection:
        rows = await connection.execute(select(ah.enrollments.c.request_id, ah.enrollments.c.state))
        states = {row.request_id: row.state for row in rows}
    assert states == {"R1": "PENDING", "R2": "REJECTED"}


async def test_asset_hub_parks_a_request_whose_predecessor_it_has_not_judged(system: System, tmp_path: Path) -> None:
    bodies, ids = await _two_requests_for_one_device(system, tmp_path)

    def post(name: str) -> Any:
        return system.client.post(
            "/assethub/v1/messages",
            content=bodies[name],
            headers={"Idempotency-Key": ids[name], "Content-Type": "application/json"},
        )

    refused = await post("R2")
    assert refused.status_code == 409, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/missing-prerequisite")
    assert problem["wake_on"] == f"enrollment-request:{ids['R1']}"
    assert "ECOBEE:R1" in problem["detail"]
    assert ids["R1"] in problem["detail"]
    async with system.runtime.async_engine("assethub").connect() as connection:
        assert (await connection.execute(select(ah.enrollments.c.request_id))).all() == []  # nothing judged

    assert (await post("R1")).status_code == 200
    assert (await post("R2")).status_code == 200
    await system.settle()
    assert await _answers(system) == {"R1": ("ACCEPTED", []), "R2": ("REJECTED", ["DEVICE_ALREADY_ENROLLED"])}


async def test_one_batch_delivery_judges_requests_in_chain_order(system: System, tmp_path: Path) -> None:
    bodies, _ = await _two_requests_for_one_device(system, tmp_path)

    delivered = await system.client.post(
        "/assethub/v1/messages/batch",
        json={"messages": [json.loads(bodies["R2"]), json.loads(bodies["R1"])]},  # the later one first
    )
    assert delivered.status_code == 200, delivered.text
    assert [r["status_code"] for r in delivered.json()["results"]] == [200, 200]
    await system.settle()
    assert await _answers(system) == {"R1": ("ACCEPTED", []), "R2": ("REJECTED", ["DEVICE_ALREADY_ENROLLED"])}
