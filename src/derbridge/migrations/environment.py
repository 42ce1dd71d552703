"""The body of every system's Alembic ``env.py``: online migrations on our own engine, batch mode so
that ALTERs work on SQLite as on PostgreSQL."""

from __future__ import annotations

from alembic import context

from derbridge.infra.db import create_sync_engine
from derbridge.migrations.runner import System, metadata_of


def run(system: System) -> None:
    """Run the migrations Alembic asked for against the URL the runner put in the config."""
    config = context.config
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: call derbridge.migrations.runner.upgrade(system, url)")
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata_of(system),
                render_as_batch=True,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()
