"""Object privacy between two aggregators, for every object type: neither reads, changes nor deletes the
other's vens, resources, reports and subscriptions (404, as if absent; listings leave them out), and each
sees programs and events only by the targets granted to it, with the other targets hidden."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from derbridge.edge.domain import Role
from tests.support.edge import assert_problem, assert_schema, close_clients, make_client, off_loop, serve, ven_client

if TYPE_CHECKING:
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


async def test_two_aggregators_cannot_touch_each_others_objects(system: System, vtn: str, tmp_path: Path) -> None:
    hook = FastAPI()

    @hook.get("/h")
    async def challenge(echo: str) -> PlainTextResponse:
        return PlainTextResponse(echo)

    a = await ven_client(vtn, make_client(system, "ECOBEE"))
    b = await ven_client(vtn, make_client(system, "NEST"))
    bl = await ven_client(vtn, make_client(system, "UTILITY", Role.BL), bl=True)
    async with serve(hook) as hook_url:
        own: dict[str, dict[str, str]] = {}
        for name, c in (("a", a), ("b", b)):
            ven = (await off_loop(c.create_ven, {"objectType": "VEN_VEN_REQUEST", "venName": f"ven-{name}"})).json()
            res = (
                await off_loop(
                    c.create_resource,
                    {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": f"r-{name}", "venID": ven["id"]},
                )
            ).json()
            sub = await off_loop(
                c.create_subscription,
                {
                    "clientName": name,
                    "objectOperations": [
                        {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": hook_url + "/h"}
                    ],
                },
            )
            assert sub.status_code == 201, sub.text
            own[name] = {"ven": ven["id"], "resource": res["id"], "subscription": sub.json()["id"]}
        program = (await off_loop(bl.create_program, {"programName": "P"})).json()
        # The BL grants ven-a the target "group-a"; an event for group-a and one for everybody.
        granted = await off_loop(
            bl.update_ven,
            own["a"]["ven"],
            {
                "objectType": "BL_VEN_REQUEST",
                "clientID": (await off_loop(a.get_ven_by_id, own["a"]["ven"])).json()["clientID"],
                "venName": "ven-a",
                "targets": ["group-a"],
            },
        )
        assert granted.status_code == 200, granted.text
        targeted = (
            await off_loop(
                bl.create_event, {"programID": program["id"], "targets": ["group-a", "group-z"], "intervals": []}
            )
        ).json()
        everyone = (await off_loop(bl.create_event, {"programID": program["id"], "intervals": []})).json()
        # A report by a on the event for everybody.
        report = await off_loop(
            a.create_report,
            {
                "eventID": everyone["id"],
                "clientName": "a",
                "resources": [
                    {
                        "resourceName": "r-a",
                        "intervals": [{"id": 0, "payloads": [{"type": "OPERATING_STATE", "values": ["NORMAL"]}]}],
                    }
                ],
            },
        )
        assert report.status_code == 201, report.text
        own["a"]["report"] = report.json()["id"]

    getters = {
        "ven": b.get_ven_by_id,
        "resource": b.get_resource_by_id,
        "subscription": b.get_subscription_by_id,
        "report": b.get_report_by_id,
    }
    deleters = {
        "ven": b.delete_ven,
        "resource": b.delete_resource,
        "subscription": b.delete_subscription,
        "report": b.delete_report,
    }
    for kind, object_id in own["a"].items():
        assert_problem(await off_loop(getters[kind], object_id), 404)
        assert_problem(await off_loop(deleters[kind], object_id), 404)
    assert_problem(
        await off_loop(b.update_ven, own["a"]["ven"], {"objectType": "VEN_VEN_REQUEST", "venName": "stolen"}), 404
    )
    assert_problem(
        await off_loop(
            b.update_resource,
            own["a"]["resource"],
            {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "x", "venID": own["a"]["ven"]},
        ),
        404,
    )
    assert_problem(
        await off_loop(
            b.create_resource, {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "x", "venID": own["a"]["ven"]}
        ),
        404,
    )
    a_client = (await off_loop(a.get_ven_by_id, own["a"]["ven"])).json()["clientID"]
    # Listings: b sees only its own.
    for listing, schema in (
        (b.get_vens, "ven"),
        (b.get_resources, "resource"),
        (b.get_subscriptions, "subscription"),
        (b.get_reports, "report"),
    ):
        body = (await off_loop(listing)).json()
        assert_schema(body, schema, many=True)
        assert body or schema == "report"
        assert all(item["clientID"] != a_client for item in body)
    assert (await off_loop(b.get_reports)).json() == []
    # Events by targets: b sees only the untargeted one; a sees both, with group-z hidden.
    assert [e["id"] for e in (await off_loop(b.get_events)).json()] == [everyone["id"]]
    assert_problem(await off_loop(b.get_event_by_id, targeted["id"]), 404)
    seen = {e["id"]: e for e in (await off_loop(a.get_events)).json()}
    assert set(seen) == {targeted["id"], everyone["id"]}
    assert seen[targeted["id"]]["targets"] == ["group-a"]
    # Reports follow the same rule: a may report on the targeted event (granted through its ven), b may not.
    for client, name, status in ((a, "a", 201), (b, "b", 400)):
        on_targeted = await off_loop(
            client.create_report,
            {
                "eventID": targeted["id"],
                "clientName": name,
                "resources": [
                    {
                        "resourceName": f"r-{name}",
                        "intervals": [{"id": 0, "payloads": [{"type": "OPERATING_STATE", "values": ["NORMAL"]}]}],
                    }
                ],
            },
        )
        if status == 201:
            assert on_targeted.status_code == 201, on_targeted.text
        else:
            assert_problem(on_targeted, 400)  # POST /reports has no 404 in openadr3.yaml
    # A VEN may not grant itself targets.
    assert_problem(
        await off_loop(
            b.update_ven,
            own["b"]["ven"],
            {"objectType": "BL_VEN_REQUEST", "clientID": "x", "venName": "ven-b", "targets": ["group-a"]},
        ),
        403,
    )
    # The BL sees everything, and pages in a stable order.
    all_vens = (await off_loop(bl.get_vens)).json()
    assert [v["venName"] for v in all_vens] == ["ven-a", "ven-b"]
    assert [v["venName"] for v in (await off_loop(bl.get_vens, skip=1, limit=1)).json()] == ["ven-b"]
