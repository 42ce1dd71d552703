"""Every table is created by migrations, on SQLite and PostgreSQL alike, and matches the code's tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, select

from derbridge.derms.adapters import tables as dm
from derbridge.infra.db import create_sync_engine
from derbridge.migrations.runner import SYSTEMS, downgrade, metadata_of, upgrade
from derbridge.settings import Settings


def _tables(url: str) -> set[str]:
    """The tables the database at ``url`` holds now."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_tables_the_code_describes(settings: Settings) -> None:
    for system in SYSTEMS:
        url = settings.database_url(system)
        upgrade(system, url)
        upgrade(system, url)  # idempotent: a second run is a no-op, not an error
        engine = create_sync_engine(url)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection, opts={"compare_type": True})
                differences = compare_metadata(context, metadata_of(system))
                tables = set(inspect(connection).get_table_names())
        finally:
            engine.dispose()
        assert differences == [], f"{system}: migrations and tables.py disagree: {differences}"
        assert set(metadata_of(system).tables) <= tables


def test_migrations_go_down_to_an_empty_database(settings: Settings) -> None:
    for system in SYSTEMS:
        url = settings.database_url(system)
        upgrade(system, url)
        downgrade(system, url)
        assert _tables(url) - {"alembic_version"} == set()


class _Killed(Exception):
    """Stands for the process dying at that statement."""


def test_an_upgrade_cut_off_half_way_leaves_the_database_as_it_found_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every process migrates as it starts; the crash test SIGKILLs processes while they start. An upgrade
    # that stops after some of its DDL must leave nothing behind, so that the next start simply migrates.
    from derbridge.migrations import environment

    made = environment.create_sync_engine

    def dying_after_three_tables(url: str) -> Engine:
        engine = made(url)
        created = 0

        @event.listens_for(engine, "before_cursor_execute")
        def count(*args: object) -> None:
            nonlocal created
            if str(args[2]).lstrip().upper().startswith("CREATE TABLE"):
                created += 1
                if created > 3:
                    raise _Killed

        return engine

    url = settings.database_url("derms")
    monkeypatch.setattr(environment, "create_sync_engine", dying_after_three_tables)
    with pytest.raises(_Killed):
        upgrade("derms", url)
    assert _tables(url) - {"alembic_version"} == set()
    monkeypatch.undo()
    upgrade("derms", url)  # the next start migrates as if nothing had happened
    assert set(metadata_of("derms").tables) <= _tables(url)


def test_derms_0007_repairs_requests_an_overtaken_answer_left_pending(settings: Settings) -> None:
    """Issue 13, defect 2: a sync applied before its answer left the request PENDING. The migration records
    each enrollment's newest applied sync in ``enrollment_states`` and gives the request that state."""
    url = settings.database_url("derms")
    upgrade("derms", url, "derms_0006")
    engine = create_sync_engine(url)
    at = datetime(2027, 6, 1, 12, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            connection.execute(
                dm.enrollment_requests.insert(),
                [
                    {
                        "head_end_system": "ECOBEE",
                        "request_id": request_id,
                        "message_id": f"M-{request_id}",
                        "request": {},
                        "received_at": at,
                        "answer": "ACCEPTED",
                        "enrollment_id": f"E-{request_id}",
                        "state": "PENDING",
                        "rejections": [],
                        "answered_at": at,
                        "updated_at": at,
                    }
                    for request_id in ("stuck", "unenrolled", "waiting")
                ],
            )
            connection.execute(
                dm.enrollment_sync_log.insert(),
                [
                    {
                        "message_id": f"S{n}",
                        "enrollment_id": enrollment_id,
                        "sequence": sequence,
                        "change": change,
                        "result": result,
                        "detail": "",
                        "at": at,
                    }
                    for n, (enrollment_id, sequence, change, result) in enumerate(
                        [
                            ("E-stuck", 1, "ENROLLED", "APPLIED"),
                            ("E-unenrolled", 2, "UNENROLLED", "APPLIED"),
                            ("E-unenrolled", 1, "ENROLLED", "STALE"),
                        ]
                    )
                ],
            )
        upgrade("derms", url)
        with engine.connect() as connection:
            r = dm.enrollment_requests
            requests = {row.request_id: row.state for row in connection.execute(select(r.c.request_id, r.c.state))}
            states = {r.enrollment_id: (r.state, r.sequence) for r in connection.execute(select(dm.enrollment_states))}
    finally:
        engine.dispose()
    assert requests == {"stuck": "ACTIVE", "unenrolled": "UNENROLLED", "waiting": "PENDING"}
    assert states == {
        "E-stuck": ("ACTIVE", 1),
        "E-unenrolled": ("UNENROLLED", 2),
        "E-waiting": ("PENDING", 0),
    }
