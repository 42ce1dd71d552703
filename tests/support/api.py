"""Helpers of the HTTP API tests: problem-detail assertions, keyset-page walking, clients, CIS extracts, and
PostgreSQL databases migrated once and emptied for each test."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from derbridge.api.app import create_asgi
from derbridge.cis.extract import CIS_COLUMNS
from derbridge.metadata import metadata_of
from derbridge.migrations.runner import System, upgrade
from derbridge.runtime import Runtime
from derbridge.settings import Settings
from tests.support.services import PostgresServer, postgres_server

PROBLEM_MEDIA_TYPE = "application/problem+json"
TOKEN = "test-token"  # what conftest's settings configure


def assert_problem(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    """Assert that ``response`` is an RFC 9457 problem with ``status`` (and type ``kind``); return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://derbridge.dev/problems/")
    assert body["title"]
    assert body["detail"]
    if kind is not None:
        assert body["type"] == f"https://derbridge.dev/problems/{kind}", body
    return body


def fields(problem: dict[str, Any]) -> list[str]:
    """The field paths a problem's ``errors`` name."""
    return [error["field"] for error in problem.get("errors", [])]


async def walk(api: httpx.AsyncClient, path: str, key: str, limit: int = 2) -> tuple[list[Any], int]:
    """The ``key`` of every item of a listing, following ``next_after`` page by page; and the page count."""
    seen: list[Any] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit} if after is None else {"limit": limit, "after": after}
        response = await api.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        pages += 1
        assert len(page["items"]) <= limit
        seen.extend(item[key] for item in page["items"])
        after = page["next_after"]
        if after is None:
            return seen, pages
        assert page["items"], "a page with a next cursor must not be empty"
        assert pages < 50, "the listing never ends"


@asynccontextmanager
async def client(runtime: Runtime, token: str | None = TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the whole in-process server of ``runtime`` (body limit included), with ``token``."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    transport = httpx.ASGITransport(app=create_asgi(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://derbridge.test", headers=headers) as api:
        yield api
    await runtime.aclose()


def write_extract(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    """A CIS extract at ``path``: the header of CIS_COLUMNS, then ``rows`` (missing columns left empty)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CIS_COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def cis_row(
    person: str, name: str, account: str, status: str, premise: str, point: str, **extra: str
) -> dict[str, str]:
    """One extract row with a plausible address; ``extra`` overrides any column."""
    return {
        "cis_person_id": person,
        "name": name,
        "email": "",
        "home_phone": "555-0100",
        "cis_account_id": account,
        "account_status": status,
        "cis_premise_id": premise,
        "cis_service_point_id": point,
        "division": "NORTH",
        "address1": f"{premise} Main St",
        "city": "Springfield",
        "county": "Sangamon",
        "state": "IL",
        "postal": "62701",
        "country": "US",
        "time_zone": "America/Chicago",
        "latitude": "39.78",
        "longitude": "-89.65",
    } | extra


class ReusedPostgres:
    """Asset Hub's and the DERMS's PostgreSQL databases, created and migrated once, emptied for each test.

    Creating, migrating and dropping fresh databases costs about a second per test; emptying migrated ones
    a few hundredths of that. Every test still starts from empty tables and restarted sequences.
    """

    SYSTEMS: tuple[System, ...] = ("assethub", "derms")

    def __init__(self, server: PostgresServer) -> None:
        self.urls = {system: server.create_database(system) for system in self.SYSTEMS}
        for system, url in self.urls.items():
            upgrade(system, url)

    def settings(self, data_dir: Path) -> Settings:
        """Settings on these databases, emptied; other components keep SQLite files in ``data_dir``."""
        for system, url in self.urls.items():
            # DELETE children before parents, then restart every sequence: for a few rows five times faster
            # than TRUNCATE … RESTART IDENTITY, and the same result.
            with psycopg.connect(url) as connection:
                for table in reversed(metadata_of(system).sorted_tables):
                    connection.execute(f'DELETE FROM "{table.name}"')  # names from our own metadata
                connection.execute("SELECT setval(c.oid, 1, false) FROM pg_class AS c WHERE c.relkind = 'S'")
        return Settings.model_validate(
            {"data_dir": data_dir, "api_token": TOKEN}
            | {system: {"database_url": url} for system, url in self.urls.items()}
        )


def reused_postgres_databases() -> Iterator[ReusedPostgres]:
    """Generator body of a module-scoped fixture: the databases, dropped at the end (skips without a server)."""
    server = postgres_server()
    try:
        yield ReusedPostgres(server)
    finally:
        server.drop_all()


def settings_for(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """What conftest's ``settings`` gives (SQLite, then PostgreSQL), with PostgreSQL databases reused from the
    module's ``reused_postgres`` fixture."""
    data_dir = tmp_path / "var"
    if request.param == "sqlite":
        return Settings(data_dir=data_dir, api_token=TOKEN)
    databases: ReusedPostgres = request.getfixturevalue("reused_postgres")
    return databases.settings(data_dir)
