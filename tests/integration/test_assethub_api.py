"""Asset Hub's HTTP API (``/assethub/v1``) through the whole in-process server, on SQLite and PostgreSQL.

Customers are loaded the way an operator loads them (a CIS extract through the importer); devices are
inserted directly. Every expectation is written out by hand from the rows in this file. Checks that never
reach a database (request validation) run on SQLite only, to keep the suite fast.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.cis.importer import import_extract
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

BASE = "/assethub/v1"

EXTRACT = [
    cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-1", "SP-1", email="ada@example.com"),
    cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-1", "SP-2", email="ada@example.com"),
    cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-2", "SP-3", email="ada@example.com"),
    cis_row("P-2", "Blaise Pascal", "A-2", "CLOSED", "PR-3", "SP-4"),
    cis_row("P-3", "Carl Gauss", "A-3", "ACTIVE", "PR-4", "SP-5", email="carl@example.com"),
    cis_row("P-1", "Ada Lovelace", "A-4", "SUSPENDED", "PR-5", "SP-6", email="ada@example.com"),
]
"""One row per service point: P-1 holds A-1 (premises PR-1 with SP-1 and SP-2, PR-2 with SP-3) and A-4."""


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
    """Asset Hub holds the persons, accounts, premises and service points of EXTRACT."""
    report = import_extract(
        write_extract(tmp_path / "cis.csv", EXTRACT), [AssetHubCisLoader(runtime.sync_engine("assethub"))]
    )
    assert report.rejected == []
    assert report.systems["assethub"].inserted == len(EXTRACT)


@pytest.fixture
def devices(runtime: Runtime) -> list[int]:
    """Four devices whose ids sort differently as numbers and as strings (2 < 9 < 10 < 11)."""
    ids = [10, 2, 11, 9]
    with runtime.sync_engine("assethub").begin() as connection:
        connection.execute(
            t.devices.insert(),
            [
                {
                    "device_id": device_id,
                    "head_end_system": "ALPHA" if device_id != 11 else "BETA",
                    "nic_id": f"nic-{device_id}",
                    "device_type": "THERMOSTAT",
                    "manufacturer": "Acme",
                    "model": "T1",
                    "serial_no": f"S{device_id}",
                    "badge_no": None,
                    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
                }
                for device_id in ids
            ],
        )
    return sorted(ids)


@pytest.fixture
async def sqlite_api(sqlite_settings: Settings, migrated_sqlite: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a server over SQLite only: for checks that never reach the database."""
    migrate_from_template(sqlite_settings, migrated_sqlite)
    async with client(Runtime(sqlite_settings)) as api:
        yield api


# --- customers ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("customers")
async def test_persons_and_accounts_are_listed_filtered_and_read(api: httpx.AsyncClient) -> None:
    listing = await api.get(f"{BASE}/persons")
    assert listing.status_code == 200
    assert [p["cis_person_id"] for p in listing.json()["items"]] == ["P-1", "P-2", "P-3"]
    assert listing.json()["next_after"] is None

    ada = (await api.get(f"{BASE}/persons/P-1")).json()
    assert (ada["name"], ada["email"], ada["home_phone"], ada["business_phone"]) == (
        "Ada Lovelace",
        "ada@example.com",
        "555-0100",
        None,
    )
    assert (await api.get(f"{BASE}/persons/P-2")).json()["email"] is None
    missing = assert_problem(await api.get(f"{BASE}/persons/P-404"), 404, "not-found")
    assert "P-404" in missing["detail"]
    assert missing["instance"] == f"{BASE}/persons/P-404"

    async def account_ids(**params: str) -> list[str]:
        response = await api.get(f"{BASE}/accounts", params=params)
        assert response.status_code == 200, response.text
        return [a["cis_account_id"] for a in response.json()["items"]]

    assert await account_ids() == ["A-1", "A-2", "A-3", "A-4"]
    assert await account_ids(cis_person_id="P-1") == ["A-1", "A-4"]
    assert await account_ids(status="CLOSED") == ["A-2"]
    assert await account_ids(cis_person_id="P-1", status="SUSPENDED") == ["A-4"]
    assert await account_ids(cis_person_id="P-404") == []
    bad = assert_problem(await api.get(f"{BASE}/accounts", params={"status": "OPEN"}), 422, "validation-error")
    assert fields(bad) == ["query.status"]


