"""The VTN driven by the ``openadr3`` PyPI client as a real VEN over HTTP on loopback, with the whole
system embedded: a resource with enrollment attributes enrolls through F1 and shows Asset Hub's answer; a
DERMS event reaches the aggregator's VEN as an OpenADR event targeted at its reserved resources; the VEN's
report reaches Asset Hub's participation records (F7) and the DERMS's communication status; a webhook
receiver on loopback gets the event's CREATE and, on cancellation, its DELETE. Every body is validated
against openadr3.yaml."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from derbridge.derms.adapters import tables as dm
from derbridge.edge.domain import Role
from derbridge.settings import Settings
from tests.support.cis_rows import cis_row
from tests.support.edge import (
    PREFIX,
    assert_problem,
    assert_schema,
    close_clients,
    make_client,
    off_loop,
    serve,
    ven_client,
)
from tests.support.enrollment import create_program, load_customers
from tests.support.events import create_event, participations, prepare
from tests.support.vtn import Receiver, attributes_of, enrollment_attributes, is_status_event

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The settings of every backend, with plain-HTTP callbacks to loopback allowed (the test's receiver)."""
    edge = settings.edge.model_copy(update={"allow_http_callbacks": True, "allow_private_callbacks": True})
    return settings.model_copy(update={"edge": edge})


@pytest.fixture
async def vtn(system: System) -> AsyncIterator[str]:
    """The embedded system's server on a loopback port."""
    async with serve(system.app) as base:
        try:
            yield base
        finally:
            close_clients()


async def test_a_ven_enrolls_a_resource_and_reads_the_answer(system: System, vtn: str, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1), cis_row(2)])
    await create_program(system)
    ven = await ven_client(vtn, make_client(system, "ECOBEE"))

    created = await off_loop(ven.create_ven, {"objectType": "VEN_VEN_REQUEST", "venName": "ecobee-ven"})
    assert created.status_code == 201, created.text
    assert_schema(created.json(), "ven")
    ven_id = created.json()["id"]
    good = {
        "objectType": "VEN_RESOURCE_REQUEST",
        "resourceName": "NIC1",
        "venID": ven_id,
        "attributes": enrollment_attributes(1),
    }
    response = await off_loop(ven.create_resource, good)
    assert response.status_code == 201, response.text
    assert_schema(response.json(), "resource")
    resource_id = response.json()["id"]
    # Customer 2 has no account A9: Asset Hub refuses it, and the reasons come back on the resource.
    stranger = enrollment_attributes(2)
    for a in stranger:
        if a["type"] == "CIS_ACCOUNT_ID":
            a["values"] = ["A9"]
    refused = await off_loop(ven.create_resource, good | {"resourceName": "NIC2", "attributes": stranger})
    assert refused.status_code == 201, refused.text
    missing = await off_loop(
        ven.create_resource,
        good
        | {"resourceName": "NIC3", "attributes": [a for a in enrollment_attributes(3) if a["type"] != "CUSTOMER_NAME"]},
    )
    assert_problem(missing, 400)

    await system.settle()
    resource = (await off_loop(ven.get_resource_by_id, resource_id)).json()
    assert_schema(resource, "resource")
    assert attributes_of(resource)["ENROLLMENT_STATUS"] == ["ACCEPTED"]
    assert attributes_of(resource)["ENROLLMENT_STATE"] == ["PENDING"]
    listed = (await off_loop(ven.get_resources)).json()
    assert_schema(listed, "resource", many=True)
    by_name = {r["resourceName"]: attributes_of(r) for r in listed}
    assert by_name["NIC2"]["ENROLLMENT_STATUS"] == ["REJECTED"]
    assert by_name["NIC2"]["ENROLLMENT_REJECTION"]
    # The aggregator spoke about NIC1: its communication status is ONLINE, from ECOBEE.
    async with system.runtime.async_engine("derms").connect() as connection:
        status = (
            await connection.execute(select(dm.communication_status).where(dm.communication_status.c.nic_id == "NIC1"))
        ).one()
    assert (status.communication_status, status.source) == ("ONLINE", "ECOBEE")


