"""Issue 15, the VTN's findings 2, 3, 6, 9 and 12: each attack as it was made, and its refusal.

Every test runs on SQLite and on PostgreSQL (the ``system`` fixture), against the whole application
in-process (``httpx.ASGITransport``), as two aggregators (A: ECOBEE, B: NEST) and the business logic."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from derbridge.edge.domain import Role
from tests.support.edge import assert_problem, make_client

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

VTN = "/openadr3/3.1.0"


class Caller:
    """One OpenADR client of the VTN, with its token."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(VTN + path, params=params, headers=self.headers)

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.http.post(VTN + path, json=body, headers=self.headers)

    async def post_raw(self, path: str, body: str) -> httpx.Response:
        headers = {**self.headers, "Content-Type": "application/json"}
        return await self.http.post(VTN + path, content=body.encode(), headers=headers)

    async def put(self, path: str, body: Any) -> httpx.Response:
        return await self.http.put(VTN + path, json=body, headers=self.headers)

    async def delete(self, path: str) -> httpx.Response:
        return await self.http.delete(VTN + path, headers=self.headers)


async def caller(system: System, http: httpx.AsyncClient, head_end: str, role: Role = Role.VEN) -> Caller:
    client_id, secret = make_client(system, head_end, role)
    answer = await http.post(
        VTN + "/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert answer.status_code == 200, answer.text
    return Caller(http, answer.json()["access_token"])


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def ven_with(who: Caller, ven_name: str, *resources: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ven = created(await who.post("/vens", {"objectType": "VEN_VEN_REQUEST", "venName": ven_name}))
    made = [
        created(
            await who.post("/resources", {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": r, "venID": ven["id"]})
        )
        for r in resources
    ]
    return ven, made


@pytest.fixture
async def http(system: System) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=system.app), base_url="http://vtn.test") as client:
        yield client


def report_on(event_id: str, resource_name: str) -> dict[str, Any]:
    return {
        "eventID": event_id,
        "clientName": "b",
        "resources": [
            {
                "resourceName": resource_name,
                "intervals": [{"id": 0, "payloads": [{"type": "OPERATING_STATE", "values": ["NORMAL"]}]}],
            }
        ],
    }


# --- finding 2: a VEN cannot grant itself a target ------------------------------------------------------


async def test_a_ven_naming_a_resource_after_another_aggregators_target_gains_nothing(
    system: System, http: httpx.AsyncClient
) -> None:
    a = await caller(system, http, "ECOBEE")
    b = await caller(system, http, "NEST")
    bl = await caller(system, http, "UTILITY", Role.BL)
    a_ven, [a_meter] = await ven_with(a, "ven-a", "meter-7")
    # The business logic grants A's resource the target "feeder-9" (only the BL writes targets).
    a_client = a_meter["clientID"]
    created(
        await bl.put(
            f"/resources/{a_meter['id']}",
            {
                "objectType": "BL_RESOURCE_REQUEST",
                "clientID": a_client,
                "resourceName": "meter-7",
                "venID": a_ven["id"],
                "targets": ["feeder-9"],
            },
        )
    )
    program = created(await bl.post("/programs", {"programName": "P"}))
    by_grant = created(await bl.post("/events", {"programID": program["id"], "targets": ["feeder-9"]}))
    by_name = created(await bl.post("/events", {"programID": program["id"], "targets": ["meter-7"]}))
    # B names its resources after A's granted target and after A's resource.
    await ven_with(b, "ven-b", "feeder-9", "meter-7")

    seen_by_b = {e["id"] for e in created(await b.get("/events"))}
    assert by_grant["id"] not in seen_by_b
    assert by_name["id"] not in seen_by_b
    for event in (by_grant, by_name):
        assert_problem(await b.get(f"/events/{event['id']}"), 404)
    # Nor can B report on them: the event is not visible to it (400: POST /reports has no 404).
    for event, name in ((by_grant, "feeder-9"), (by_name, "meter-7")):
        refused = assert_problem(await b.post("/reports", report_on(event["id"], name)), 400)
        assert refused["errors"][0]["field"] == "body.eventID"
    # A still sees the event for the target the business logic granted it.
    seen_by_a = {e["id"]: e for e in created(await a.get("/events"))}
    assert seen_by_a[by_grant["id"]]["targets"] == ["feeder-9"]
    # A resource's own name is no longer written among its targets.
    assert "targets" not in created(await b.get("/resources", resourceName="meter-7"))[0]


# --- finding 3: one text rule on every API ---------------------------------------------------------------


async def test_nul_and_invalid_text_are_refused_naming_the_field_never_500(
    system: System, http: httpx.AsyncClient
) -> None:
    a = await caller(system, http, "ECOBEE")
    ven, _ = await ven_with(a, "ven-a")

    refused = assert_problem(await a.get("/vens", venName="\x00"), 400)
    assert refused["errors"][0]["field"] == "query.venName"
    refused = assert_problem(await a.get("/resources", resourceName="r\x01"), 400)
    assert refused["errors"][0]["field"] == "query.resourceName"
    refused = assert_problem(await a.get("/vens/a%00b"), 400)
    assert [e["field"] for e in refused["errors"]] == ["path.venID"]

    refused = assert_problem(await a.post("/vens", {"objectType": "VEN_VEN_REQUEST", "venName": "v\x00"}), 400)
    assert [e["field"] for e in refused["errors"]] == ["body.venName"]
    refused = assert_problem(
        await a.post("/resources", {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "\x00", "venID": ven["id"]}),
        400,
    )
    assert [e["field"] for e in refused["errors"]] == ["body.resourceName"]
    subscription = {
        "clientName": "a\x00",
        "objectOperations": [{"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": "https://x.test/h"}],
    }
    refused = assert_problem(await a.post("/subscriptions", subscription), 400)
    assert [e["field"] for e in refused["errors"]] == ["body.clientName"]
    # A lone surrogate can only travel as an escape; it is refused where it sits.
    raw = json.dumps(
        {
            "objectType": "VEN_RESOURCE_REQUEST",
            "resourceName": "ok",
            "venID": ven["id"],
            "attributes": [{"type": "MODEL", "values": ["x", "PLACEHOLDER"]}],
        }
    ).replace("PLACEHOLDER", "\\ud800")
    refused = assert_problem(await a.post_raw("/resources", raw), 400)
    assert [e["field"] for e in refused["errors"]] == ["body.attributes.0.values.1"]
    # Nothing was created by any of them.
    assert [r["resourceName"] for r in created(await a.get("/resources"))] == []

    # The service APIs answer the same rule with their validation code, 422, naming the field.
    headers = {"Authorization": "Bearer test-token"}
    for path, field in (
        ("/assethub/v1/accounts?cis_account_id=a%01b", "query.cis_account_id"),
        ("/derms/v1/programs?x=%00", "query.x"),
    ):
        answer = await http.get(path, headers=headers)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == field
    answer = await http.post(
        "/derms/v1/edge-clients",
        json={"name": "bad\x00name", "head_end_system": "ECOBEE", "role": "ven"},
        headers=headers,
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == "body.name"


# --- finding 9: a name taken by another aggregator does not leak -------------------------------------------


async def test_a_taken_ven_name_says_nothing_of_its_owner(system: System, http: httpx.AsyncClient) -> None:
    a = await caller(system, http, "ECOBEE")
    b = await caller(system, http, "NEST")
    await ven_with(a, "NEST-sim")
    answer = await b.post("/vens", {"objectType": "VEN_VEN_REQUEST", "venName": "NEST-sim"})
    refused = assert_problem(answer, 400)  # POST /vens has no 409 in openadr3.yaml
    assert "NEST-sim" not in answer.text
    assert "another ven" not in answer.text.lower()
    assert refused["errors"] == [{"field": "body.venName", "message": "is not available"}]


# --- finding 12: the targets filter, problem instances, status codes -----------------------------------------


async def test_a_targets_filter_leaves_out_untargeted_programs_and_events(
    system: System, http: httpx.AsyncClient
) -> None:
    a = await caller(system, http, "ECOBEE")
    bl = await caller(system, http, "UTILITY", Role.BL)
    ven = created(await a.post("/vens", {"objectType": "VEN_VEN_REQUEST", "venName": "ven-a"}))
    created(
        await bl.put(
            f"/vens/{ven['id']}",
            {"objectType": "BL_VEN_REQUEST", "clientID": ven["clientID"], "venName": "ven-a", "targets": ["g1"]},
        )
    )
    targeted_program = created(await bl.post("/programs", {"programName": "T", "targets": ["g1"]}))
    open_program = created(await bl.post("/programs", {"programName": "U"}))
    targeted = created(await bl.post("/events", {"programID": open_program["id"], "targets": ["g1"]}))
    created(await bl.post("/events", {"programID": open_program["id"]}))

    assert [p["id"] for p in created(await a.get("/programs", targets="g1"))] == [targeted_program["id"]]
    assert [e["id"] for e in created(await a.get("/events", targets="g1"))] == [targeted["id"]]
    # Without a filter, the untargeted ones are for every VEN.
    assert len(created(await a.get("/events"))) == 2


async def test_problem_instance_is_the_path_percent_encoded_and_bounded(
    system: System, http: httpx.AsyncClient
) -> None:
    a = await caller(system, http, "ECOBEE")
    long_query = "x" * 9000
    answer = await a.get("/vens", venName=long_query)
    body = assert_problem(answer, 400)
    assert body["instance"] == VTN + "/vens"
    body = assert_problem(await a.get("/vens/é-ünknown"), 400)  # the id pattern refuses it
    assert body["instance"] == VTN + "/vens/%C3%A9-%C3%BCnknown"
    assert body["instance"].isascii()
    answer = await http.get("/derms/v1/programs/" + "é" * 3000, headers={"Authorization": "Bearer test-token"})
    assert answer.status_code in (404, 422), answer.text
    assert answer.json()["instance"].isascii()
    assert len(answer.json()["instance"]) <= 2000


async def test_status_codes_are_the_specs_for_each_operation(system: System, http: httpx.AsyncClient) -> None:
    from derbridge.edge.schemas import ObjectType
    from derbridge.edge.store import NewObject, insert_objects
    from derbridge.edge.token_vault import TokenVault, webhook_token_keys

    a = await caller(system, http, "ECOBEE")
    bl = await caller(system, http, "UTILITY", Role.BL)
    # POST /reports about an event nobody can see: 400 (the operation has no 404).
    assert_problem(await a.post("/reports", report_on("no-such-event", "r")), 400)
    # DELETE of a program the DERMS mirrors: 400 (DELETE has no 409); PUT keeps its 409.
    engine = system.runtime.async_engine("derms")
    async with engine.begin() as connection:
        [mirrored] = await insert_objects(
            connection,
            [NewObject(ObjectType.PROGRAM, {"programName": "M"}, [], name="M", unique_key="M", derms_key="M")],
            system.clock.now(),
            vault=TokenVault(webhook_token_keys(system.runtime.settings)),
        )
    assert_problem(await bl.delete(f"/programs/{mirrored.id}"), 400)
    assert_problem(await bl.put(f"/programs/{mirrored.id}", {"programName": "M"}), 409)
    assert created(await bl.get(f"/programs/{mirrored.id}"))["programName"] == "M"


# --- finding 6: sizes, quotas and bytes per page ------------------------------------------------------------


async def test_oversized_attributes_and_objects_are_refused_saying_the_limit(
    system: System, http: httpx.AsyncClient
) -> None:
    a = await caller(system, http, "ECOBEE")
    ven, _ = await ven_with(a, "ven-a")
    limit = system.runtime.settings.edge.max_attribute_chars

    def resource(name: str, *values: str) -> dict[str, Any]:
        attributes = [{"type": f"NOTE_{i}", "values": [v]} for i, v in enumerate(values)]
        return {
            "objectType": "VEN_RESOURCE_REQUEST",
            "resourceName": name,
            "venID": ven["id"],
            "attributes": attributes,
        }

    refused = assert_problem(await a.post("/resources", resource("big", "x" * (limit + 1))), 400)
    assert refused["errors"][0]["field"] == "body.attributes.0"
    assert str(limit) in refused["errors"][0]["message"]
    many = ["y" * (limit - 100)] * (system.runtime.settings.edge.max_object_chars // (limit - 100) + 1)
    refused = assert_problem(await a.post("/resources", resource("wide", *many)), 400)
    assert refused["errors"] == [
        {"field": "body", "message": refused["errors"][0]["message"]},
    ]
    assert str(system.runtime.settings.edge.max_object_chars) in refused["errors"][0]["message"]
    too_big = [{"type": "NOTE", "values": ["z" * (limit + 1)]}]
    answer = await a.put(
        f"/vens/{ven['id']}", {"objectType": "VEN_VEN_REQUEST", "venName": "ven-a", "attributes": too_big}
    )
    refused = assert_problem(answer, 400)
    assert refused["errors"][0]["field"] == "body.attributes.0"
    # Within the limits all is well.
    created(await a.post("/resources", resource("ok", "x" * (limit - 50))))
    assert [r["resourceName"] for r in created(await a.get("/resources"))] == ["ok"]


async def test_a_client_cannot_hold_more_objects_than_its_quota(system: System, http: httpx.AsyncClient) -> None:
    edge = system.runtime.settings.edge
    edge.max_vens_per_client, edge.max_resources_per_client, edge.max_reports_per_client = 1, 2, 1
    a = await caller(system, http, "ECOBEE")
    b = await caller(system, http, "NEST")
    bl = await caller(system, http, "UTILITY", Role.BL)
    ven, _ = await ven_with(a, "ven-a", "r1", "r2")
    refused = assert_problem(await a.post("/vens", {"objectType": "VEN_VEN_REQUEST", "venName": "ven-a2"}), 400)
    assert "the limit is 1" in refused["detail"]
    answer = await a.post(
        "/resources", {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "r3", "venID": ven["id"]}
    )
    assert "the limit is 2" in assert_problem(answer, 409)["detail"]
    batch = {"resources": [{"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "r4", "venID": ven["id"]}]}
    assert_problem(await a.post("/resources/batch", batch), 409)
    # Another client's quota is its own.
    await ven_with(b, "ven-b", "r1", "r2")
    program = created(await bl.post("/programs", {"programName": "P"}))
    event = created(await bl.post("/events", {"programID": program["id"]}))
    created(await a.post("/reports", report_on(event["id"], "r1")))
    assert "the limit is 1" in assert_problem(await a.post("/reports", report_on(event["id"], "r2")), 409)["detail"]
    # Deleting makes room again.
    [r1] = created(await a.get("/resources", resourceName="r1"))
    created(await a.delete(f"/resources/{r1['id']}"))
    created(
        await a.post("/resources", {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "r3", "venID": ven["id"]})
    )


async def test_a_listing_page_stops_at_its_byte_budget(system: System, http: httpx.AsyncClient) -> None:
    system.runtime.settings.edge.page_max_bytes = 2500
    a = await caller(system, http, "ECOBEE")
    bl = await caller(system, http, "UTILITY", Role.BL)
    ven, _ = await ven_with(a, "ven-a")
    for name in ("r1", "r2", "r3"):
        body = {
            "objectType": "VEN_RESOURCE_REQUEST",
            "resourceName": name,
            "venID": ven["id"],
            "attributes": [{"type": "NOTE", "values": ["n" * 900]}],
        }
        created(await a.post("/resources", body))
    pages = [[r["resourceName"] for r in created(await a.get("/resources", skip=skip))] for skip in range(4)]
    # ~1,000 bytes each: two fit 2,500 bytes, the third would not; paging on by skip reaches every one.
    assert pages == [["r1", "r2"], ["r2", "r3"], ["r3"], []]
    for name in ("P1", "P2", "P3"):
        created(await bl.post("/programs", {"programName": name, "attributes": [{"type": "N", "values": ["p" * 900]}]}))
    assert [p["programName"] for p in created(await a.get("/programs"))] == ["P1", "P2"]
    # One object larger than the budget still comes, alone.
    system.runtime.settings.edge.page_max_bytes = 1024
    assert [r["resourceName"] for r in created(await a.get("/resources"))] == ["r1"]
