"""Shared fixtures: fresh databases per test on SQLite and, when a server is given, PostgreSQL.

PostgreSQL tests read ``DERBRIDGE_TEST_POSTGRES_URL`` (a server URL with rights to create databases) and
skip visibly without it. In CI ``DERBRIDGE_REQUIRE_SERVICES=1`` turns that skip into a failure, so a
service test can never silently stop running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from derbridge.api.app import create_asgi
from derbridge.infra.logging import configure_logging
from derbridge.migrations.runner import SYSTEMS
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings

POSTGRES_ENV = "DERBRIDGE_TEST_POSTGRES_URL"
REQUIRE_ENV = "DERBRIDGE_REQUIRE_SERVICES"


def _service_unavailable(what: str) -> None:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{what}, and {REQUIRE_ENV} says service tests must run")
    pytest.skip(what)


def _admin_conninfo() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        _service_unavailable(f"{POSTGRES_ENV} is not set: PostgreSQL tests skipped")
    assert url is not None
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresServer:
    """Creates throw-away databases on the test server and drops them afterwards."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.created: list[str] = []

    def create_database(self, label: str) -> str:
        name = f"derbridge_test_{label}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_url(self.conninfo).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            for name in self.created:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on which the test may create databases (dropped at teardown)."""
    conninfo = _admin_conninfo()
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        _service_unavailable(f"PostgreSQL at {POSTGRES_ENV} does not answer: {error}")
    server = PostgresServer(conninfo)
    yield server
    server.drop_all()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings whose two systems live in fresh, empty databases: SQLite files, then PostgreSQL."""
    data_dir = tmp_path / "var"
    if request.param == "sqlite":
        return Settings(data_dir=data_dir, api_token="test-token")
    server: PostgresServer = request.getfixturevalue("postgres")
    urls = {system: server.create_database(system) for system in SYSTEMS}
    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "api_token": "test-token",
            "assethub": {"database_url": urls["assethub"]},
            "derms": {"database_url": urls["derms"]},
        }
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings on SQLite only, for tests whose subject is not the database."""
    return Settings(data_dir=tmp_path / "var", api_token="test-token")


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's DERBRIDGE_* settings out of the tests (the test service URLs stay)."""
    for name in list(os.environ):
        if name.startswith("DERBRIDGE_") and not name.startswith("DERBRIDGE_TEST_") and name != REQUIRE_ENV:
            monkeypatch.delenv(name)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """Both systems migrated in fresh databases; engines disposed afterwards."""
    migrate_all(settings)
    runtime = Runtime(settings)
    yield runtime
    runtime.close_sync()


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the whole in-process server (body limit included), with the service credential."""
    transport = httpx.ASGITransport(app=create_asgi(runtime))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://derbridge.test", headers={"Authorization": "Bearer test-token"}
    ) as client:
        yield client
    await runtime.aclose()


@pytest.fixture(autouse=True, scope="session")
def _plain_logs() -> None:
    """JSON logs as in production: structlog's development renderer prints rich tracebacks with locals,
    which is slow and buries the test output."""
    configure_logging("WARNING", json=True)