@pytest.mark.usefixtures("customers")
async def test_an_account_shows_its_premises_and_their_service_points(api: httpx.AsyncClient) -> None:
    response = await api.get(f"{BASE}/accounts/A-1")
    assert response.status_code == 200
    account = response.json()
    assert (account["cis_person_id"], account["status"]) == ("P-1", "ACTIVE")
    assert [p["cis_premise_id"] for p in account["premises"]] == ["PR-1", "PR-2"]
    assert [[sp["cis_service_point_id"] for sp in p["service_points"]] for p in account["premises"]] == [
        ["SP-1", "SP-2"],
        ["SP-3"],
    ]
    first = account["premises"][0]
    assert (first["address1"], first["address2"], first["time_zone"]) == ("PR-1 Main St", None, "America/Chicago")
    assert first["latitude"] == pytest.approx(39.78)
    assert first["service_points"][0]["cis_premise_id"] == "PR-1"

    closed = (await api.get(f"{BASE}/accounts/A-2")).json()
    assert closed["status"] == "CLOSED"
    assert [p["cis_premise_id"] for p in closed["premises"]] == ["PR-3"]
    assert_problem(await api.get(f"{BASE}/accounts/A-404"), 404, "not-found")

    everything = (await api.get(f"{BASE}/premises")).json()["items"]
    assert [(p["cis_premise_id"], p["cis_account_id"]) for p in everything] == [
        ("PR-1", "A-1"),
        ("PR-2", "A-1"),
        ("PR-3", "A-2"),
        ("PR-4", "A-3"),
        ("PR-5", "A-4"),
    ]
    assert [[sp["cis_service_point_id"] for sp in p["service_points"]] for p in everything] == [
        ["SP-1", "SP-2"],
        ["SP-3"],
        ["SP-4"],
        ["SP-5"],
        ["SP-6"],
    ]
    of_a1 = (await api.get(f"{BASE}/premises", params={"cis_account_id": "A-1"})).json()["items"]
    assert [p["cis_premise_id"] for p in of_a1] == ["PR-1", "PR-2"]
    premise = (await api.get(f"{BASE}/premises/PR-1")).json()
    assert [sp["cis_service_point_id"] for sp in premise["service_points"]] == ["SP-1", "SP-2"]
    assert_problem(await api.get(f"{BASE}/premises/PR-404"), 404, "not-found")


# --- keyset paging --------------------------------------------------------------------------------


@pytest.mark.usefixtures("customers")
async def test_paging_walks_every_row_once_in_key_order(api: httpx.AsyncClient) -> None:
    assert await walk(api, f"{BASE}/persons", "cis_person_id") == (["P-1", "P-2", "P-3"], 2)
    # Four accounts: the second page is full and is the last one (no empty third page).
    assert await walk(api, f"{BASE}/accounts", "cis_account_id") == (["A-1", "A-2", "A-3", "A-4"], 2)
    assert await walk(api, f"{BASE}/premises", "cis_premise_id") == (["PR-1", "PR-2", "PR-3", "PR-4", "PR-5"], 3)
    assert await walk(api, f"{BASE}/premises", "cis_premise_id", limit=1000) == (
        ["PR-1", "PR-2", "PR-3", "PR-4", "PR-5"],
        1,
    )

    first = (await api.get(f"{BASE}/persons", params={"limit": 2})).json()
    assert [p["cis_person_id"] for p in first["items"]] == ["P-1", "P-2"]
    assert first["next_after"] == "P-2"
    rest = (await api.get(f"{BASE}/persons", params={"limit": 2, "after": "P-2"})).json()
    assert [p["cis_person_id"] for p in rest["items"]] == ["P-3"]
    assert rest["next_after"] is None
    # A filter and the cursor combine.
    filtered = (await api.get(f"{BASE}/accounts", params={"cis_person_id": "P-1", "after": "A-1"})).json()
    assert [a["cis_account_id"] for a in filtered["items"]] == ["A-4"]


