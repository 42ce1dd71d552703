"""The services some tests need (PostgreSQL here; RabbitMQ in ``transport``, OpenSSH in ``sshd``) and the rule
for when one is missing: the test skips visibly, or fails when ``DERBRIDGE_REQUIRE_SERVICES`` is set (CI), so
a service test can never silently stop running."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_ENV = "DERBRIDGE_TEST_POSTGRES_URL"
REQUIRE_ENV = "DERBRIDGE_REQUIRE_SERVICES"


def service_unavailable(what: str) -> None:
    """Skip the test, or fail it when ``DERBRIDGE_REQUIRE_SERVICES`` says service tests must run."""
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{what}, and {REQUIRE_ENV} says service tests must run")
    pytest.skip(what)


def admin_conninfo() -> str:
    """The test server's URL (``DERBRIDGE_TEST_POSTGRES_URL``) as a libpq connection string."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        service_unavailable(f"{POSTGRES_ENV} is not set: PostgreSQL tests skipped")
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


def postgres_server() -> PostgresServer:
    """The test server, once it answers (skips, or fails under ``DERBRIDGE_REQUIRE_SERVICES``, otherwise)."""
    conninfo = admin_conninfo()
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        service_unavailable(f"PostgreSQL at {POSTGRES_ENV} does not answer: {error}")
    return PostgresServer(conninfo)
