"""The assethub database's migration history (Alembic's script directory)."""
