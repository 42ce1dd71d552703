"""The DERMS event service under random sequences of operations (hypothesis stateful test, SQLite).

Rules create events, cancel them, move the business clock, run the lifecycle job and report outcomes, in
any order; after every step the invariants below must hold in the database:

- no illegal state: statuses only move SCHEDULED → ACTIVE → COMPLETED or SCHEDULED → CANCELLED, never back;
  an event is CANCELLED only before its start, ACTIVE only once its start has come, COMPLETED only at or
  after ``end_at + grace``;
- a cancelled event holds no RESERVED reservation;
- a COMPLETED event has exactly one outcome per device reserved at its start, and no event ever has an
  outcome for a device it does not hold;
- no device is held by two live events whose windows overlap;
- every change wrote its message: one ``event-reservation.v1`` per event, one ``event-cancellation.v1`` per
  cancelled event.

Each rule also checks the service's answer against the model: a cancellation succeeds exactly when the
event is SCHEDULED and the clock is before its start; a report succeeds exactly when the event has started
and is not cancelled and every device reported is held by it.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Coroutine
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.contracts.event_outcome import DeviceOutcome, Outcome
from derbridge.derms.adapters import tables as t
from derbridge.derms.api.schemas import EventCancel, EventIn
from derbridge.derms.domain.event import EventStatus, EventType
from derbridge.derms.services import events, outcomes
from derbridge.derms.services.event_messages import ReservationFiles
from derbridge.errors import Conflict, DomainError, Invalid
from derbridge.filestore import LocalDirectoryStore
from derbridge.infra.db import create_async_db_engine, create_sync_engine
from derbridge.migrations.runner import upgrade

pytestmark = pytest.mark.slow  # a Hypothesis state machine over the whole system: make test, not test-fast

T = TypeVar("T")

PROGRAM = "STATEFUL"
GRACE = timedelta(hours=1)
START = datetime(2027, 6, 1, 12, tzinfo=UTC)
DEVICES = [("ECOBEE", f"e-{i}", 50.0 + 7 * i) for i in range(6)]  # (head-end, nic, score); all distinct scores
ORDER = {EventStatus.SCHEDULED: 0, EventStatus.ACTIVE: 1, EventStatus.COMPLETED: 2}


def _seed_rows() -> dict[Any, list[dict[str, Any]]]:
    at = START - timedelta(days=30)
    return {
        t.programs: [
            {
                "program_code": PROGRAM,
                "name": PROGRAM,
                "status": "ACTIVE",
                "expected_shed_kw": 1.0,
                "outcome_grace_hours": GRACE.total_seconds() / 3600,
                "created_at": at,
                "updated_at": at,
            }
        ],
        t.devices: [
            {
                "device_id": i + 1,
                "head_end_system": hes,
                "nic_id": nic,
                "device_type": "THERMOSTAT",
                "manufacturer": "Acme",
                "model": "T1",
                "created_at": at,
            }
            for i, (hes, nic, _) in enumerate(DEVICES)
        ],
        t.device_availability: [
            {
                "device_id": i + 1,
                "program_code": PROGRAM,
                "enrollment_id": f"enr-{i}",
                "cis_account_id": "A-1",
                "cis_service_point_id": "SP-1",
                "availability": "AVAILABLE",
                "sequence": 1,
                "updated_at": at,
            }
            for i in range(len(DEVICES))
        ],
        t.score_snapshots: [
            {
                "file_id": "scores",
                "generated_at": at,
                "scoring_model_version": "1",
                "row_count": len(DEVICES),
                "unknown_devices": 0,
                "loaded_at": at,
                "is_current": True,
            }
        ],
        t.device_scores: [
            {
                "file_id": "scores",
                "program_code": PROGRAM,
                "head_end_system": hes,
                "nic_id": nic,
                "device_id": i + 1,
                "score": score,
                "eligible": True,
                "ineligibility_reason": None,
            }
            for i, (hes, nic, score) in enumerate(DEVICES)
        ],
    }


@dataclass
class Seen:
    """What the model remembers of an event."""

    start_at: datetime
    end_at: datetime
    reserved: frozenset[int]
    status: EventStatus = EventStatus.SCHEDULED
    history: list[EventStatus] = field(default_factory=lambda: [EventStatus.SCHEDULED])


class EventLifecycle(RuleBasedStateMachine):
    """The DERMS event service on a fresh SQLite database per example, driven with an explicit clock."""

    TEMPLATE: Path
    """A migrated, seeded DERMS database, copied for every example (set by the test)."""

    created = Bundle("events")

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="derbridge-stateful-"))
        database = self.directory / "derms.db"
        # The backup API copies a WAL database consistently (a file copy could miss the -wal file).
        with closing(sqlite3.connect(self.TEMPLATE)) as source, closing(sqlite3.connect(database)) as target:
            source.backup(target)
        self.loop = asyncio.new_event_loop()
        self.engine: AsyncEngine = create_async_db_engine(f"sqlite:///{database}")
        self.now = START
        self.seen: dict[str, Seen] = {}
        # Where a list too long for a message would go (these events reserve a handful of devices).
        self.files = ReservationFiles(lambda: LocalDirectoryStore(self.directory / "files"))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def refusal(self, coroutine: Coroutine[Any, Any, Any]) -> DomainError | None:
        """Run a service call; the refusal it raised, or None when it succeeded."""
        try:
            self.run(coroutine)
        except DomainError as refused:
            return refused
        return None

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # --- rules ------------------------------------------------------------------------------------------

    @rule(
        target=created,
        start_in=st.integers(min_value=1, max_value=3 * 60),
        minutes=st.integers(min_value=15, max_value=2 * 60),
        devices=st.integers(min_value=1, max_value=len(DEVICES)),
    )
    def create(self, start_in: int, minutes: int, devices: int) -> str:
        start = self.now + timedelta(minutes=start_in)
        request = EventIn(
            program_code=PROGRAM,
            event_type=EventType.ECONOMIC,
            start_at=start,
            end_at=start + timedelta(minutes=minutes),
            target_devices=devices,
        )
        event = self.run(events.create_event(self.engine, request, "derms-1", files=self.files, now=self.now))
        reserved = frozenset(self.run(self._reserved(event["event_id"])))
        assert len(reserved) == event["reserved_count"] <= devices
        self.seen[event["event_id"]] = Seen(request.start_at, request.end_at, reserved)
        return str(event["event_id"])

    @rule(event_id=created)
    def cancel(self, event_id: str) -> None:
        seen = self.seen[event_id]
        status = self.run(self._status(event_id))
        allowed = status is EventStatus.SCHEDULED and self.now < seen.start_at
        refused = self.refusal(
            events.cancel_event(self.engine, event_id, EventCancel(reason_text="test"), now=self.now)
        )
        if allowed:
            assert refused is None, f"a cancellation of a SCHEDULED event before its start was refused: {refused}"
        else:
            assert refused is not None, f"a {status} event was cancelled at {self.now} (start {seen.start_at})"
            assert isinstance(refused, Conflict)

    @rule(minutes=st.sampled_from([1, 15, 60, 150, 400]))
    def advance(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule()
    def run_lifecycle(self) -> None:
        self.run(events.advance_lifecycle(self.engine, self.now))
        # A second run at the same instant has nothing left to do.
        assert self.run(events.advance_lifecycle(self.engine, self.now)) == 0

    @rule(
        event_id=created,
        data=st.data(),
        kind=st.sampled_from(list(Outcome)),
        stranger=st.booleans(),
    )
    def report(self, event_id: str, data: st.DataObject, kind: Outcome, stranger: bool) -> None:
        seen = self.seen[event_id]
        held = sorted(seen.reserved if self.run(self._status(event_id)) is not EventStatus.CANCELLED else ())
        pool = sorted(set(range(1, len(DEVICES) + 1)) - set(held)) if stranger or not held else held
        if not pool:
            return
        chosen = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=len(pool), unique=True))
        reports = [
            DeviceOutcome(head_end_system=DEVICES[d - 1][0], nic_id=DEVICES[d - 1][1], outcome=kind) for d in chosen
        ]
        status = self.run(self._status(event_id))
        started = self.now >= seen.start_at
        accepted = status is not EventStatus.CANCELLED and started and set(chosen) <= seen.reserved
        refused = self.refusal(outcomes.record_outcomes(self.engine, event_id, reports, now=self.now))
        if accepted:
            assert refused is None, f"a valid report was refused: {refused}"
            assert self.run(self._outcome_devices(event_id)) >= set(chosen)
        else:
            assert refused is not None, f"an invalid report was accepted ({status}, started={started}, {chosen})"
            assert isinstance(refused, Conflict | Invalid)

    # --- invariants -------------------------------------------------------------------------------------

    @invariant()
    def statuses_move_forward_only(self) -> None:
        for event_id, seen in self.seen.items():
            status = self.run(self._status(event_id))
            if status is not seen.status:
                if status is EventStatus.CANCELLED:
                    assert seen.status is EventStatus.SCHEDULED, f"{seen.status} became CANCELLED"
                else:
                    assert seen.status is not EventStatus.CANCELLED, "a CANCELLED event changed status"
                    assert ORDER[status] > ORDER[seen.status], f"{seen.status} went back to {status}"
                seen.history.append(status)
                seen.status = status

    @invariant()
    def every_state_is_legal(self) -> None:
        rows = self.run(self._events())
        assert len(rows) == len(self.seen)
        for row in rows:
            status = EventStatus(row.status)
            held = self.run(self._reserved(row.event_id))
            found = self.run(self._outcome_devices(row.event_id))
            assert found <= set(held), "an outcome for a device the event does not hold"
            if status is EventStatus.CANCELLED:
                assert row.cancelled_at < row.start_at, "cancelled at or after its start"
                assert held == [], "a cancelled event still holds devices"
                assert found == set()
            else:
                assert frozenset(held) == self.seen[row.event_id].reserved, "reservations changed after creation"
                assert row.cancelled_at is None
            if status is EventStatus.ACTIVE:
                assert self.now >= row.start_at, "ACTIVE before its start"
                assert row.closed_at is None
            if status is EventStatus.COMPLETED:
                assert row.closed_at is not None
                assert row.closed_at >= row.end_at + GRACE, "COMPLETED before end + grace"
                assert found == set(held), "a COMPLETED event lacks an outcome for a device it held"
            if status is EventStatus.SCHEDULED:
                assert row.closed_at is None

    @invariant()
    def no_device_is_held_twice_at_once(self) -> None:
        live = [r for r in self.run(self._events()) if r.status in ("SCHEDULED", "ACTIVE")]
        for i, a in enumerate(live):
            for b in live[i + 1 :]:
                if a.start_at < b.end_at and b.start_at < a.end_at:
                    shared = set(self.run(self._reserved(a.event_id))) & set(self.run(self._reserved(b.event_id)))
                    assert not shared, f"devices {shared} held by two overlapping events"

    @invariant()
    def every_change_wrote_its_message(self) -> None:
        sent = self.run(self._outbox_counts())
        cancelled = sum(1 for row in self.run(self._events()) if row.status == EventStatus.CANCELLED.value)
        assert sent.get("event-reservation.v1", 0) == len(self.seen)
        assert sent.get("event-cancellation.v1", 0) == cancelled

    # --- reads ------------------------------------------------------------------------------------------

    async def _status(self, event_id: str) -> EventStatus:
        async with self.engine.connect() as connection:
            value = await connection.scalar(
                select(t.program_events.c.status).where(t.program_events.c.event_id == event_id)
            )
        return EventStatus(value)

    async def _events(self) -> list[Any]:
        async with self.engine.connect() as connection:
            return list((await connection.execute(select(t.program_events))).all())

    async def _reserved(self, event_id: str) -> list[int]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                select(t.reservations.c.device_id).where(
                    t.reservations.c.event_id == event_id, t.reservations.c.status == "RESERVED"
                )
            )
            return sorted(rows.scalars())

    async def _outcome_devices(self, event_id: str) -> set[int]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(t.outcomes.c.device_id).where(t.outcomes.c.event_id == event_id))
            return set(rows.scalars())

    async def _outbox_counts(self) -> dict[str, int]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(select(t.outbox.c.type, func.count()).group_by(t.outbox.c.type))
            return {row[0]: int(row[1]) for row in rows}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated DERMS database with the program, devices and a current score snapshot of this module."""
    path = tmp_path_factory.mktemp("stateful") / "template.db"
    url = f"sqlite:///{path}"
    upgrade("derms", url)
    engine = create_sync_engine(url)
    with engine.begin() as connection:
        for table, rows in _seed_rows().items():
            connection.execute(table.insert(), rows)
    engine.dispose()
    return path


def test_no_sequence_of_operations_reaches_an_illegal_event_state(template: Path) -> None:
    machine = type("BoundEventLifecycle", (EventLifecycle,), {"TEMPLATE": template})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
