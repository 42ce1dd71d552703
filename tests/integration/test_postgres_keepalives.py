"""Every PostgreSQL connection the systems open has TCP keepalives, so a server gone without a reset (a
partition) fails a waiting query in about a minute instead of the kernel's two hours; a URL's own wins."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from derbridge.infra.db import POSTGRES_KEEPALIVES, create_async_db_engine, create_sync_engine
from tests.support.services import PostgresServer

pytestmark = pytest.mark.postgres


def test_sync_connections_have_keepalives(postgres: PostgresServer) -> None:
    engine = create_sync_engine(postgres.create_database("keepalive"))
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            parameters = connection.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert {key: int(parameters[key]) for key in POSTGRES_KEEPALIVES} == POSTGRES_KEEPALIVES


async def test_async_connections_have_keepalives_and_a_url_setting_wins(postgres: PostgresServer) -> None:
    engine = create_async_db_engine(postgres.create_database("keepalive") + "?keepalives_idle=7")
    try:
        async with engine.connect() as connection:
            raw = await connection.get_raw_connection()
            parameters = raw.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        await engine.dispose()
    assert parameters["keepalives_idle"] == "7"
    assert parameters["keepalives_interval"] == "10"
    assert parameters["keepalives_count"] == "3"
