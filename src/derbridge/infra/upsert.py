"""``INSERT … ON CONFLICT`` for the database at hand: SQLite and PostgreSQL spell it the same way, but
SQLAlchemy builds it from each dialect's own ``insert``."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_for(dialect_name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An insert on ``table`` that offers ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"no upsert for the {dialect_name!r} dialect")
