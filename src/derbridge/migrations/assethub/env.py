"""Alembic environment of the assethub database."""

from derbridge.migrations.environment import run

run("assethub")
