"""``INSERT … ON CONFLICT`` for the database at hand: SQLite and PostgreSQL spell it the same way, but
SQLAlchemy builds it from each dialect's own ``insert``.

SQLAlchemy 2.0 cannot cache a dialect ``INSERT … ON CONFLICT`` statement (its ``on_conflict_*`` clauses
carry no cache key), so every execution compiles it again — a third of the time of a small message's
handler, measured on the demo. :func:`frozen` compiles such a statement once per dialect into a
``text()`` statement with the same typed bind parameters and result columns, which SQLAlchemy caches like
any other statement.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from sqlalchemy import Table, bindparam, column, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect


def insert_for(dialect_name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An insert on ``table`` that offers ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"no upsert for the {dialect_name!r} dialect")


_frozen: dict[tuple[str, Hashable], TextClause | TextualSelect] = {}


def frozen(dialect: Dialect, key: Hashable, build: Callable[[str], ClauseElement]) -> TextClause | TextualSelect:
    """The statement ``build(dialect_name)`` makes, compiled once per dialect and ``key`` into a cacheable
    ``text()`` statement. ``build`` must name every value with a :func:`~sqlalchemy.bindparam` (execute the
    result with a dict, or a list of dicts for executemany); ``key`` names the statement (e.g. the table
    and what it does): the same key must always build the same statement."""
    found = _frozen.get((dialect.name, key))
    if found is None:
        found = _frozen[(dialect.name, key)] = _freeze(build(dialect.name), dialect)
    return found


def _freeze(statement: ClauseElement, dialect: Dialect) -> TextClause | TextualSelect:
    # Compiled with :name parameters, the form text() reads; the real dialect then compiles the text to
    # its own parameter style (and caches it).
    # No bind casts either (psycopg renders ``:x::TYPE``, which text() cannot parse): the real dialect adds
    # them again from the parameters' types.
    named: Any = type(dialect)(paramstyle="named")  # type: ignore[call-arg]  # every real dialect takes it
    named.bind_typing = BindTyping.NONE
    # As for executemany: no implicit RETURNING of a generated primary key (PostgreSQL adds one to a
    # single-row INSERT), which a frozen statement executed with many rows could not honour.
    compiled: Any = statement.compile(dialect=named, for_executemany=True)
    clause = text(compiled.string).bindparams(
        *(bindparam(name, type_=bind.type) for name, bind in compiled.binds.items())
    )
    returned = [column(name, type_) for _key, name, _objects, type_ in compiled._result_columns]
    return clause.columns(*returned) if returned else clause
