"""The derms database's migration history (Alembic's script directory)."""
