"""Every table is created by migrations, on SQLite and PostgreSQL alike, and matches the code's tables."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, event, inspect

from derbridge.infra.db import create_sync_engine
from derbridge.migrations.runner import SYSTEMS, downgrade, metadata_of, upgrade
from derbridge.settings import Settings


def _tables(url: str) -> set[str]:
    """The tables the database at ``url`` holds now."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


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
        assert _tables(url) - {"alembic_version"} == set()


class _Killed(Exception):
    """Stands for the process dying at that statement."""


def test_an_upgrade_cut_off_half_way_leaves_the_database_as_it_found_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every process migrates as it starts; the crash test SIGKILLs processes while they start. An upgrade
    # that stops after some of its DDL must leave nothing behind, so that the next start simply migrates.
    from derbridge.migrations import environment

    made = environment.create_sync_engine

    def dying_after_three_tables(url: str) -> Engine:
        engine = made(url)
        created = 0

        @event.listens_for(engine, "before_cursor_execute")
        def count(*args: object) -> None:
            nonlocal created
            if str(args[2]).lstrip().upper().startswith("CREATE TABLE"):
                created += 1
                if created > 3:
                    raise _Killed

        return engine

    url = settings.database_url("derms")
    monkeypatch.setattr(environment, "create_sync_engine", dying_after_three_tables)
    with pytest.raises(_Killed):
        upgrade("derms", url)
    assert _tables(url) - {"alembic_version"} == set()
    monkeypatch.undo()
    upgrade("derms", url)  # the next start migrates as if nothing had happened
    assert set(metadata_of("derms").tables) <= _tables(url)
