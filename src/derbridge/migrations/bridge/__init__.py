"""The bridge database's migration history (Alembic's script directory)."""
