"""The DERMS HTTP API (``/derms/v1``) through the whole in-process server, on SQLite and PostgreSQL.

Customers come from a CIS extract through the importer; devices, their availability and a score snapshot
are inserted directly, the way enrollment sync (F3) and the score transfer (F4) leave them. Every expected
reservation below is worked out by hand from the device table in this file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from derbridge.cis.importer import import_extract
from derbridge.contracts.envelope import Envelope
from derbridge.derms.adapters import tables as t
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.runtime import Runtime
from derbridge.settings import Settings
from tests.support.api import (
    ReusedPostgres,
    assert_problem,
    cis_row,
    client,
    fields,
    reused_postgres_databases,
    settings_for,
    walk,
    write_extract,
)
from tests.support.databases import migrate_from_template
from tests.support.messages import program_sync

BASE = "/derms/v1"
PROGRAM = "SUMMER-BYOT"
OTHER_PROGRAM = "WINTER-BYOT"
SHED_KW = 1.5

EXTRACT = [
    cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-1", "SP-1", email="ada@example.com"),
    cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-1", "SP-2", email="ada@example.com"),
    cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-2", "SP-3", email="ada@example.com"),
    cis_row("P-2", "Blaise Pascal", "A-2", "CLOSED", "PR-3", "SP-4"),
    cis_row("P-3", "Carl Gauss", "A-3", "ACTIVE", "PR-4", "SP-5", business_phone="555-0199"),
]

# device_id, head-end, nic, availability in PROGRAM (None: only in OTHER_PROGRAM), current score, eligible
DEVICES: list[tuple[int, str, str, str | None, float | None, bool]] = [
    (1, "ALPHA", "n01", "AVAILABLE", 90.0, True),
    (2, "BETA", "n01", "AVAILABLE", 80.0, True),  # tied at 80 with 3 and 4: ranked last of them by head-end
    (3, "ALPHA", "n03", "AVAILABLE", 80.0, True),
    (4, "ALPHA", "n02", "AVAILABLE", 80.0, True),  # first of the tie: ALPHA n02 < ALPHA n03 < BETA n01
    (5, "ALPHA", "n04", "UNAVAILABLE", 95.0, True),  # not available
    (6, "ALPHA", "n05", "AVAILABLE", 99.0, False),  # not eligible
    (7, "ALPHA", "n06", "AVAILABLE", 70.0, True),
    (8, "ALPHA", "n07", "AVAILABLE", None, True),  # no score in the current snapshot
    (9, "ALPHA", "n08", None, 100.0, True),  # available in the other program only
]
RANKED = [1, 4, 3, 2, 7]
"""The candidates of PROGRAM in rank order: score descending, ties by (head_end_system, nic_id)."""


@pytest.fixture(scope="module")
def reused_postgres() -> Iterator[ReusedPostgres]:
    """PostgreSQL databases migrated once for this module (see ReusedPostgres)."""
    yield from reused_postgres_databases()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """conftest's ``settings``, with PostgreSQL databases emptied for each test instead of created."""
    return settings_for(request, tmp_path)


@pytest.fixture
def customers(runtime: Runtime, tmp_path: Path) -> None:
    """The DERMS holds the contacts, customers and locations of EXTRACT."""
    report = import_extract(
        write_extract(tmp_path / "cis.csv", EXTRACT), [DermsCisLoader(runtime.sync_engine("derms"))]
    )
    assert report.rejected == []
    assert report.systems["derms"].inserted == len(EXTRACT)


