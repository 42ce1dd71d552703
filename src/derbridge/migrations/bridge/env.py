"""Alembic environment of the bridge database."""

from derbridge.migrations.environment import run

run("bridge")
