"""Database engines for each system: one URL, a sync engine for bulk work and an async one for the APIs.

Settings carry one plain URL per system (``sqlite:///…`` or ``postgresql://…``). This module picks the
drivers: pysqlite / aiosqlite for SQLite, psycopg 3 for PostgreSQL in both modes (psycopg also gives us
``COPY`` for bulk loads). Every SQLite connection runs in WAL mode with foreign keys on and a busy
timeout, so the API, the CLI and the bridge can share a file. On the async engine a write transaction
(``engine.begin()``) begins ``IMMEDIATE``, so that a CLI command's write waits for a running server's write
lock up to the busy timeout instead of failing "database is locked" (see :class:`SQLiteAsyncEngine`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, TypeDecorator, create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from derbridge.infra.private import private_sqlite_file
from derbridge.infra.sqlite_inline import inline_connect

SQLITE_BUSY_TIMEOUT_MS = 30_000

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (auto-increment); PostgreSQL wants BIGINT.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database keeps.

    SQLite has no timezone-aware type and hands back naive values; storing naive UTC there and putting
    ``tzinfo=UTC`` back on read gives one behaviour on both databases. A naive value is refused on write:
    a time without a zone is a bug upstream, not something to guess about.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _driver_url(url: str, *, use_async: bool) -> URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if use_async else "sqlite+pysqlite")
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    raise ValueError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://…")


def sync_url(url: str) -> URL:
    """The URL with the synchronous driver this project uses for that database."""
    return _driver_url(url, use_async=False)


def async_url(url: str) -> URL:
    """The URL with the asynchronous driver this project uses for that database."""
    return _driver_url(url, use_async=True)


def is_sqlite(url: str) -> bool:
    """True for a SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


def _prepare_sqlite_file(url: URL) -> None:
    if url.database and url.database != ":memory:":
        # Personal data: 0600 in a 0700 directory before SQLite opens it (its -wal and -shm follow).
        private_sqlite_file(Path(url.database))


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


WRITE_INTENT = "derbridge_write_intent"
"""Execution option set on the connections of :meth:`SQLiteAsyncEngine.begin`: their transaction writes."""


# TCP keepalives on every PostgreSQL connection: a server that vanished without a reset (a partition, a
# host gone, a NAT entry expired) otherwise leaves a query waiting on the socket for the kernel's default of
# over two hours, and a job or the relay with it. With these, such a connection fails in about a minute and
# the pool opens a new one. A URL's own settings win (``?keepalives_idle=…``).
POSTGRES_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}


def _postgres_connect_args(url: URL) -> dict[str, Any]:
    return {key: value for key, value in POSTGRES_KEEPALIVES.items() if key not in url.query}


def _begin_sqlite_transaction(connection: Any) -> None:
    # The inline connection is in autocommit mode; SQLAlchemy's transaction starts the database's. A write
    # transaction takes the write lock at once (IMMEDIATE): that is where SQLite's busy handler waits for
    # another process's writer. A deferred transaction that read first and then writes asks for the lock as
    # an upgrade, and SQLite answers SQLITE_BUSY at once, without the busy handler, when another connection
    # holds the lock or wrote since this one's snapshot ("database is locked" after seconds, not 30 s).
    # Read-only work (``engine.connect()``) stays deferred: readers never wait for a writer in WAL mode.
    immediate = connection.get_execution_options().get(WRITE_INTENT, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class SQLiteAsyncEngine(AsyncEngine):
    """The async engine on SQLite, whose ``begin()`` (the project's way to open a write transaction) begins
    ``IMMEDIATE``: a write waits for another process's write lock up to the busy timeout instead of failing
    when it finds it taken after a read (see ``_begin_sqlite_transaction``)."""

    __slots__ = ()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a write transaction (``BEGIN IMMEDIATE``), committed at the end of the block."""
        connection = self.connect()
        async with connection:
            await connection.execution_options(**{WRITE_INTENT: True})
            async with connection.begin():
                yield connection


def create_sync_engine(url: str) -> Engine:
    """A synchronous engine (CLI, bulk loads, migrations)."""
    target = sync_url(url)
    if target.get_backend_name() == "sqlite":
        _prepare_sqlite_file(target)
        engine = create_engine(target, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(target, pool_pre_ping=True, connect_args=_postgres_connect_args(target))


def create_async_db_engine(url: str) -> AsyncEngine:
    """An asynchronous engine (the APIs)."""
    target = async_url(url)
    if target.get_backend_name() == "sqlite":
        _prepare_sqlite_file(target)
        database = target.database or ":memory:"

        async def connect() -> Any:
            return inline_connect(database, SQLITE_BUSY_TIMEOUT_MS / 1000)

        # One connection per process: SQLite lets one writer in at a time, and connections of one process
        # competing for the write lock fall into SQLite's busy handler, which sleeps in steps of up to 100 ms.
        # Queueing on one connection in asyncio is far faster. The connection runs inline (see
        # infra/sqlite_inline.py): no thread hand-off per call.
        engine = create_async_engine(
            target,
            async_creator=connect,
            pool_size=1,
            max_overflow=0,
            pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
        return SQLiteAsyncEngine(engine.sync_engine)
    return create_async_engine(
        target, pool_pre_ping=True, pool_size=10, max_overflow=10, connect_args=_postgres_connect_args(target)
    )
