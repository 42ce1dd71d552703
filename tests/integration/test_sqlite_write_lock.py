"""A write on SQLite waits for another process's write lock, as long as the busy timeout says.

Issue 13, defect 5: ``derbridge derms event create`` beside a running ``derbridge up`` failed at once with
"database is locked". Its transaction began deferred, read (the program, the candidates), then tried to
write while the server held the write lock: SQLite does not call the busy handler for a transaction that
must upgrade a read to a write (in WAL mode its snapshot may be stale), it answers SQLITE_BUSY at once.
Write transactions (``engine.begin()``) now begin ``IMMEDIATE``, taking the write lock first — where the
busy handler waits. Here another connection (the server) holds the write lock, having written, for a few
seconds while the command's write runs; the command must succeed.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from derbridge.cli import app
from derbridge.derms.adapters import tables as dm
from derbridge.infra.db import utcnow
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings

HOLD_SECONDS = 3.0
"""How long the other connection keeps the write lock: well within the 30 s busy timeout."""


@pytest.fixture
def derms_database(sqlite_settings: Settings) -> Path:
    """The DERMS's SQLite file, migrated, with one ACTIVE program."""
    migrate_all(sqlite_settings)
    runtime = Runtime(sqlite_settings)
    now = utcnow()
    with runtime.sync_engine("derms").begin() as connection:
        connection.execute(
            insert(dm.programs).values(
                program_code="SUMMER",
                name="Summer",
                status="ACTIVE",
                expected_shed_kw=1.0,
                outcome_grace_hours=1.0,
                created_at=now,
                updated_at=now,
            )
        )
    runtime.close_sync()
    database = make_url(sqlite_settings.database_url("derms")).database
    assert database is not None
    return Path(database)


@contextmanager
def write_lock_held(database: Path) -> Iterator[None]:
    """Another connection (another process's, as the server's) holds the write lock, having written, for
    ``HOLD_SECONDS``; the block runs meanwhile. The lock is taken before the block starts."""
    holding = threading.Event()
    failure: list[BaseException] = []

    def hold() -> None:
        try:
            connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("UPDATE programs SET updated_at = updated_at")
            holding.set()
            threading.Event().wait(HOLD_SECONDS)  # the server's long write transaction
            connection.execute("COMMIT")
            connection.close()
        except BaseException as error:  # reported by the test, not lost in the thread
            failure.append(error)
            holding.set()

    holder = threading.Thread(target=hold, name="write-lock-holder")
    holder.start()
    assert holding.wait(60), "the other connection did not get the write lock"
    assert not failure, failure
    try:
        yield
    finally:
        holder.join(60)
    assert not failure, failure


def event_count(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM program_events").fetchone()[0])


def test_derms_event_create_waits_for_the_servers_write_lock(
    derms_database: Path, sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command would point this process's logging at the runner's captured output.
    monkeypatch.setattr("derbridge.infra.logging.configure_logging", lambda *args, **kwargs: None)
    start = (utcnow() + timedelta(days=1)).replace(microsecond=0)
    command = [
        "--data-dir", str(sqlite_settings.data_dir), "derms", "event", "create", "--program", "SUMMER",
        "--start", start.isoformat(), "--end", (start + timedelta(hours=2)).isoformat(), "--kw", "5", "-q",
    ]  # fmt: skip
    with write_lock_held(derms_database):
        result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "database is locked" not in result.output
    assert event_count(derms_database) == 1


async def test_a_write_transaction_that_reads_first_waits_for_the_write_lock(
    derms_database: Path, sqlite_settings: Settings
) -> None:
    runtime = Runtime(sqlite_settings)
    engine = runtime.async_engine("derms")
    try:
        with write_lock_held(derms_database):
            # Reads are not held up by the writer (WAL): a read-only connection answers at once …
            async with engine.connect() as connection:
                assert await connection.scalar(select(func.count()).select_from(dm.programs)) == 1
            # … and a write transaction that reads, then writes, waits for the lock instead of failing.
            async with engine.begin() as connection:
                before = await connection.scalar(select(func.count()).select_from(dm.job_leases))
                await connection.execute(insert(dm.job_leases).values(name="written-beside-the-server"))
        async with engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(dm.job_leases)) == (before or 0) + 1
    finally:
        await runtime.aclose()
