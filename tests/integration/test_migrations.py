"""Every table is created by migrations, on SQLite and PostgreSQL alike, and matches the code's tables."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from derbridge.infra.db import create_sync_engine
from derbridge.migrations.runner import SYSTEMS, downgrade, metadata_of, upgrade
from derbridge.settings import Settings


def test_migrations_create_exactly_the_tables_the_code_describes(settings: Settings) -> None:
    for system in SYSTEMS:
        url = settings.database_url(system)
        upgrade(system, url)
        upgrade(system, url)  # idempotent: a second run is a no-op, not an error
        engine = create_sync_engine(url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                differences = compare_metadata(context, metadata_of(system))
                tables = set(inspect(connection).get_table_names())
        finally:
            engine.dispose()
        assert differences == [], f"{system}: migrations and tables.py disagree: {differences}"
        assert set(metadata_of(system).tables) <= tables


def test_migrations_go_down_to_an_empty_database(settings: Settings) -> None:
    for system in SYSTEMS:
        url = settings.database_url(system)
        upgrade(system, url)
        downgrade(system, url)
        engine = create_sync_engine(url)
        try:
            with engine.connect() as connection:
                remaining = set(inspect(connection).get_table_names()) - {"alembic_version"}
        finally:
            engine.dispose()
        assert remaining == set()
