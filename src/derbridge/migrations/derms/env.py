"""Alembic environment of the derms database."""

from derbridge.migrations.environment import run

run("derms")
