"""Shared fixtures: fresh databases per test on SQLite and, when a server is given, PostgreSQL.

PostgreSQL tests read ``DERBRIDGE_TEST_POSTGRES_URL`` (a server URL with rights to create databases) and
skip visibly without it. In CI ``DERBRIDGE_REQUIRE_SERVICES=1`` turns that skip into a failure, so a
service test can never silently stop running.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from derbridge.api.app import create_asgi
from derbridge.infra.logging import configure_logging
from derbridge.migrations.runner import SYSTEMS
from derbridge.runtime import Runtime
from derbridge.settings import Settings

# Before anything imports them: the shared helpers' assertions report their operands, as a test's do.
pytest.register_assert_rewrite("tests.support")

from tests.support.databases import migrate_from_template, migrated_sqlite_template  # noqa: E402
from tests.support.services import REQUIRE_ENV, PostgresServer, postgres_server  # noqa: E402


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server on which the test may create databases (dropped at teardown)."""
    server = postgres_server()
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


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir of SQLite databases at the newest schema, made once: copied where a test wants fresh ones."""
    return migrated_sqlite_template(tmp_path_factory.mktemp("migrated-sqlite"))


@pytest.fixture
def runtime(settings: Settings, migrated_sqlite: Path) -> Iterator[Runtime]:
    """Both systems migrated in fresh databases; engines disposed afterwards."""
    migrate_from_template(settings, migrated_sqlite)
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
