"""An asyncio face for SQLite that runs each call inline, in the event loop's thread.

aiosqlite runs every call on a worker thread: a cursor, an execute, a fetch and a close are four thread
hand-offs per statement, each a wake-up through the event loop (~0.1 ms on this class of machine). SQLite
itself answers most statements in microseconds, in process, so the hand-offs cost many times the work:
a message handler of a dozen statements spent ~5 ms hopping. Running the same calls inline keeps
SQLAlchemy's async API (the code is the same for PostgreSQL) at SQLite's own speed.

The price: while SQLite waits for another *process* holding the write lock (``busy_timeout``), the event
loop waits too. Inside one process this never happens — each engine has one connection (see
``infra/db.py``) — so only a second process writing the same file (a CLI import beside a running server)
can make the loop wait, for as long as that process's transaction lasts. (A write transaction begins
``IMMEDIATE``, see ``infra/db.py``: it waits for the lock there, up to the busy timeout, rather than fail.)

SQLAlchemy's ``sqlite+aiosqlite`` dialect drives this object through the same methods it calls on an
``aiosqlite.Connection`` (``async_creator=``), so nothing else changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any


class InlineCursor:
    """The async cursor methods SQLAlchemy calls, done at once."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """The async connection methods SQLAlchemy's aiosqlite dialect calls, done at once."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Any = ()) -> InlineCursor:
        return InlineCursor(self._conn.execute(sql, parameters))

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    def stop(self) -> None:
        """Terminate (SQLAlchemy's forced close): closing is immediate here."""
        self._conn.close()


def inline_connect(database: str, timeout: float) -> InlineConnection:
    """Open ``database`` for use from the event loop's thread.

    In autocommit mode (``isolation_level=None``): the engine emits ``BEGIN`` itself when a transaction
    starts (see ``infra/db.py``), so that SAVEPOINTs work — the driver's own implicit transactions break
    them — and a transaction covers its reads as well as its writes.
    """
    return InlineConnection(sqlite3.connect(database, timeout=timeout, check_same_thread=False, isolation_level=None))