@pytest.fixture
async def fleet(api: httpx.AsyncClient, runtime: Runtime) -> None:
    """PROGRAM (1.5 kW per device) and OTHER_PROGRAM, DEVICES with their availability, a current score
    snapshot, and an older snapshot that would rank devices 7 and 8 first if it were still read."""
    for code, shed in ((PROGRAM, SHED_KW), (OTHER_PROGRAM, 1.0)):
        await deliver(api, program_sync(code, expected_shed_kw=shed))
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with runtime.sync_engine("derms").begin() as connection:
        connection.execute(
            t.devices.insert(),
            [
                {
                    "device_id": device_id,
                    "head_end_system": hes,
                    "nic_id": nic,
                    "device_type": "THERMOSTAT",
                    "manufacturer": "Acme",
                    "model": "T1",
                    "created_at": at,
                }
                for device_id, hes, nic, *_ in DEVICES
            ],
        )
        connection.execute(
            t.device_availability.insert(),
            [
                {
                    "device_id": device_id,
                    "program_code": PROGRAM if availability else OTHER_PROGRAM,
                    "enrollment_id": f"enr-{device_id}",
                    "cis_account_id": "A-1",
                    "cis_service_point_id": "SP-1",
                    "availability": availability or "AVAILABLE",
                    "sequence": 1,
                    "updated_at": at,
                }
                for device_id, _, _, availability, _, _ in DEVICES
            ],
        )
        connection.execute(
            t.score_snapshots.insert(),
            [
                {
                    "file_id": file_id,
                    "generated_at": at + timedelta(days=day),
                    "scoring_model_version": "1",
                    "row_count": 0,
                    "unknown_devices": 0,
                    "loaded_at": at + timedelta(days=day),
                    "is_current": current,
                }
                for file_id, day, current in (("old-file", 0, False), ("current-file", 1, True))
            ],
        )
        scores = [
            ("current-file", PROGRAM, hes, nic, device_id, score, eligible)
            for device_id, hes, nic, _, score, eligible in DEVICES
            if score is not None
        ]
        scores += [
            ("old-file", PROGRAM, "ALPHA", "n06", 7, 100.0, True),
            ("old-file", PROGRAM, "ALPHA", "n07", 8, 100.0, True),
        ]
        connection.execute(
            t.device_scores.insert(),
            [
                {
                    "file_id": file_id,
                    "program_code": program,
                    "head_end_system": hes,
                    "nic_id": nic,
                    "device_id": device_id,
                    "score": score,
                    "eligible": eligible,
                    "ineligibility_reason": None if eligible else "OFFLINE",
                }
                for file_id, program, hes, nic, device_id, score, eligible in scores
            ],
        )


