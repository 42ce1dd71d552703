"""The body of every system's Alembic ``env.py``: online migrations on our own engine, batch mode so
that ALTERs work on SQLite as on PostgreSQL.

Upgrades need no table metadata; autogenerate compares against ``config.attributes["target_metadata"]``
(:func:`derbridge.metadata.metadata_of`), passed by whoever autogenerates: the migrations import no
application code."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, event

from derbridge.infra.db import create_sync_engine
from derbridge.migrations.runner import System


def run(system: System) -> None:
    """Run the migrations Alembic asked for against the URL the runner put in the config."""
    config = context.config
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: call derbridge.migrations.runner.upgrade(system, url)")
    engine = create_sync_engine(url)
    _all_or_nothing_on_sqlite(engine)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=config.attributes.get("target_metadata"),
                render_as_batch=True,
                compare_type=True,
                # Every system starts by migrating; one transaction for the whole upgrade means a process
                # killed while it migrates leaves the database as it found it, never half a revision.
                transactional_ddl=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


def _all_or_nothing_on_sqlite(engine: Engine) -> None:
    """Make DDL transactional on SQLite. The sqlite3 module runs a ``CREATE TABLE`` outside any transaction
    (it begins one only before DML), so a process killed mid-upgrade left tables without their
    ``alembic_version`` row and every later start failed with "table … already exists" (the bridge crash
    test's SIGKILLs found it). The driver is put in autocommit mode and SQLAlchemy's transaction emits the
    ``BEGIN``, so the whole upgrade commits at once — SQLite's DDL is transactional."""
    if engine.dialect.name != "sqlite":
        return

    def autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    def begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", autocommit)
    event.listen(engine, "begin", begin)