async def test_an_event_reaches_the_ven_and_its_report_reaches_asset_hub(
    system: System, vtn: str, tmp_path: Path
) -> None:
    await prepare(system, tmp_path)
    ven = await ven_client(vtn, make_client(system, "ECOBEE"))
    other = await ven_client(vtn, make_client(system, "NEST"))
    ven_id = (await off_loop(ven.create_ven, {"objectType": "VEN_VEN_REQUEST", "venName": "ecobee"})).json()["id"]
    nest_id = (await off_loop(other.create_ven, {"objectType": "VEN_VEN_REQUEST", "venName": "nest"})).json()["id"]
    for name in ("e-01", "e-02"):
        r = await off_loop(
            ven.create_resource, {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": name, "venID": ven_id}
        )
        assert r.status_code == 201, r.text
    for name in ("n-01", "n-02"):
        r = await off_loop(
            other.create_resource, {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": name, "venID": nest_id}
        )
        assert r.status_code == 201, r.text

    receiver = Receiver()
    async with serve(receiver.app) as hook:
        subscription = {
            "clientName": "ecobee",
            "objectOperations": [
                {
                    "objects": ["EVENT"],
                    "operations": ["CREATE", "UPDATE", "DELETE"],
                    "callbackUrl": hook + "/hook",
                    "bearerToken": "hook-secret",
                }
            ],
        }
        made = await off_loop(ven.create_subscription, subscription)
        assert made.status_code == 201, made.text
        assert_schema(made.json(), "subscription")

        event = await create_event(system, target_devices=4)  # e-01, n-01, e-02, n-02 by rank
        await system.settle(jobs=True)
        await system.run_jobs()  # deliver the notifications the mirror queued
        listed = (await off_loop(ven.get_events)).json()
        assert_schema(listed, "event", many=True)
        # Besides the program's standing status event (heartbeats), the one DERMS event.
        assert [e["eventName"] for e in listed if is_status_event(e)] == ["SUMMER-BYOT status"]
        events = [e for e in listed if not is_status_event(e)]
        assert len(events) == 1
        assert sorted(events[0]["targets"]) == ["e-01", "e-02"]  # its own resources only
        nest_events = [e for e in (await off_loop(other.get_events)).json() if not is_status_event(e)]
        assert [sorted(e["targets"]) for e in nest_events] == [["n-01", "n-02"]]
        # The status event's CREATE too (the mirror made it after the subscription), then the DERMS event's.
        received = [(t, b) for t, b in receiver.received if not is_status_event(b["object"])]
        assert [(token, body["operation"], body["objectType"]) for token, body in received] == [
            ("Bearer hook-secret", "CREATE", "EVENT")
        ]
        assert_schema(received[0][1], "notification")

        # The event starts; the VEN reports: e-01 took part and shed 1.2 kW, e-02 was overridden.
        system.clock.advance(timedelta(hours=1, minutes=5))
        await system.run_jobs()
        report = {
            "eventID": events[0]["id"],
            "clientName": "ecobee",
            "resources": [
                {
                    "resourceName": "e-01",
                    "intervals": [
                        {
                            "id": 0,
                            "payloads": [
                                {"type": "PARTICIPATION", "values": ["SUCCESSFUL_PARTICIPATION"]},
                                {"type": "SHED_KW", "values": [1.2]},
                                {"type": "OPERATING_STATE", "values": ["NORMAL"]},
                            ],
                        }
                    ],
                },
                {
                    "resourceName": "e-02",
                    "intervals": [{"id": 0, "payloads": [{"type": "OVERRIDE", "values": [True]}]}],
                },
            ],
        }
        sent = await off_loop(ven.create_report, report)
        assert sent.status_code == 201, sent.text
        assert_schema(sent.json(), "report")
        # NEST cannot report on ECOBEE's event, nor name ECOBEE's resources.
        assert_problem(await off_loop(other.create_report, report), 400)  # POST /reports: no 404 in the spec
        await system.settle()
        records = await participations(system, event["event_id"])
        assert records[("ECOBEE", "e-01")]["outcome"] == "SUCCESSFUL_PARTICIPATION"
        assert records[("ECOBEE", "e-02")]["outcome"] == "IN_FLIGHT_OVERRIDE"
        async with system.runtime.async_engine("derms").connect() as connection:
            state = await connection.scalar(
                select(dm.communication_status.c.operating_state).where(dm.communication_status.c.nic_id == "e-01")
            )
        assert state == "NORMAL"

    await asyncio.sleep(0)


async def test_a_cancelled_event_is_withdrawn_and_subscribers_hear_it(system: System, vtn: str, tmp_path: Path) -> None:
    await prepare(system, tmp_path)
    ven = await ven_client(vtn, make_client(system, "ECOBEE"))
    ven_id = (await off_loop(ven.create_ven, {"objectType": "VEN_VEN_REQUEST", "venName": "ecobee"})).json()["id"]
    await off_loop(ven.create_resource, {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "e-01", "venID": ven_id})
    receiver = Receiver()
    async with serve(receiver.app) as hook:
        op = {"objects": ["EVENT"], "operations": ["CREATE", "DELETE"], "callbackUrl": hook + "/hook"}
        assert (
            await off_loop(ven.create_subscription, {"clientName": "e", "objectOperations": [op]})
        ).status_code == 201
        event = await create_event(system, target_devices=2)
        await system.settle(jobs=True)
        [mirrored] = [e for e in (await off_loop(ven.get_events)).json() if not is_status_event(e)]
        cancelled = await system.client.post(
            f"/derms/v1/events/{event['event_id']}/cancel", json={"reason_text": "test"}
        )
        assert cancelled.status_code == 200, cancelled.text
        await system.settle(jobs=True)
        await system.run_jobs()
        assert [e for e in (await off_loop(ven.get_events)).json() if not is_status_event(e)] == []
        assert_problem(await off_loop(ven.get_event_by_id, mirrored["id"]), 404)
        received = [b for _, b in receiver.received if not is_status_event(b["object"])]
        assert [b["operation"] for b in received] == ["CREATE", "DELETE"]
        assert received[1]["object"]["id"] == mirrored["id"]


async def test_tokens_and_scopes_are_enforced(system: System, vtn: str) -> None:
    import httpx

    ven_id, secret = make_client(system, "ECOBEE")
    async with httpx.AsyncClient(base_url=vtn + PREFIX) as http:
        server = await http.get("/auth/server")
        assert_schema(server.json(), "authServerInfo")
        wrong = await http.post(
            "/auth/token", data={"grant_type": "client_credentials", "client_id": ven_id, "client_secret": "x"}
        )
        assert_problem(wrong, 401)
        assert wrong.json()["error"] == "invalid_client"
        assert_problem(await http.get("/programs"), 401)
        assert_problem(await http.get("/programs", headers={"Authorization": "Bearer forged"}), 401)
        token = (
            await http.post(
                "/auth/token", data={"grant_type": "client_credentials", "client_id": ven_id, "client_secret": secret}
            )
        ).json()
        assert_schema(token, "clientCredentialResponse")
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert (await http.get("/programs", headers=headers)).status_code == 200
        # A VEN may not write programs or events (the BL's scopes).
        assert_problem(await http.post("/programs", json={"programName": "x"}, headers=headers), 403)
        assert_problem(await http.post("/events", json={"programID": "x"}, headers=headers), 403)
        # A bad body is a 400 problem.
        assert_problem(await http.post("/vens", json={"objectType": "VEN_VEN_REQUEST"}, headers=headers), 400)
        # A revoked client's token stops working at once.
        from derbridge.edge.auth import revoke_client

        assert revoke_client(system.runtime.sync_engine("derms"), ven_id)
        assert_problem(await http.get("/programs", headers=headers), 401)
    bl = make_client(system, "UTILITY", Role.BL)
    blc = await ven_client(vtn, bl, bl=True)
    made = await off_loop(blc.create_program, {"programName": "TOU"})
    assert made.status_code == 201, made.text
    assert_schema(made.json(), "program")
    assert_problem(await off_loop(blc.create_report, {"eventID": "x", "clientName": "c", "resources": []}), 403)