@pytest.fixture
async def sqlite_api(sqlite_settings: Settings, migrated_sqlite: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a server over SQLite only: for checks that never reach the database."""
    migrate_from_template(sqlite_settings, migrated_sqlite)
    async with client(Runtime(sqlite_settings)) as api:
        yield api


async def create_event(api: httpx.AsyncClient, start: float, end: float, **body: Any) -> httpx.Response:
    """POST an event of PROGRAM from ``start`` to ``end`` minutes from now."""
    now = datetime.now(UTC)
    payload = {
        "program_code": PROGRAM,
        "event_type": "ECONOMIC",
        "start_at": (now + timedelta(minutes=start)).isoformat(),
        "end_at": (now + timedelta(minutes=end)).isoformat(),
    }
    return await api.post(f"{BASE}/events", json=payload | body)


async def created(api: httpx.AsyncClient, start: float, end: float, **body: Any) -> dict[str, Any]:
    response = await create_event(api, start, end, **body)
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


async def reservations(api: httpx.AsyncClient, event_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"{BASE}/events/{event_id}/reservations")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def reserved_devices(api: httpx.AsyncClient, event_id: str) -> list[int]:
    """The devices an event holds (status RESERVED), in record order."""
    return [r["device_id"] for r in await reservations(api, event_id) if r["status"] == "RESERVED"]


# --- customers ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("customers")
async def test_contacts_customers_and_locations_are_listed_filtered_and_read(api: httpx.AsyncClient) -> None:
    contacts = (await api.get(f"{BASE}/contacts")).json()
    assert [c["cis_person_id"] for c in contacts["items"]] == ["P-1", "P-2", "P-3"]
    assert contacts["next_after"] is None
    carl = (await api.get(f"{BASE}/contacts/P-3")).json()
    assert (carl["name"], carl["email"], carl["business_phone"]) == ("Carl Gauss", None, "555-0199")
    assert (await api.get(f"{BASE}/contacts/P-1")).json()["email"] == "ada@example.com"

    async def ids(path: str, key: str, **params: str) -> list[str]:
        response = await api.get(BASE + path, params=params)
        assert response.status_code == 200, response.text
        return [item[key] for item in response.json()["items"]]

    assert await ids("/customers", "cis_account_id") == ["A-1", "A-2", "A-3"]
    assert await ids("/customers", "cis_account_id", status="CLOSED") == ["A-2"]
    assert await ids("/customers", "cis_account_id", cis_person_id="P-1") == ["A-1"]
    assert (await api.get(f"{BASE}/customers/A-2")).json()["status"] == "CLOSED"

    assert await ids("/locations", "cis_service_point_id") == ["SP-1", "SP-2", "SP-3", "SP-4", "SP-5"]
    assert await ids("/locations", "cis_service_point_id", cis_account_id="A-1") == ["SP-1", "SP-2", "SP-3"]
    assert await ids("/locations", "cis_service_point_id", cis_premise_id="PR-1") == ["SP-1", "SP-2"]
    assert await ids("/locations", "cis_service_point_id", cis_account_id="A-1", cis_premise_id="PR-2") == ["SP-3"]
    location = (await api.get(f"{BASE}/locations/SP-3")).json()
    assert (location["cis_premise_id"], location["cis_account_id"], location["address1"]) == (
        "PR-2",
        "A-1",
        "PR-2 Main St",
    )
    assert location["longitude"] == pytest.approx(-89.65)

    assert await walk(api, f"{BASE}/locations", "cis_service_point_id") == (["SP-1", "SP-2", "SP-3", "SP-4", "SP-5"], 3)
    assert await walk(api, f"{BASE}/customers", "cis_account_id", limit=1) == (["A-1", "A-2", "A-3"], 3)
    assert await walk(api, f"{BASE}/contacts", "cis_person_id", limit=3) == (["P-1", "P-2", "P-3"], 1)
    bad = assert_problem(await api.get(f"{BASE}/customers", params={"status": "GONE"}), 422, "validation-error")
    assert fields(bad) == ["query.status"]


async def test_an_unknown_id_is_a_404_problem(api: httpx.AsyncClient) -> None:
    unknown = "00000000-0000-7000-8000-000000000000"
    for path, what in [
        ("/contacts/nobody", "contact"),
        ("/customers/nobody", "customer"),
        ("/locations/nobody", "location"),
        ("/programs/NOBODY", "program"),
        ("/devices/12345", "device"),
        ("/communication-status/ALPHA/nobody", "communication status"),
        (f"/events/{unknown}", "event"),
        (f"/events/{unknown}/reservations", "event"),
        (f"/events/{unknown}/outcomes", "event"),
    ]:
        body = assert_problem(await api.get(BASE + path), 404, "not-found")
        assert body["title"] == f"{what} not found", path
    cancel = assert_problem(await api.post(f"{BASE}/events/{unknown}/cancel"), 404, "not-found")
    assert unknown in cancel["detail"]

    for path, params, field in [
        ("/devices/abc", {}, "path.device_id"),
        ("/devices/99999999999999999999999", {}, "path.device_id"),
        ("/devices", {"after": "abc"}, "query.after"),
        ("/devices", {"after": "99999999999999999999999"}, "query.after"),
        ("/customers", {"cis_person_id": "P\x00"}, "query.cis_person_id"),
        ("/contacts/P%00", {}, "path.cis_person_id"),
        ("/communication-status", {}, "query.head_end_system"),
        ("/events", {"limit": "0"}, "query.limit"),
        ("/events", {"status": "RUNNING"}, "query.status"),
    ]:
        problem = assert_problem(await api.get(BASE + path, params=params), 422, "validation-error")
        assert fields(problem) == [field], path


# --- programs -------------------------------------------------------------------------------------


async def deliver(api: httpx.AsyncClient, envelope: Envelope) -> httpx.Response:
    """Deliver ``envelope`` to the DERMS's inbound API, as the bridge does."""
    return await api.post(
        f"{BASE}/messages",
        content=envelope.model_dump_json(),
        headers={"Idempotency-Key": envelope.message_id, "content-type": "application/json"},
    )


async def test_programs_are_read_only_here_the_write_endpoints_say_where_to_go(api: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/programs"),
        ("PATCH", f"/programs/{PROGRAM}"),
        ("PUT", f"/programs/{PROGRAM}"),
        ("DELETE", f"/programs/{PROGRAM}"),
    ]:
        response = await api.request(method, BASE + path, json={"program_code": PROGRAM, "name": "Summer"})
        problem = assert_problem(response, 405, "read-only")
        assert response.headers["allow"] == "GET"
        assert "POST /assethub/v1/programs" in problem["detail"], method
    assert (await api.get(f"{BASE}/programs")).json()["items"] == []
    paths = (await api.get(f"{BASE}/openapi.json")).json()["paths"]
    assert set(paths["/programs"]) == {"get"}
    assert set(paths["/programs/{program_code}"]) == {"get"}


async def test_programs_come_by_program_sync_newest_version_wins_once(api: httpx.AsyncClient, runtime: Runtime) -> None:
    first = await deliver(api, program_sync(PROGRAM, 1, name="Summer BYOT"))
    assert first.status_code == 200, first.text
    assert first.json()["result"]["result"] == "APPLIED"
    url = f"{BASE}/programs/{PROGRAM}"
    program = (await api.get(url)).json()
    assert (program["name"], program["status"], program["version"]) == ("Summer BYOT", "ACTIVE", 1)
    assert (program["expected_shed_kw"], program["outcome_grace_hours"]) == (1.0, 24.0)

    third = program_sync(PROGRAM, 3, name="Summer BYOT", status="SUSPENDED", expected_shed_kw=2.5)
    assert (await deliver(api, third)).json()["result"]["result"] == "APPLIED"
    again = await deliver(api, third)  # the bridge's at-least-once: a duplicate has its effect once
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "already-applied"
    late = await deliver(api, program_sync(PROGRAM, 2, name="Old name", status="ACTIVE"))
    assert late.json()["result"]["result"] == "STALE"
    assert "not newer than version 3" in late.json()["result"]["detail"]
    stored = (await api.get(url)).json()
    assert (stored["name"], stored["status"], stored["expected_shed_kw"], stored["version"]) == (
        "Summer BYOT",
        "SUSPENDED",
        2.5,
        3,
    )
    async with runtime.async_engine("derms").connect() as connection:
        log = (
            await connection.execute(
                select(t.program_sync_log.c.version, t.program_sync_log.c.result).order_by(t.program_sync_log.c.at)
            )
        ).all()
    assert sorted(log) == [(1, "APPLIED"), (2, "STALE"), (3, "APPLIED")]
    await deliver(api, program_sync(OTHER_PROGRAM, 1, outcome_grace_hours=0))
    assert await walk(api, f"{BASE}/programs", "program_code", limit=1) == ([PROGRAM, OTHER_PROGRAM], 2)


async def test_a_program_sync_that_breaks_its_contract_is_a_problem_naming_the_field(api: httpx.AsyncClient) -> None:
    for payload_change, field in [
        ({"expected_shed_kw": 0}, "body.payload.expected_shed_kw"),
        ({"status": "INACTIVE"}, "body.payload.status"),
        ({"program_code": "summer"}, "body.payload.program_code"),
        ({"version": 0}, "body.payload.version"),
        ({"colour": "blue"}, "body.payload.colour"),
    ]:
        envelope = program_sync(PROGRAM, 1)
        broken = envelope.model_copy(update={"payload": envelope.payload | payload_change})
        problem = assert_problem(await deliver(api, broken), 422, "invalid-payload")
        assert fields(problem) == [field], payload_change
    unordered = program_sync(PROGRAM, 2).model_copy(update={"sequence": 5})
    problem = assert_problem(await deliver(api, unordered), 422, "invalid-envelope")
    assert fields(problem) == ["body.business_key", "body.sequence"]
    assert_problem(await api.get(f"{BASE}/programs/{PROGRAM}"), 404)


# --- communication status -------------------------------------------------------------------------


def status_report(status: str, at: str, **extra: Any) -> dict[str, Any]:
    return {"communication_status": status, "last_communication_at": at, "source": "ALPHA"} | extra


async def test_communication_status_keeps_the_newest_report(api: httpx.AsyncClient) -> None:
    url = f"{BASE}/communication-status/ALPHA/n01"
    first = await api.put(url, json=status_report("ONLINE", "2026-06-01T12:00:00Z", operating_state="IDLE"))
    assert first.status_code == 200, first.text
    assert "x-derbridge-stale" not in first.headers
    body = first.json()
    assert (body["head_end_system"], body["nic_id"], body["communication_status"]) == ("ALPHA", "n01", "ONLINE")
    assert (body["operating_state"], body["source"]) == ("IDLE", "ALPHA")
    assert datetime.fromisoformat(body["last_communication_at"]) == datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert (await api.get(url)).json() == body

    # An older report arrives late: kept out, and the answer says so.
    stale = await api.put(url, json=status_report("OFFLINE", "2026-06-01T13:00:00+02:00"))  # 11:00 UTC
    assert stale.status_code == 200, stale.text
    assert stale.headers["x-derbridge-stale"] == "true"
    assert stale.json() == body
    assert (await api.get(url)).json() == body

    newer = await api.put(url, json=status_report("OFFLINE", "2026-06-01T12:30:00Z"))
    assert newer.status_code == 200, newer.text
    assert "x-derbridge-stale" not in newer.headers
    stored = (await api.get(url)).json()
    assert (stored["communication_status"], stored["operating_state"]) == ("OFFLINE", None)
    assert datetime.fromisoformat(stored["last_communication_at"]) == datetime(2026, 6, 1, 12, 30, tzinfo=UTC)

    other = await api.put(
        f"{BASE}/communication-status/ALPHA/n02", json=status_report("ONLINE", "2026-06-01T00:00:00Z")
    )
    assert other.status_code == 200, other.text
    beta = await api.put(f"{BASE}/communication-status/BETA/n01", json=status_report("ONLINE", "2026-06-01T00:00:00Z"))
    assert beta.status_code == 200, beta.text

    async def listed(**params: str) -> list[str]:
        response = await api.get(f"{BASE}/communication-status", params=params)
        assert response.status_code == 200, response.text
        return [f"{s['head_end_system']}:{s['nic_id']}" for s in response.json()["items"]]

    assert await listed(head_end_system="ALPHA") == ["ALPHA:n01", "ALPHA:n02"]
    assert await listed(head_end_system="ALPHA", communication_status="OFFLINE") == ["ALPHA:n01"]
    assert await listed(head_end_system="BETA") == ["BETA:n01"]
    assert await listed(head_end_system="GAMMA") == []


URL = f"{BASE}/communication-status/ALPHA/n01"


@pytest.mark.parametrize(
    ("target", "body", "field"),
    [
        (URL, status_report("SLEEPING", "2026-06-01T12:00:00Z"), "body.communication_status"),
        (URL, status_report("online", "2026-06-01T12:00:00Z"), "body.communication_status"),
        (URL, status_report("ONLINE", "2026-06-01T12:00:00"), "body.last_communication_at"),  # no zone
        (URL, status_report("ONLINE", "yesterday"), "body.last_communication_at"),
        (URL, status_report("ONLINE", "9999-12-31T23:00:00-05:00"), "body.last_communication_at"),  # no UTC
        (URL, status_report("ONLINE", "2026-06-01T12:00:00Z", source="alpha"), "body.source"),
        (URL, status_report("ONLINE", "2026-06-01T12:00:00Z", operating_state="x" * 33), "body.operating_state"),
        (URL, status_report("ONLINE", "2026-06-01T12:00:00Z", colour="blue"), "body.colour"),
        (
            f"{BASE}/communication-status/alpha/n01",
            status_report("ONLINE", "2026-06-01T12:00:00Z"),
            "path.head_end_system",
        ),
        (f"{BASE}/communication-status/ALPHA/n%00", status_report("ONLINE", "2026-06-01T12:00:00Z"), "path.nic_id"),
    ],
)
async def test_a_bad_communication_report_names_the_field(
    sqlite_api: httpx.AsyncClient, target: str, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await sqlite_api.put(target, json=body), 422, "validation-error")
    assert fields(problem) == [field]
    assert_problem(await sqlite_api.get(URL), 404)


async def test_a_communication_report_without_its_status_names_the_field(sqlite_api: httpx.AsyncClient) -> None:
    missing = status_report("ONLINE", "2026-06-01T12:00:00Z")
    del missing["communication_status"]
    problem = assert_problem(await sqlite_api.put(URL, json=missing), 422, "validation-error")
    assert fields(problem) == ["body.communication_status"]
    assert_problem(await sqlite_api.get(URL), 404)


@pytest.mark.usefixtures("fleet")
async def test_a_device_shows_its_availability_and_communication(api: httpx.AsyncClient) -> None:
    device = (await api.get(f"{BASE}/devices/5")).json()
    assert (device["head_end_system"], device["nic_id"]) == ("ALPHA", "n04")
    assert [(a["program_code"], a["availability"]) for a in device["availability"]] == [(PROGRAM, "UNAVAILABLE")]
    assert device["communication"] is None
    put = await api.put(f"{BASE}/communication-status/ALPHA/n04", json=status_report("ONLINE", "2026-06-01T00:00:00Z"))
    assert put.status_code == 200, put.text
    assert (await api.get(f"{BASE}/devices/5")).json()["communication"]["communication_status"] == "ONLINE"
    assert await walk(api, f"{BASE}/devices", "device_id", limit=4) == ([1, 2, 3, 4, 5, 6, 7, 8, 9], 3)
    beta = (await api.get(f"{BASE}/devices", params={"head_end_system": "BETA"})).json()["items"]
    assert [d["device_id"] for d in beta] == [2]


# --- events ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("fleet")
async def test_an_event_reserves_the_best_available_eligible_devices(api: httpx.AsyncClient) -> None:
    event = await created(api, 60, 120, target_devices=3, created_by="operator-7")
    assert event["status"] == "SCHEDULED"
    assert (event["program_code"], event["event_type"], event["derms_instance_id"]) == (PROGRAM, "ECONOMIC", "derms-1")
    assert (event["target_devices"], event["target_kw"]) == (3, None)
    assert (event["candidate_count"], event["reserved_count"], event["shortfall_devices"]) == (5, 3, 0)
    assert event["reserved_kw"] == pytest.approx(3 * SHED_KW)
    assert event["shortfall_kw"] == 0
    assert event["created_by"] == "operator-7"
    assert event["cancelled_at"] is None

    stored = (await api.get(f"{BASE}/events/{event['event_id']}")).json()
    assert stored["event_id"] == event["event_id"]
    assert datetime.fromisoformat(stored["start_at"]) == datetime.fromisoformat(event["start_at"])
    held = await reservations(api, event["event_id"])
    assert [(r["device_id"], r["rank"], r["score"]) for r in held] == [(1, 1, 90.0), (4, 2, 80.0), (3, 3, 80.0)]
    assert {r["status"] for r in held} == {"RESERVED"}
    assert {r["expected_shed_kw"] for r in held} == {SHED_KW}
    assert {datetime.fromisoformat(r["reservation_start_at"]) for r in held} == {
        datetime.fromisoformat(event["start_at"])
    }
    assert {datetime.fromisoformat(r["reservation_end_at"]) for r in held} == {datetime.fromisoformat(event["end_at"])}
    # Paging the reservations walks them in record (= rank) order.
    assert await walk(api, f"{BASE}/events/{event['event_id']}/reservations", "device_id") == ([1, 4, 3], 2)
    assert (await api.get(f"{BASE}/events/{event['event_id']}/outcomes")).json()["items"] == []


@pytest.mark.usefixtures("fleet")
async def test_a_kw_target_takes_devices_until_their_shed_reaches_it(api: httpx.AsyncClient) -> None:
    reached = await created(api, 60, 120, target_kw=4.0, event_type="EMERGENCY")
    assert (reached["target_devices"], reached["target_kw"]) == (None, 4.0)
    assert (reached["candidate_count"], reached["reserved_count"]) == (5, 3)  # 1.5 + 1.5 + 1.5 >= 4
    assert reached["reserved_kw"] == pytest.approx(4.5)
    assert (reached["shortfall_kw"], reached["shortfall_devices"]) == (0, 0)
    assert await reserved_devices(api, reached["event_id"]) == [1, 4, 3]

    short = await created(api, 180, 240, target_kw=100.0)
    assert (short["candidate_count"], short["reserved_count"]) == (5, 5)
    assert short["reserved_kw"] == pytest.approx(7.5)
    assert short["shortfall_kw"] == pytest.approx(92.5)
    assert await reserved_devices(api, short["event_id"]) == RANKED


@pytest.mark.usefixtures("fleet")
async def test_overlapping_events_never_share_a_device_and_shortfalls_are_reported(api: httpx.AsyncClient) -> None:
    first = await created(api, 60, 120, target_devices=3)
    assert await reserved_devices(api, first["event_id"]) == [1, 4, 3]

    overlapping = await created(api, 90, 180, target_devices=3)  # what is left: 2 and 7
    assert (overlapping["candidate_count"], overlapping["reserved_count"], overlapping["shortfall_devices"]) == (
        2,
        2,
        1,
    )
    assert await reserved_devices(api, overlapping["event_id"]) == [2, 7]

    # Starts when the overlapping one ends (windows are half-open) and after the first: everything is free.
    touching = await created(api, 180, 240, target_devices=8)
    assert (touching["candidate_count"], touching["reserved_count"], touching["shortfall_devices"]) == (5, 5, 3)
    assert await reserved_devices(api, touching["event_id"]) == RANKED

    cancelled = await api.post(f"{BASE}/events/{first['event_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    again = await created(api, 60, 120, target_devices=3)  # the released devices are free again
    assert (again["candidate_count"], again["reserved_count"]) == (3, 3)
    assert await reserved_devices(api, again["event_id"]) == [1, 4, 3]

    listed = (await api.get(f"{BASE}/events", params={"status": "SCHEDULED"})).json()["items"]
    assert [e["event_id"] for e in listed] == [overlapping["event_id"], touching["event_id"], again["event_id"]]
    assert await walk(api, f"{BASE}/events", "event_id", limit=3) == (
        [first["event_id"], overlapping["event_id"], touching["event_id"], again["event_id"]],
        2,
    )
    assert (await api.get(f"{BASE}/events", params={"program_code": OTHER_PROGRAM})).json()["items"] == []


@pytest.mark.usefixtures("fleet")
async def test_events_created_at_once_split_the_devices(api: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(*(create_event(api, 60, 120, target_devices=3) for _ in range(3)))
    assert [r.status_code for r in responses] == [201, 201, 201], [r.text for r in responses]
    held = [await reserved_devices(api, r.json()["event_id"]) for r in responses]
    every = [device for devices in held for device in devices]
    assert sorted(every) == sorted(RANKED)  # each candidate once, none twice
    assert sorted(r.json()["reserved_count"] for r in responses) == [0, 2, 3]


@pytest.mark.usefixtures("fleet")
async def test_an_event_that_cannot_be_created_is_refused_and_leaves_nothing(api: httpx.AsyncClient) -> None:
    past = assert_problem(await create_event(api, -5, 60, target_devices=1), 422, "validation-error")
    assert fields(past) == ["body.start_at"]
    unknown = assert_problem(
        await create_event(api, 60, 120, target_devices=1, program_code="NO-SUCH-PROGRAM"), 422, "unknown-program"
    )
    assert fields(unknown) == ["body.program_code"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"target_devices": 1, "target_kw": 1.0}, "body.target_kw"),
        ({}, "body.target_kw"),
        ({"target_devices": 0}, "body.target_devices"),
        ({"target_kw": -1}, "body.target_kw"),
        ({"target_devices": 1, "event_type": "DRILL"}, "body.event_type"),
        ({"target_devices": 1, "program_code": "summer"}, "body.program_code"),
        ({"target_devices": 1, "start_at": "2030-01-01T00:00:00"}, "body.start_at"),
        ({"target_devices": 1, "colour": "blue"}, "body.colour"),
        (  # the end is in the year 10000 once in UTC
            {"target_devices": 1, "start_at": "9999-12-31T10:00:00Z", "end_at": "9999-12-31T23:30:00-05:00"},
            "body.end_at",
        ),
    ]
    for body, field in cases:
        problem = assert_problem(await create_event(api, 60, 120, **body), 422, "validation-error")
        assert fields(problem) == [field], body
    backwards = assert_problem(await create_event(api, 120, 60, target_devices=1), 422, "validation-error")
    assert fields(backwards) == ["body.end_at"]
    empty = assert_problem(await create_event(api, 60, 60, target_devices=1), 422, "validation-error")
    assert fields(empty) == ["body.end_at"]

    await deliver(api, program_sync(PROGRAM, 2, status="SUSPENDED", expected_shed_kw=SHED_KW))
    inactive = assert_problem(await create_event(api, 60, 120, target_devices=1), 409, "program-not-active")
    assert PROGRAM in inactive["detail"]
    assert "/assethub/v1/programs" in inactive["detail"]
    await deliver(api, program_sync(PROGRAM, 3, status="CLOSED", expected_shed_kw=SHED_KW))
    closed = assert_problem(await create_event(api, 60, 120, target_devices=1), 409, "program-closed")
    assert fields(closed) == ["body.program_code"]
    assert (await api.get(f"{BASE}/events")).json()["items"] == []
    with_any = await api.get(f"{BASE}/events", params={"program_code": PROGRAM})
    assert with_any.json()["items"] == []


@pytest.mark.usefixtures("fleet")
async def test_cancelling_a_scheduled_event_releases_its_reservations(api: httpx.AsyncClient) -> None:
    event = await created(api, 60, 120, target_devices=2)
    url = f"{BASE}/events/{event['event_id']}/cancel"
    refused = assert_problem(await api.post(url, json={"reason_text": ""}), 422, "validation-error")
    assert fields(refused) == ["body.reason_text"]

    response = await api.post(url, json={"reason_text": "grid no longer constrained"})
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert (cancelled["status"], cancelled["cancel_reason"]) == ("CANCELLED", "grid no longer constrained")
    assert cancelled["cancelled_at"] is not None
    assert (await api.get(f"{BASE}/events/{event['event_id']}")).json() == cancelled
    held = await reservations(api, event["event_id"])
    assert [(r["device_id"], r["status"], r["release_reason"]) for r in held] == [
        (1, "RELEASED", "event cancelled"),
        (4, "RELEASED", "event cancelled"),
    ]
    assert all(r["released_at"] is not None for r in held)

    again = assert_problem(await api.post(url), 409, "event-not-cancellable")
    assert "already cancelled" in again["detail"]
    assert (await api.get(f"{BASE}/events/{event['event_id']}")).json() == cancelled
    listed = (await api.get(f"{BASE}/events", params={"status": "CANCELLED"})).json()["items"]
    assert [e["event_id"] for e in listed] == [event["event_id"]]

    # Without a body the operator's default reason is recorded.
    other = await created(api, 60, 120, target_devices=1)
    response = await api.post(f"{BASE}/events/{other['event_id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["cancel_reason"] == "cancelled by operator"


@pytest.mark.usefixtures("fleet")
async def test_an_event_that_has_started_cannot_be_cancelled(api: httpx.AsyncClient, runtime: Runtime) -> None:
    now = datetime.now(UTC)
    rows = [
        # still SCHEDULED on record, but its start has passed: the scheduler has not marked it yet
        ("started-scheduled", "SCHEDULED", now - timedelta(minutes=30), now + timedelta(minutes=30)),
        ("started-active", "ACTIVE", now - timedelta(minutes=30), now + timedelta(minutes=30)),
        ("ran-completed", "COMPLETED", now - timedelta(days=2), now - timedelta(days=2) + timedelta(hours=1)),
    ]
    with runtime.sync_engine("derms").begin() as connection:
        connection.execute(
            t.program_events.insert(),
            [
                {
                    "event_id": event_id,
                    "derms_instance_id": "derms-1",
                    "program_code": PROGRAM,
                    "event_type": "ECONOMIC",
                    "start_at": start,
                    "end_at": end,
                    "status": status,
                    "target_devices": 1,
                    "target_kw": None,
                    "candidate_count": 5,
                    "reserved_count": 1,
                    "reserved_kw": SHED_KW,
                    "shortfall_devices": 0,
                    "shortfall_kw": 0.0,
                    "created_at": start - timedelta(hours=1),
                    "created_by": "test",
                    "cancelled_at": None,
                    "cancel_reason": None,
                    "closed_at": None,
                }
                for event_id, status, start, end in rows
            ],
        )
        connection.execute(
            t.reservations.insert(),
            [
                {
                    "record_id": f"record-{event_id}",
                    "event_id": event_id,
                    "device_id": 1,
                    "rank": 1,
                    "score": 90.0,
                    "expected_shed_kw": SHED_KW,
                    "reservation_start_at": start,
                    "reservation_end_at": end,
                    "status": "RESERVED",
                    "released_at": None,
                    "release_reason": None,
                }
                for event_id, _, start, end in rows
            ],
        )

    for event_id, kind in [
        ("started-scheduled", "event-started"),
        ("started-active", "event-started"),
        ("ran-completed", "event-not-cancellable"),
    ]:
        before = (await api.get(f"{BASE}/events/{event_id}")).json()
        problem = assert_problem(await api.post(f"{BASE}/events/{event_id}/cancel"), 409, kind)
        assert "can no longer be cancelled" in problem["detail"]
        assert problem["instance"] == f"{BASE}/events/{event_id}/cancel"
        assert (await api.get(f"{BASE}/events/{event_id}")).json() == before
        assert [(r["status"], r["released_at"]) for r in await reservations(api, event_id)] == [("RESERVED", None)]

    # Device 1 is held by the events running now: a new event overlapping them does without it.
    overlapping = await created(api, 10, 20, target_devices=3)
    assert await reserved_devices(api, overlapping["event_id"]) == [4, 3, 2]
    with runtime.sync_engine("derms").connect() as connection:
        result = connection.execute(select(t.program_events.c.event_id, t.program_events.c.status))
        statuses: dict[str, str] = {row.event_id: row.status for row in result}
    assert statuses["started-scheduled"] == "SCHEDULED"