async def test_an_integer_key_pages_by_number_and_refuses_other_cursors(
    api: httpx.AsyncClient, devices: list[int]
) -> None:
    assert await walk(api, f"{BASE}/devices", "device_id") == ([2, 9, 10, 11], 2)
    first = (await api.get(f"{BASE}/devices", params={"limit": 2})).json()
    assert first["next_after"] == "9"
    beta = (await api.get(f"{BASE}/devices", params={"head_end_system": "BETA"})).json()["items"]
    assert [d["device_id"] for d in beta] == [11]
    device = (await api.get(f"{BASE}/devices/10")).json()
    assert (device["head_end_system"], device["nic_id"], device["serial_no"]) == ("ALPHA", "nic-10", "S10")

    garbage = assert_problem(await api.get(f"{BASE}/devices", params={"after": "abc"}), 422, "validation-error")
    assert fields(garbage) == ["query.after"]
    # A number no BIGINT holds is no cursor this listing returned either, not a database error.
    huge = await api.get(f"{BASE}/devices", params={"after": "99999999999999999999999"})
    assert fields(assert_problem(huge, 422, "validation-error")) == ["query.after"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "query.limit"),
        ({"limit": "1001"}, "query.limit"),
        ({"limit": "many"}, "query.limit"),
        ({"after": "x" * 201}, "query.after"),
    ],
)
async def test_bad_paging_parameters_name_the_parameter(
    sqlite_api: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    body = assert_problem(await sqlite_api.get(f"{BASE}/persons", params=params), 422, "validation-error")
    assert fields(body) == [field]
    assert field in body["detail"]


# --- not found and malformed identifiers ------------------------------------------------------------


async def test_an_unknown_id_is_a_404_problem(api: httpx.AsyncClient) -> None:
    unknown = "00000000-0000-7000-8000-000000000000"
    for path, what in [
        ("/persons/nobody", "person"),
        ("/accounts/nobody", "account"),
        ("/premises/nobody", "premise"),
        ("/programs/NOBODY", "program"),
        ("/devices/12345", "device"),
        (f"/enrollments/{unknown}", "enrollment"),
        (f"/status-checks/{unknown}", "status check"),
        (f"/events/{unknown}", "event"),
        (f"/events/{unknown}/participations", "event"),
        (f"/score-snapshots/{unknown}/scores?program_code=P", "score snapshot"),
    ]:
        body = assert_problem(await api.get(BASE + path), 404, "not-found")
        assert body["title"] == f"{what} not found", path


async def test_malformed_identifiers_are_refused_not_crashed_on(api: httpx.AsyncClient) -> None:
    for path, params, field in [
        ("/devices/ten", {}, "path.device_id"),
        ("/devices/0", {}, "path.device_id"),
        ("/devices/99999999999999999999999", {}, "path.device_id"),  # over BIGINT
        ("/status-checks", {"device_id": "99999999999999999999999"}, "query.device_id"),
        ("/persons/" + "x" * 65, {}, "path.cis_person_id"),
        # PostgreSQL text cannot hold NUL: an id, filter or cursor with one is invalid input.
        ("/persons/a%00b", {}, "path.cis_person_id"),
        ("/accounts", {"cis_person_id": "a\x00"}, "query.cis_person_id"),
        ("/persons", {"after": "a\x00"}, "query.after"),
        ("/score-snapshots/some-file/scores", {}, "query.program_code"),
    ]:
        body = assert_problem(await api.get(BASE + path, params=params), 422, "validation-error")
        assert fields(body) == [field], path


# --- programs -------------------------------------------------------------------------------------

DEFAULT_RULES = {
    "reliability_half_life_events": 5.0,
    "reliability_prior": 0.7,
    "reliability_prior_weight": 2.0,
    "outcome_values": {
        "successful_participation": 1.0,
        "in_flight_override": 0.3,
        "preemptive_opt_out": 0.2,
        "error": 0.5,
        "non_responsive": 0.0,
    },
    "connectivity_full_hours": 24.0,
    "connectivity_zero_hours": 168.0,
    "fatigue_per_event": 0.1,
    "fatigue_window_days": 7.0,
    "fatigue_cap": 0.5,
    "reliability_weight": 0.75,
    "connectivity_weight": 0.25,
    "offline_after_hours": 168.0,
    "chronic_opt_out_count": 3,
    "chronic_opt_out_window": 5,
    "non_responsive_streak": 3,
    "status_freshness_hours": 24.0,
    "status_check_timeout_minutes": 10.0,
    "setup_recheck_period_hours": 72.0,
    "expected_shed_kw": 1.0,
    "outcome_grace_hours": 24.0,
}
"""The rule defaults of shared/design/scoring.md and flows.md, written out."""

PROGRAM = f"{BASE}/programs/SUMMER-BYOT"


async def create(api: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await api.post(f"{BASE}/programs", json={"program_code": "SUMMER-BYOT", "name": "Summer BYOT"} | body)


async def test_a_new_program_is_a_draft_with_the_documented_rules(api: httpx.AsyncClient) -> None:
    response = await create(api)
    assert response.status_code == 201, response.text
    program = response.json()
    assert (program["program_code"], program["name"], program["status"]) == ("SUMMER-BYOT", "Summer BYOT", "DRAFT")
    assert program["enrollment_opens_at"] is None
    assert program["enrollment_closes_at"] is None
    assert program["eligible_device_types"] == ["THERMOSTAT"]
    assert program["excluded_program_codes"] == []
    assert program["rules"] == DEFAULT_RULES

    stored = (await api.get(PROGRAM)).json()
    assert stored["rules"] == DEFAULT_RULES
    assert stored["status"] == "DRAFT"
    assert [p["program_code"] for p in (await api.get(f"{BASE}/programs")).json()["items"]] == ["SUMMER-BYOT"]

    again = assert_problem(await create(api, name="Another name"), 409, "conflict")
    assert "SUMMER-BYOT" in again["detail"]
    assert (await api.get(PROGRAM)).json()["name"] == "Summer BYOT"


async def test_a_program_keeps_the_settings_it_was_created_with(api: httpx.AsyncClient) -> None:
    response = await create(
        api,
        status="ACTIVE",
        enrollment_opens_at="2026-05-01T00:00:00Z",
        enrollment_closes_at="2026-09-30T00:00:00-05:00",
        eligible_device_types=["THERMOSTAT", "BATTERY"],
        excluded_program_codes=["WINTER-BYOT"],
        rules={"expected_shed_kw": 2.5, "outcome_values": {"error": 0.4}},
    )
    assert response.status_code == 201, response.text
    stored = (await api.get(PROGRAM)).json()
    assert stored["status"] == "ACTIVE"
    assert datetime.fromisoformat(stored["enrollment_opens_at"]) == datetime(2026, 5, 1, tzinfo=UTC)
    assert datetime.fromisoformat(stored["enrollment_closes_at"]) == datetime(2026, 9, 30, 5, tzinfo=UTC)
    assert stored["eligible_device_types"] == ["THERMOSTAT", "BATTERY"]
    assert stored["excluded_program_codes"] == ["WINTER-BYOT"]
    assert stored["rules"]["expected_shed_kw"] == 2.5
    assert stored["rules"]["outcome_values"]["error"] == 0.4
    assert stored["rules"]["outcome_values"]["in_flight_override"] == 0.3
    assert stored["rules"]["fatigue_cap"] == 0.5
    active = (await api.get(f"{BASE}/programs", params={"status": "ACTIVE"})).json()["items"]
    assert [p["program_code"] for p in active] == ["SUMMER-BYOT"]
    assert (await api.get(f"{BASE}/programs", params={"status": "DRAFT"})).json()["items"] == []


async def test_the_program_lifecycle_is_enforced(api: httpx.AsyncClient) -> None:
    assert (await create(api)).status_code == 201
    refused = assert_problem(await api.patch(PROGRAM, json={"status": "SUSPENDED"}), 409, "program-status-change")
    assert fields(refused) == ["body.status"]
    assert (await api.get(PROGRAM)).json()["status"] == "DRAFT"

    for status in ("ACTIVE", "SUSPENDED", "ACTIVE", "CLOSED"):
        response = await api.patch(PROGRAM, json={"status": status})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
        assert (await api.get(PROGRAM)).json()["status"] == status

    reopened = assert_problem(await api.patch(PROGRAM, json={"status": "ACTIVE"}), 409, "program-status-change")
    assert reopened["errors"][0]["field"] == "body.status"
    assert "CLOSED" in reopened["detail"]
    stored = (await api.get(PROGRAM)).json()
    # Each change was a version sent to the DERMS; the refused ones were neither.
    assert (stored["status"], stored["version"], stored["sync_state"]) == ("CLOSED", 5, "SENT")
    # Staying put is not a transition; a closed program's name may still be corrected.
    renamed = await api.patch(PROGRAM, json={"status": "CLOSED", "name": "Summer BYOT 2026"})
    assert renamed.status_code == 200, renamed.text
    assert (await api.get(PROGRAM)).json()["name"] == "Summer BYOT 2026"


async def test_a_backwards_enrollment_window_is_refused(api: httpx.AsyncClient) -> None:
    backwards = await create(
        api, enrollment_opens_at="2026-06-01T00:00:00Z", enrollment_closes_at="2026-05-01T00:00:00Z"
    )
    assert fields(assert_problem(backwards, 422, "program-rule")) == ["body.enrollment_closes_at"]
    assert_problem(await api.get(PROGRAM), 404)

    assert (await create(api, enrollment_opens_at="2026-06-01T00:00:00Z")).status_code == 201
    on_patch = await api.patch(PROGRAM, json={"enrollment_closes_at": "2026-06-01T00:00:00Z"})  # empty window
    assert fields(assert_problem(on_patch, 422, "program-rule")) == ["body.enrollment_closes_at"]
    assert (await api.get(PROGRAM)).json()["enrollment_closes_at"] is None
    # A null clears a bound: without an opening date the same closing date is fine.
    cleared = await api.patch(
        PROGRAM, json={"enrollment_opens_at": None, "enrollment_closes_at": "2026-06-01T00:00:00Z"}
    )
    assert cleared.status_code == 200, cleared.text
    stored = (await api.get(PROGRAM)).json()
    assert stored["enrollment_opens_at"] is None
    assert datetime.fromisoformat(stored["enrollment_closes_at"]) == datetime(2026, 6, 1, tzinfo=UTC)


async def test_a_program_cannot_exclude_itself(api: httpx.AsyncClient) -> None:
    refused = assert_problem(await create(api, excluded_program_codes=["SUMMER-BYOT"]), 422, "program-rule")
    assert fields(refused) == ["body.excluded_program_codes"]
    assert_problem(await api.get(PROGRAM), 404)
    assert (await create(api, excluded_program_codes=["WINTER-BYOT"])).status_code == 201
    on_patch = await api.patch(PROGRAM, json={"excluded_program_codes": ["WINTER-BYOT", "SUMMER-BYOT"]})
    assert fields(assert_problem(on_patch, 422, "program-rule")) == ["body.excluded_program_codes"]
    assert (await api.get(PROGRAM)).json()["excluded_program_codes"] == ["WINTER-BYOT"]


async def test_text_with_nul_is_refused_on_every_database(api: httpx.AsyncClient) -> None:
    # PostgreSQL text cannot hold NUL: refusing it in validation keeps both databases alike and answers 422.
    problem = assert_problem(await create(api, name="Summer\x00BYOT"), 422, "validation-error")
    assert fields(problem) == ["body.name"]
    assert (await create(api)).status_code == 201
    problem = assert_problem(await api.patch(PROGRAM, json={"name": "\x00"}), 422, "validation-error")
    assert fields(problem) == ["body.name"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rules": {"fatigue_kap": 0.3}}, "body.rules.fatigue_kap"),
        ({"rules": {"fatigue_cap": 1.5}}, "body.rules.fatigue_cap"),
        ({"rules": {"outcome_values": {"success": 1.0}}}, "body.rules.outcome_values.success"),
        ({"rules": {"expected_shed_kw": 0}}, "body.rules.expected_shed_kw"),  # what program sync carries
        ({"rules": {"expected_shed_kw": 1001}}, "body.rules.expected_shed_kw"),
        ({"rules": {"outcome_grace_hours": -1}}, "body.rules.outcome_grace_hours"),
        ({"rules": {"outcome_grace_hours": 24 * 14 + 1}}, "body.rules.outcome_grace_hours"),
        ({"program_code": "summer-byot"}, "body.program_code"),
        ({"program_code": None}, "body.program_code"),
        ({"name": ""}, "body.name"),
        ({"eligible_device_types": []}, "body.eligible_device_types"),
        ({"eligible_device_types": ["TOASTER"]}, "body.eligible_device_types.0"),
        ({"status": "RUNNING"}, "body.status"),
        ({"enrollment_opens_at": "2026-06-01T00:00:00"}, "body.enrollment_opens_at"),  # no time zone
        ({"enrollment_closes_at": "9999-12-31T23:00:00-05:00"}, "body.enrollment_closes_at"),  # year 10000 in UTC
        ({"enrollment_opens_at": "0001-01-01T00:30:00+01:00"}, "body.enrollment_opens_at"),  # year 0 in UTC
        ({"colour": "blue"}, "body.colour"),
    ],
)
async def test_a_bad_program_body_names_the_field(
    sqlite_api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await create(sqlite_api, **body), 422, "validation-error")
    assert fields(problem) == [field]
    assert (await sqlite_api.get(f"{BASE}/programs")).json()["items"] == []


async def test_a_program_body_missing_or_not_json_is_refused(sqlite_api: httpx.AsyncClient) -> None:
    missing = await sqlite_api.post(f"{BASE}/programs", json={"name": "No code"})
    assert fields(assert_problem(missing, 422, "validation-error")) == ["body.program_code"]
    not_json = await sqlite_api.post(
        f"{BASE}/programs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert fields(assert_problem(not_json, 422, "validation-error"))[0].startswith("body")
    no_body = await sqlite_api.post(f"{BASE}/programs")
    assert fields(assert_problem(no_body, 422, "validation-error")) == ["body"]
    assert (await sqlite_api.get(f"{BASE}/programs")).json()["items"] == []


async def test_patching_a_program_changes_only_what_it_names(api: httpx.AsyncClient) -> None:
    created = await create(api, rules={"expected_shed_kw": 2.0, "outcome_values": {"error": 0.4}})
    assert created.status_code == 201, created.text
    response = await api.patch(PROGRAM, json={"rules": {"fatigue_cap": 0.3, "outcome_values": {"non_responsive": 0.1}}})
    assert response.status_code == 200, response.text
    stored = (await api.get(PROGRAM)).json()
    assert response.json()["rules"] == stored["rules"]
    assert stored["rules"]["fatigue_cap"] == 0.3
    assert stored["rules"]["outcome_values"]["non_responsive"] == 0.1
    # rules the patch left out keep their value, nested ones too
    assert stored["rules"]["expected_shed_kw"] == 2.0
    assert stored["rules"]["outcome_values"]["error"] == 0.4
    assert stored["rules"]["reliability_prior"] == 0.7
    assert stored["name"] == "Summer BYOT"
    assert stored["eligible_device_types"] == ["THERMOSTAT"]

    assert_problem(await api.patch(f"{BASE}/programs/NOBODY", json={"name": "x"}), 404, "not-found")
    unknown_rule = assert_problem(await api.patch(PROGRAM, json={"rules": {"no_such_rule": 1}}), 422)
    assert fields(unknown_rule) == ["body.rules.no_such_rule"]
    # A required setting cannot be blanked with null: 422 naming it, and nothing changes.
    for name in ("name", "status", "eligible_device_types", "excluded_program_codes", "rules"):
        problem = assert_problem(await api.patch(PROGRAM, json={name: None}), 422, "validation-error")
        assert fields(problem) == [f"body.{name}"]
    assert (await api.get(PROGRAM)).json() == stored


async def test_each_program_change_sends_one_program_sync_and_a_refused_one_sends_nothing(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    async def sent() -> list[tuple[str, int, dict[str, Any]]]:
        async with runtime.async_engine("assethub").connect() as connection:
            rows = await connection.execute(
                select(t.outbox.c.envelope).where(t.outbox.c.type == "program-sync.v1").order_by(t.outbox.c.position)
            )
            envelopes = [json.loads(r.envelope) for r in rows]
        return [(e["business_key"], e["sequence"], e["payload"]) for e in envelopes]

    assert (await create(api, status="ACTIVE", rules={"expected_shed_kw": 2.5})).status_code == 201
    assert_problem(await create(api), 409, "conflict")
    assert_problem(await api.patch(PROGRAM, json={"status": "DRAFT"}), 409, "program-status-change")
    assert_problem(await api.patch(PROGRAM, json={"rules": {"expected_shed_kw": -1}}), 422, "validation-error")
    assert (await api.patch(PROGRAM, json={"status": "CLOSED"})).status_code == 200
    assert await sent() == [
        (
            "SUMMER-BYOT",
            1,
            {
                "program_code": "SUMMER-BYOT",
                "version": 1,
                "name": "Summer BYOT",
                "status": "ACTIVE",
                "expected_shed_kw": 2.5,
                "outcome_grace_hours": 24.0,
            },
        ),
        (
            "SUMMER-BYOT",
            2,
            {
                "program_code": "SUMMER-BYOT",
                "version": 2,
                "name": "Summer BYOT",
                "status": "CLOSED",
                "expected_shed_kw": 2.5,
                "outcome_grace_hours": 24.0,
            },
        ),
    ]
