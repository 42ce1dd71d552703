"""F1 · enrollment-request end to end: an aggregator's requests posted to the DERMS API, forwarded over the
bridge, validated by Asset Hub, and answered back — read by the aggregator from the DERMS, checked in both
databases, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import time
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from derbridge.assethub.adapters import tables as ah
from derbridge.contracts.enrollment_request import TYPE, EnrollmentRequestBatch
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as dm
from derbridge.sim.generator import INVALID_START_DATE, REJECTION_REASONS, generate_utility
from tests.support.cis_rows import cis_row
from tests.support.enrollment import (
    PROBLEM,
    PROGRAM,
    codes,
    count,
    create_program,
    device,
    import_cis,
    load_customers,
    outbox_envelopes,
    post_batch,
    post_request,
    read_request,
    request_body,
)

if TYPE_CHECKING:  # imported by pytest_plugins below: importing it first would stop pytest rewriting its asserts
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

# --- generated utility: every reason code, end to end --------------------------------------------------------


def inventory_requests(path: Path) -> list[tuple[dict[str, Any], str]]:
    """The requests of an aggregator inventory file with the answer each must get (``expected_result``)."""

    def text(value: str) -> str | None:
        return value or None

    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    requests = []
    for _, group in groupby(rows, key=lambda r: r["request_id"]):
        lines = list(group)
        first = lines[0]
        body = {
            "request_id": first["request_id"],
            "requested_at": first["requested_at"],
            "customer": {
                "cis_person_id": first["cis_person_id"],
                "cis_account_id": first["cis_account_id"],
                "name": first["name"],
                "home_phone": text(first["home_phone"]),
                "business_phone": text(first["business_phone"]),
                "email": text(first["email"]),
            },
            "program": {
                "program_code": first["program_code"],
                "cis_service_agreement_id": text(first["cis_service_agreement_id"]),
                "start_date": text(first["start_date"]),
            },
            "location": {
                "division": first["division"],
                "cis_premise_id": first["cis_premise_id"],
                "cis_service_point_id": first["cis_service_point_id"],
                "time_zone": first["time_zone"],
                "address1": first["address1"],
                "address2": text(first["address2"]),
                "address3": text(first["address3"]),
                "address4": text(first["address4"]),
                "city": first["city"],
                "county": text(first["county"]),
                "state": first["state"],
                "postal": first["postal"],
                "country": first["country"],
            },
            "devices": [
                {
                    "sequence": int(line["device_sequence"]),
                    "device_type": line["device_type"],
                    "manufacturer": line["manufacturer"],
                    "model": line["model"],
                    "serial_no": line["serial_no"],
                    "nic_id": line["nic_id"],
                    "head_end_system": line["head_end_system"],
                    "badge_no": text(line["badge_no"]),
                }
                for line in lines
            ],
            "installation_method": first["installation_method"],
            "asset_ownership": first["asset_ownership"],
        }
        requests.append((body, first["expected_result"]))
    return requests


async def test_every_generated_request_gets_the_answer_it_was_built_for(system: System, tmp_path: Path) -> None:
    generated = generate_utility(60, 11, tmp_path / "utility", program_code=PROGRAM)
    import_cis(system.runtime, generated.cis_extract)
    await create_program(system)

    expected: dict[tuple[str, str], str] = {}
    for head_end, path in generated.inventories.items():
        requests = inventory_requests(path)
        if not requests:
            continue
        batch = await post_batch(system.client, head_end, [body for body, _ in requests])
        assert (batch["new"], batch["repeated"]) == (len(requests), 0)
        assert all(r["status"] == "RECEIVED" for r in batch["requests"])
        expected |= {(head_end, body["request_id"]): result for body, result in requests}
    assert len(expected) == generated.requests
    assert set(expected.values()) == {"ACCEPTED", *REJECTION_REASONS}  # every planted reason is in the test

    await system.settle()

    answered: dict[tuple[str, str], dict[str, Any]] = {}
    for head_end, request_id in expected:
        answered[head_end, request_id] = await read_request(system.client, head_end, request_id)
    for key, result in expected.items():
        recorded = answered[key]
        assert recorded["enrollment_id"], recorded
        if result == "ACCEPTED":
            assert (recorded["status"], recorded["state"], recorded["rejections"]) == ("ACCEPTED", "PENDING", []), key
        else:
            assert (recorded["status"], recorded["state"]) == ("REJECTED", "REJECTED"), key
            assert result in codes(recorded), (key, recorded["rejections"])
            assert all(r["detail"] for r in recorded["rejections"])
    invalid_dates = [
        answered[key]
        for key, result in expected.items()
        if result == "INVALID_REQUEST" and "program.start_date" in [r["field"] for r in answered[key]["rejections"]]
    ]
    assert invalid_dates, f"the generator plants start dates like {INVALID_START_DATE} among INVALID_REQUEST"

    # Asset Hub holds one enrollment per request, in the state and with the id the DERMS was told.
    async with system.runtime.async_engine("assethub").connect() as connection:
        rows = await connection.execute(
            select(
                ah.enrollments.c.head_end_system,
                ah.enrollments.c.request_id,
                ah.enrollments.c.enrollment_id,
                ah.enrollments.c.state,
            )
        )
        held = {(r.head_end_system, r.request_id): (r.enrollment_id, r.state) for r in rows}
        transitions = await connection.execute(
            select(ah.enrollment_transitions.c.from_state, ah.enrollment_transitions.c.to_state, func.count()).group_by(
                ah.enrollment_transitions.c.from_state, ah.enrollment_transitions.c.to_state
            )
        )
        kept = {(r[0], r[1]): r[2] for r in transitions}
    assert held == {key: (answered[key]["enrollment_id"], answered[key]["state"]) for key in expected}
    accepted = sum(1 for result in expected.values() if result == "ACCEPTED")
    assert kept == {(None, "PENDING"): accepted, (None, "REJECTED"): len(expected) - accepted}
    assert await count(system, "assethub", ah.devices) == sum(
        len(body["devices"])
        for path in generated.inventories.values()
        for body, result in inventory_requests(path)
        if result == "ACCEPTED"
    )


# --- hand-built requests ------------------------------------------------------------------------------------


async def test_each_reason_code_reaches_the_derms_record(system: System, tmp_path: Path) -> None:
    load_customers(
        system.runtime,
        tmp_path,
        [cis_row(n) for n in range(1, 9)] + [cis_row(9, account_status="SUSPENDED")],
    )
    await create_program(system)
    await create_program(system, "WINTER-BYOT", status="SUSPENDED")
    await create_program(system, "EV-PILOT", eligible_device_types=["EV_CHARGER"])
    bodies = [
        request_body(1),  # accepted
        request_body(2, customer=request_body(2)["customer"] | {"cis_account_id": "A404"}),
        request_body(9),
        request_body(3, location=request_body(3)["location"] | {"cis_premise_id": "PR4"}),
        request_body(4, program="NO-SUCH-PROGRAM"),
        request_body(5, program="WINTER-BYOT"),
        request_body(6, devices=[device(6, device_type="WATER_HEATER")]),
        request_body(7, request_id="R7-again", devices=[device(1)]),  # device 1 is taken by R1
        request_body(8, start_date="2027-02-30"),
    ]
    batch = await post_batch(system.client, "ECOBEE", bodies)
    assert batch["new"] == len(bodies)
    await system.settle()

    recorded = [await read_request(system.client, "ECOBEE", body["request_id"]) for body in bodies]
    assert recorded[0]["status"] == "ACCEPTED"
    assert [codes(r) for r in recorded[1:]] == [
        ["UNKNOWN_ACCOUNT"],
        ["ACCOUNT_NOT_ACTIVE"],
        ["PREMISE_NOT_ON_ACCOUNT"],
        ["UNKNOWN_PROGRAM"],
        ["PROGRAM_NOT_OPEN"],
        ["DEVICE_TYPE_NOT_ELIGIBLE"],
        ["DEVICE_ALREADY_ENROLLED"],
        ["INVALID_REQUEST"],
    ]
    assert recorded[2]["rejections"][0]["field"] == "customer.cis_account_id"
    assert recorded[8]["rejections"][0] == {
        "code": "INVALID_REQUEST",
        "field": "program.start_date",
        "detail": "start_date '2027-02-30' is not a date; send it as YYYY-MM-DD, or leave it out",
    }
    assert all(r["status"] == "REJECTED" and r["answered_at"] for r in recorded[1:])
    # A program that enrolls only EV chargers refuses a thermostat for that reason too.
    ev = await post_request(system.client, request_body(2, request_id="R2-ev", program="EV-PILOT"))
    await system.settle()
    assert codes(await read_request(system.client, "ECOBEE", ev["request_id"])) == ["DEVICE_TYPE_NOT_ELIGIBLE"]

    # The refusal is kept in Asset Hub: the enrollment in REJECTED, its reasons and its transition.
    response = await system.client.get(f"/assethub/v1/enrollments/{recorded[3]['enrollment_id']}")
    enrollment = response.json()
    assert enrollment["state"] == "REJECTED"
    assert [r["code"] for r in enrollment["rejections"]] == ["PREMISE_NOT_ON_ACCOUNT"]
    assert [(x["from_state"], x["to_state"], x["reason"]) for x in enrollment["transitions"]] == [
        (None, "REJECTED", "PREMISE_NOT_ON_ACCOUNT (location.cis_premise_id)")
    ]
    assert enrollment["devices"] == []


async def test_the_same_request_twice_gives_one_enrollment_and_the_same_answer(system: System, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2)])
    await create_program(system)

    first = await post_request(system.client, request_body(1))
    assert (first["status"], first["enrollment_id"], first["state"]) == ("RECEIVED", None, None)
    again = await post_request(system.client, request_body(1))  # before Asset Hub answered
    assert again == first  # not forwarded twice: the same recorded request, same message
    assert len(await outbox_envelopes(system, "derms", "enrollment-request.v1")) == 1
    await system.settle()

    answered = await read_request(system.client, "ECOBEE", "R1")
    assert answered["status"] == "ACCEPTED"
    after = await post_request(system.client, request_body(1, requested_at="2027-05-21T10:00:00Z"))
    assert after == answered
    # In a batch, a repeat (earlier, or twice in the batch itself) is not forwarded either.
    batch = await post_batch(system.client, "ECOBEE", [request_body(1), request_body(2), request_body(2)])
    assert (batch["new"], batch["repeated"]) == (1, 2)
    assert batch["requests"][0] == answered
    assert batch["requests"][1]["request_id"] == batch["requests"][2]["request_id"] == "R2"
    sent = await outbox_envelopes(system, "derms", "enrollment-request.v1")
    assert [[r["request_id"] for r in e.payload["requests"]] for e in sent] == [["R1"], ["R2"]]
    assert batch["message_id"] == sent[1].message_id
    await system.settle()

    # Asset Hub is idempotent on its own: the same request in another message (a DERMS that lost its
    # record, an operator's manual re-send) gets the first answer, and no second enrollment.
    resend = sent[0].model_copy(update={"message_id": "resend-1", "correlation_id": "resend-1"})
    response = await system.client.post(
        "/assethub/v1/messages", json=resend.model_dump(mode="json"), headers={"Idempotency-Key": "resend-1"}
    )
    assert response.status_code == 200, response.text
    replies = await outbox_envelopes(system, "assethub", "enrollment-response.v1")
    assert (replies[-1].correlation_id, replies[-1].causation_id) == ("resend-1", "resend-1")
    assert replies[-1].payload["answers"] == replies[0].payload["answers"]
    assert replies[0].payload["answers"][0]["enrollment_id"] == answered["enrollment_id"]
    assert await count(system, "assethub", ah.enrollments) == 2
    assert await count(system, "assethub", ah.enrollments, ah.enrollments.c.request_id == "R1") == 1


async def test_a_device_requested_twice_in_one_batch_is_already_enrolled_the_second_time(
    system: System, tmp_path: Path
) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2), cis_row(3)])
    await create_program(system)
    await create_program(system, "PEAK-SAVER")
    await create_program(system, "RIVAL", excluded_program_codes=[PROGRAM])
    bodies = [
        request_body(1),
        request_body(2, devices=[device(1)]),  # the same device, same program
        request_body(3, request_id="R3-peak", program="PEAK-SAVER", devices=[device(1)]),  # allowed elsewhere
        request_body(3, request_id="R3-rival", program="RIVAL", devices=[device(1)]),  # RIVAL excludes it
    ]
    await post_batch(system.client, "ECOBEE", bodies)
    await system.settle()

    recorded = [await read_request(system.client, "ECOBEE", b["request_id"]) for b in bodies]
    assert [r["status"] for r in recorded] == ["ACCEPTED", "REJECTED", "ACCEPTED", "REJECTED"]
    assert codes(recorded[1]) == codes(recorded[3]) == ["DEVICE_ALREADY_ENROLLED"]
    assert recorded[0]["enrollment_id"] in recorded[1]["rejections"][0]["detail"]
    # One device row, held by the two accepted enrollments.
    assert await count(system, "assethub", ah.devices) == 1
    assert await count(system, "assethub", ah.enrollment_devices) == 2


async def test_an_unparseable_start_date_refuses_only_its_own_request(system: System, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(n) for n in range(1, 6)])
    await create_program(system)
    bodies = [
        request_body(1, start_date="2027-13-45"),
        request_body(2, start_date=20270615),
        request_body(3, start_date="the first of June, or thereabouts, if that suits"),
        request_body(4, start_date=""),
        request_body(5),
    ]
    batch = await post_batch(system.client, "ECOBEE", bodies)
    assert batch["new"] == 5
    sent = (await outbox_envelopes(system, "derms", "enrollment-request.v1"))[0].payload["requests"]
    assert [(r["program"]["start_date"], r["raw_start_date"]) for r in sent] == [
        (None, "2027-13-45"),
        (None, "20270615"),
        (None, "the first of June, or thereabou…"),
        (None, None),
        ("2027-06-15", None),
    ]
    await system.settle()

    recorded = [await read_request(system.client, "ECOBEE", b["request_id"]) for b in bodies]
    assert [r["status"] for r in recorded] == ["REJECTED", "REJECTED", "REJECTED", "ACCEPTED", "ACCEPTED"]
    assert [[(x["code"], x["field"]) for x in r["rejections"]] for r in recorded[:3]] == [
        [("INVALID_REQUEST", "program.start_date")]
    ] * 3
    async with system.runtime.async_engine("assethub").connect() as connection:
        dates = dict((await connection.execute(select(ah.enrollments.c.request_id, ah.enrollments.c.start_date))).all())
    assert (dates["R4"], dates["R5"]) == (None, "2027-06-15")


async def test_a_batch_is_one_message_and_its_answer_one_reply(system: System, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(n) for n in range(1, 4)])
    await create_program(system)
    batch = await post_batch(
        system.client, "NEST", [request_body(n, devices=[device(n, head_end="NEST")]) for n in (3, 1, 2)]
    )
    requests = await outbox_envelopes(system, "derms", "enrollment-request.v1")
    assert len(requests) == 1
    assert requests[0].message_id == batch["message_id"]
    assert requests[0].business_key == "NEST:R3+2"
    assert requests[0].source.instance == "derms-1"
    listed = await system.client.get("/derms/v1/enrollment-requests", params={"head_end_system": "NEST"})
    assert [r["status"] for r in listed.json()["items"]] == ["RECEIVED"] * 3
    await system.settle()

    replies = await outbox_envelopes(system, "assethub", "enrollment-response.v1")
    assert len(replies) == 1
    reply = replies[0]
    assert (reply.correlation_id, reply.causation_id) == (requests[0].correlation_id, requests[0].message_id)
    assert [a["request_id"] for a in reply.payload["answers"]] == ["R3", "R1", "R2"]
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = (await connection.execute(select(dm.enrollment_requests))).mappings().all()
    assert {r["message_id"] for r in rows} == {batch["message_id"]}
    assert all(r["answer"] == "ACCEPTED" and r["state"] == "PENDING" for r in rows)
    assert {r["request_id"]: r["enrollment_id"] for r in rows} == {
        a["request_id"]: a["enrollment_id"] for a in reply.payload["answers"]
    }
    listed = await system.client.get(
        "/derms/v1/enrollment-requests", params={"head_end_system": "NEST", "status": "ACCEPTED", "limit": 2}
    )
    page = listed.json()
    assert [r["request_id"] for r in page["items"]] == ["R1", "R2"]
    assert page["next_after"] == "R2"
    received = await system.client.get(
        "/derms/v1/enrollment-requests", params={"head_end_system": "NEST", "status": "RECEIVED"}
    )
    assert received.json()["items"] == []


async def test_a_batch_of_a_thousand_requests_is_answered_in_seconds(system: System, tmp_path: Path) -> None:
    size = 1000
    load_customers(system.runtime, tmp_path, [cis_row(n) for n in range(size)])
    await create_program(system)
    bodies = [request_body(n) for n in range(size)]
    bodies[500] = request_body(500, devices=[device(499)])  # one refusal in the lot: device 499 is taken

    started = time.perf_counter()
    batch = await post_batch(system.client, "ECOBEE", bodies)
    await system.settle()
    took = time.perf_counter() - started

    assert batch["new"] == size
    async with system.runtime.async_engine("derms").connect() as connection:
        answers = dict(
            (
                await connection.execute(
                    select(dm.enrollment_requests.c.answer, func.count()).group_by(dm.enrollment_requests.c.answer)
                )
            ).all()
        )
    assert answers == {"ACCEPTED": size - 1, "REJECTED": 1}
    assert await count(system, "assethub", ah.enrollments, ah.enrollments.c.state == "PENDING") == size - 1
    assert await count(system, "assethub", ah.enrollment_devices) == size - 1
    assert took < 10, f"a batch of {size} took {took:.1f} s"


# --- the API's own refusals --------------------------------------------------------------------------------


async def test_the_derms_api_refuses_what_it_cannot_forward(system: System, tmp_path: Path) -> None:
    client = system.client
    response = await client.post(
        "/derms/v1/enrollment-requests/batch", json={"head_end_system": "ECOBEE", "requests": []}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert [e["field"] for e in response.json()["errors"]] == ["body.requests"]

    bad_end = request_body(1)
    bad_end["program"]["end_date"] = "2027-02-30"
    response = await client.post("/derms/v1/enrollment-requests", json=bad_end | {"head_end_system": "ECOBEE"})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.program.end_date"]

    response = await client.post("/derms/v1/enrollment-requests", json=request_body(1))  # no head_end_system
    assert response.status_code == 422
    assert "body.head_end_system" in [e["field"] for e in response.json()["errors"]]

    response = await client.get("/derms/v1/enrollment-requests/ECOBEE/R404")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert "ECOBEE:R404" in response.json()["detail"]

    response = await client.post(
        "/derms/v1/enrollment-requests",
        json=request_body(1) | {"head_end_system": "ECOBEE"},
        headers={"Authorization": "Bearer wrong"},
    )
    assert response.status_code == 401
    assert await count(system, "derms", dm.enrollment_requests) == 0
    assert await count(system, "derms", dm.outbox) == 0


async def test_two_batches_asking_for_one_device_at_once_enroll_it_once(system: System, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2)])
    await create_program(system)
    batches = [
        new_envelope(
            TYPE,
            EnrollmentRequestBatch.model_validate(
                {"head_end_system": "ECOBEE", "requests": [request_body(n, devices=[device(7)])]}
            ),
            business_key=f"ECOBEE:R{n}",
            occurred_at=system.clock.now(),
        )
        for n in (1, 2)
    ]
    responses = await asyncio.gather(
        *(
            system.client.post(
                "/assethub/v1/messages", json=b.model_dump(mode="json"), headers={"Idempotency-Key": b.message_id}
            )
            for b in batches
        )
    )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert sorted(r.json()["result"]["accepted"] for r in responses) == [0, 1]
    async with system.runtime.async_engine("assethub").connect() as connection:
        states = sorted((await connection.execute(select(ah.enrollments.c.state))).scalars())
    assert states == ["PENDING", "REJECTED"]
