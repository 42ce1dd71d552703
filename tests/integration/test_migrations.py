"""Every table is created by migrations, on SQLite and PostgreSQL alike, and matches the code's tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, event, inspect, select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.participation_summaries import rebuild_statements
from derbridge.assethub.adapters.score_parts import decode_part
from derbridge.derms.adapters import tables as dm
from derbridge.infra.db import UTCDateTime, create_sync_engine
from derbridge.metadata import metadata_of
from derbridge.migrations.runner import SYSTEMS, downgrade, upgrade
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


def _old_table(name: str, *columns: sa.Column[Any]) -> sa.TableClause:
    """A table as an old revision had it (the columns a test writes), not as the code describes it today."""
    return sa.table(name, *(sa.column(column.name, column.type) for column in columns))


def test_assethub_0004_and_0005_convert_existing_rows_as_the_application_reads_them(settings: Settings) -> None:
    """The two data migrations carry their own copies of the adapters' code (a migration imports no
    application code): 0004 summarises existing participation as today's rebuild does, 0005 turns existing
    device scores into parts that today's reader decodes, and its downgrade gives the rows back."""
    url = settings.database_url("assethub")
    upgrade("assethub", url, "assethub_0003")
    at = datetime(2027, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    devices = _old_table(
        "devices",
        sa.Column("device_id", sa.BigInteger()),
        *(sa.Column(name, sa.String()) for name in ("head_end_system", "nic_id", "device_type", "manufacturer")),
        *(sa.Column(name, sa.String()) for name in ("model", "serial_no")),
        sa.Column("created_at", UTCDateTime()),
    )
    events = _old_table(
        "program_events",
        *(sa.Column(name, sa.String()) for name in ("event_id", "derms_instance_id", "program_code", "event_type")),
        sa.Column("status", sa.String()),
        *(sa.Column(name, UTCDateTime()) for name in ("start_at", "end_at", "received_at")),
    )
    records = _old_table(
        "participation_records",
        *(sa.Column(name, sa.String()) for name in ("record_id", "event_id", "status", "outcome")),
        sa.Column("device_id", sa.BigInteger()),
        sa.Column("preemptive_opt_out", sa.Boolean()),
        *(sa.Column(name, UTCDateTime()) for name in ("reservation_start_at", "reservation_end_at")),
    )
    snapshots = _old_table(
        "score_snapshots",
        *(sa.Column(name, sa.String()) for name in ("file_id", "scoring_model_version", "sha256")),
        sa.Column("programs", sa.JSON()),
        *(sa.Column(name, sa.Integer()) for name in ("row_count", "eligible_count", "byte_size")),
        sa.Column("generated_at", UTCDateTime()),
    )
    scores = _old_table(
        "device_scores",
        *(sa.Column(name, sa.String()) for name in ("file_id", "program_code", "ineligibility_reason")),
        sa.Column("device_id", sa.BigInteger()),
        sa.Column("eligible", sa.Boolean()),
        *(sa.Column(name, sa.Float()) for name in ("score", "reliability", "connectivity", "fatigue")),
    )
    event_rows = [  # (event, program, start, status): two programs, one event cancelled, two at one start
        ("EV1", "P1", at, "COMPLETED"),
        ("EV2", "P1", at + timedelta(days=2, microseconds=7), "COMPLETED"),
        ("EV3", "P1", at + timedelta(days=2, microseconds=7), "SCHEDULED"),
        ("EV4", "P1", at + timedelta(days=5), "CANCELLED"),
        ("EV5", "P2", at + timedelta(days=1), "COMPLETED"),
    ]
    record_rows = [  # (event, device, status, outcome, opt-out)
        ("EV1", 1, "RESERVED", "SUCCESSFUL_PARTICIPATION", None),
        ("EV2", 1, "RESERVED", "IN_FLIGHT_OVERRIDE", True),
        ("EV3", 1, "RESERVED", None, None),
        ("EV4", 1, "RESERVED", "NON_RESPONSIVE", None),
        ("EV1", 2, "RESERVED", "ERROR", False),
        ("EV2", 2, "CANCELLED", "NON_RESPONSIVE", None),
        ("EV3", 2, "RESERVED", "CANCELLED", None),
        ("EV5", 2, "RESERVED", "NON_RESPONSIVE", None),
    ]
    score_rows = [
        {"file_id": "F1", "program_code": code, "device_id": device, "score": device / 10, "eligible": device != 2}
        | {"ineligibility_reason": None if device != 2 else "OPTED_OUT", "reliability": 0.5}
        | {"connectivity": 1.0, "fatigue": 0.25}
        for code, device in (("P2", 1), ("P1", 2), ("P1", 1), ("P2", 2))
    ]
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                devices.insert(),
                [
                    {"device_id": device, "head_end_system": "ECOBEE", "nic_id": f"NIC{device}"}
                    | {"device_type": "THERMOSTAT", "manufacturer": "M", "model": "X", "serial_no": f"S{device}"}
                    | {"created_at": at}
                    for device in (1, 2)
                ],
            )
            connection.execute(
                events.insert(),
                [
                    {"event_id": event, "derms_instance_id": "D", "program_code": code, "event_type": "LOAD_SHED"}
                    | {"status": status, "start_at": start, "end_at": start + timedelta(hours=2), "received_at": at}
                    for event, code, start, status in event_rows
                ],
            )
            connection.execute(
                records.insert(),
                [
                    {"record_id": f"{event}-{device}", "event_id": event, "device_id": device, "status": status}
                    | {"outcome": outcome, "preemptive_opt_out": opt_out}
                    | {"reservation_start_at": at, "reservation_end_at": at + timedelta(hours=2)}
                    for event, device, status, outcome, opt_out in record_rows
                ],
            )
            connection.execute(
                snapshots.insert(),
                {"file_id": "F1", "scoring_model_version": "v1", "sha256": "0" * 64, "programs": ["P1", "P2"]}
                | {"row_count": 4, "eligible_count": 2, "byte_size": 1, "generated_at": at},
            )
            connection.execute(scores.insert(), score_rows)

        upgrade("assethub", url, "assethub_0004")
        summaries = ah.participation_summaries
        order = (summaries.c.device_id, summaries.c.program_code)
        with engine.begin() as connection:
            migrated = connection.execute(select(summaries).order_by(*order)).all()
            for statement in rebuild_statements(connection.dialect.name):
                connection.execute(statement)
            rebuilt = connection.execute(select(summaries).order_by(*order)).all()
        assert len(migrated) == 3  # devices 1 and 2 in P1, device 2 in P2
        assert migrated == rebuilt

        upgrade("assethub", url, "assethub_0005")
        with engine.connect() as connection:
            parts = connection.execute(
                select(ah.score_parts.c.program_code, ah.score_parts.c.data).order_by(ah.score_parts.c.program_code)
            ).all()
        decoded = [
            {"file_id": "F1", "program_code": code, **row}
            for code, data in parts
            for row in decode_part(data).to_pylist()
        ]
        by_key = sorted(score_rows, key=lambda row: (row["program_code"], row["device_id"]))
        assert decoded == by_key

        downgrade("assethub", url, "assethub_0004")
        with engine.connect() as connection:
            back = [dict(row._mapping) for row in connection.execute(select(scores))]
        assert sorted(back, key=lambda row: (row["program_code"], row["device_id"])) == by_key
    finally:
        engine.dispose()
