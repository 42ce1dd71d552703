"""F4 reads each device's history from ``participation_summaries``, kept by F5, F6 and F7 in their own
transactions. Held here, on SQLite and PostgreSQL: scoring from the summaries gives exactly the values
scoring from ``participation_records`` gives (bit for bit, every component and reason), on random histories;
and the summaries stay what a rebuild from the records gives through reservations, updates with releases and
a moved start, outcomes out of order, corrections, a cancellation and CANCELLED outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.assethub.adapters import participation_summaries as summaries_module
from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.participation_summaries import rebuild_summaries, refresh_summaries
from derbridge.assethub.adapters.score_reads import HistorySource, read_scoring_data
from derbridge.assethub.domain.scoring import ScoringResult, score_devices
from derbridge.assethub.handlers import events as handlers
from derbridge.contracts import event_cancellation, event_outcome, event_reservation
from derbridge.contracts.registry import new_envelope
from derbridge.filestore import FileStore
from derbridge.infra.clock import SimulatedClock
from derbridge.runtime import Runtime

NOW = datetime(2027, 7, 15, 12, tzinfo=UTC)
PROGRAMS = ("COOL", "HEAT")
OUTCOMES = [*(o.value for o in event_outcome.Outcome), None, "SOMETHING_ELSE"]
STATUSES = ["RESERVED", "RELEASED", "CANCELLED", "COMPLETED"]
SP, IO, NR, ER, CN = "SUCCESSFUL_PARTICIPATION", "IN_FLIGHT_OVERRIDE", "NON_RESPONSIVE", "ERROR", "CANCELLED"


@pytest.fixture
async def engine(runtime: Runtime) -> AsyncIterator[AsyncEngine]:
    """Asset Hub's engine on migrated, empty databases; disposed afterwards."""
    engine = runtime.async_engine("assethub")
    yield engine
    await engine.dispose()


async def create_programs(connection: AsyncConnection) -> None:
    await connection.execute(
        insert(ah.programs),
        [
            {
                "program_code": code,
                "name": code,
                "status": "ACTIVE",
                "eligible_device_types": [],
                "excluded_program_codes": [],
                # HEAT differs in every constant the history feeds, so a history read for the wrong
                # program would show.
                "rules": {}
                if code == "COOL"
                else {
                    "reliability_half_life_events": 2.5,
                    "fatigue_window_days": 3,
                    "chronic_opt_out_window": 3,
                    "chronic_opt_out_count": 2,
                    "non_responsive_streak": 2,
                },
                "created_at": NOW,
                "updated_at": NOW,
            }
            for code in PROGRAMS
        ],
    )


async def add_devices(connection: AsyncConnection, count: int, rng: np.random.Generator) -> None:
    await connection.execute(
        insert(ah.devices),
        [
            {
                "device_id": i,
                "head_end_system": "ECOBEE",
                "nic_id": f"N-{i}",
                "device_type": "THERMOSTAT",
                "manufacturer": "Acme",
                "model": "T1",
                "serial_no": f"S{i}",
                "created_at": NOW,
            }
            for i in range(1, count + 1)
        ],
    )
    enrollments, members, checks = [], [], []
    for i in range(1, count + 1):
        for code in PROGRAMS:
            if rng.random() < 0.3 and code == "HEAT":
                continue
            enrollment_id = f"e-{code}-{i}"
            enrollments.append(
                {
                    "enrollment_id": enrollment_id,
                    "head_end_system": "ECOBEE",
                    "request_id": enrollment_id,
                    "program_code": code,
                    "cis_person_id": "P",
                    "cis_account_id": "A",
                    "cis_premise_id": "PR",
                    "cis_service_point_id": "SP",
                    "state": "ACTIVE",
                    "rejections": [],
                    "requested_at": NOW,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
            )
            members.append({"enrollment_id": enrollment_id, "device_id": i, "sequence": 1, "added_at": NOW})
        if rng.random() < 0.9:
            seen = NOW - timedelta(hours=float(rng.uniform(0, 200)))
            checks.append(
                {
                    "check_id": f"c-{i}",
                    "device_id": i,
                    "reason": "SETUP",
                    "requested_by": "test",
                    "status": "ANSWERED",
                    "requested_at": seen,
                    "timeout_at": seen,
                    "answered_at": seen,
                    "last_communication_at": seen,
                    "late_answer": False,
                }
            )
    await connection.execute(insert(ah.enrollments), enrollments)
    await connection.execute(insert(ah.enrollment_devices), members)
    await connection.execute(insert(ah.device_status_checks), checks)


async def scores(engine: AsyncEngine, history: HistorySource) -> ScoringResult:
    async with engine.connect() as connection:
        data = await read_scoring_data(connection, history=history)
    assert data is not None
    rows, inputs = data
    return score_devices(inputs, rows.rules, NOW)


async def assert_same_scores(engine: AsyncEngine) -> ScoringResult:
    from_summaries = await scores(engine, "summaries")
    from_records = await scores(engine, "records")
    for name in ("score", "eligible", "reason", "reliability", "connectivity", "fatigue"):
        summary_values, record_values = getattr(from_summaries, name), getattr(from_records, name)
        # Bit for bit: the same floats, not merely close ones.
        assert summary_values.tobytes() == record_values.tobytes(), name
    return from_summaries


async def summaries(engine: AsyncEngine) -> set[tuple[Any, ...]]:
    async with engine.connect() as connection:
        return {tuple(row) for row in await connection.execute(select(ah.participation_summaries))}


async def assert_summaries_match_records(engine: AsyncEngine) -> set[tuple[Any, ...]]:
    """The summaries as kept equal the summaries rebuilt from the records (the rebuild is rolled back)."""
    kept = await summaries(engine)
    async with engine.connect() as connection, connection.begin() as transaction:
        await rebuild_summaries(connection)
        rebuilt = {tuple(row) for row in await connection.execute(select(ah.participation_summaries))}
        await transaction.rollback()
    assert kept == rebuilt
    return kept


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_scores_from_summaries_equal_scores_from_records(engine: AsyncEngine, seed: int) -> None:
    rng = np.random.default_rng(seed)
    devices = 120
    async with engine.begin() as connection:
        await create_programs(connection)
        await add_devices(connection, devices, rng)
        # Events in both programs, some in the future, some cancelled, some starting at the same moment
        # (the event id breaks the tie), inside and outside the fatigue windows.
        starts = [NOW - timedelta(hours=float(h)) for h in rng.choice([-30, -2, 1, 20, 50, 80, 100, 200, 400], 18)]
        starts[3] = starts[4]
        events = [
            {
                "event_id": f"ev-{k:02d}",
                "derms_instance_id": "derms-1",
                "program_code": PROGRAMS[k % 2],
                "event_type": "ECONOMIC",
                "start_at": start,
                "end_at": start + timedelta(hours=2),
                "status": "CANCELLED" if rng.random() < 0.15 else "COMPLETED",
                "received_at": start,
            }
            for k, start in enumerate(starts)
        ]
        await connection.execute(insert(ah.program_events), events)
        records = [
            {
                "record_id": f"r-{event['event_id']}-{device}",
                "event_id": event["event_id"],
                "device_id": device,
                "status": STATUSES[int(rng.choice(4, p=[0.5, 0.1, 0.1, 0.3]))],
                "reservation_start_at": event["start_at"],
                "reservation_end_at": event["end_at"],
                "outcome": OUTCOMES[int(rng.integers(len(OUTCOMES)))],
                "preemptive_opt_out": [None, False, True][int(rng.choice(3, p=[0.2, 0.6, 0.2]))],
            }
            for event in events
            for device in range(1, devices + 1)
            if rng.random() < 0.6
        ]
        await connection.execute(insert(ah.participation_records), records)
        await rebuild_summaries(connection)
    result = await assert_same_scores(engine)
    # The histories drove the scores apart: every reason and a spread of fatigue levels occur.
    assert len(set(result.reason.tolist())) >= 3
    assert len(set(result.fatigue.tolist())) >= 3

    # Refreshing some devices from their records changes nothing: the rebuild and the refresh agree.
    before = await summaries(engine)
    async with engine.begin() as connection:
        await refresh_summaries(connection, range(1, devices + 1, 3))
    assert await summaries(engine) == before


# --- kept through the flows' handlers -------------------------------------------------------------------


def reserved(
    event_id: str,
    start: datetime,
    devices: list[int],
    *,
    update: bool = False,
    status: str = "SCHEDULED",
    program: str = "COOL",
) -> event_reservation.EventReservation:
    return event_reservation.EventReservation(
        event_id=event_id,
        derms_instance_id="derms-1",
        program_code=program,
        event_type=event_reservation.EventType.ECONOMIC,
        start_at=start,
        end_at=start + timedelta(hours=2),
        status=event_reservation.EventStatus(status),
        devices=[
            event_reservation.ReservedDevice(
                record_id=f"r-{event_id}-{d}",
                head_end_system="ECOBEE",
                nic_id=f"N-{d}",
                reservation_start_at=start,
                reservation_end_at=start + timedelta(hours=2),
            )
            for d in devices
        ],
        update=update,
    )


def outcomes(event_id: str, *pairs: tuple[int, str, bool]) -> event_outcome.EventOutcomeBatch:
    return event_outcome.EventOutcomeBatch(
        event_id=event_id,
        outcomes=[
            event_outcome.DeviceOutcome(
                head_end_system="ECOBEE", nic_id=f"N-{d}", outcome=event_outcome.Outcome(o), preemptive_opt_out=opt
            )
            for d, o, opt in pairs
        ],
    )


def _no_file_store() -> FileStore:
    raise AssertionError("the reservation lists here travel inline")


class Applier:
    """Applies messages through Asset Hub's handlers, each in its own transaction, as the inbox does."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.occurred = NOW - timedelta(days=30)

    async def __call__(self, message_type: str, payload: Any) -> dict[str, Any]:
        self.occurred += timedelta(minutes=1)
        envelope = new_envelope(message_type, payload, business_key="test", occurred_at=self.occurred)
        clock = SimulatedClock(self.occurred)
        handler = {
            event_reservation.TYPE: partial(handlers.apply_reservation, clock=clock, files=_no_file_store),
            event_cancellation.TYPE: partial(handlers.apply_cancellation, clock=clock),
            event_outcome.TYPE: partial(handlers.apply_outcomes, clock=clock),
        }[message_type]
        async with self.engine.begin() as connection:
            answer: dict[str, Any] = await handler(connection, envelope, payload)  # type: ignore[operator]
        await assert_summaries_match_records(self.engine)
        await assert_same_scores(self.engine)
        return answer


def history_of(kept: set[tuple[Any, ...]], device: int, program: str = "COOL") -> str:
    return next((classes for d, p, classes, _ in kept if d == device and p == program), "")


async def test_summaries_follow_reservations_outcomes_corrections_and_cancellations(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await create_programs(connection)
        await add_devices(connection, 6, np.random.default_rng(0))
    apply = Applier(engine)
    day = timedelta(days=1)
    older, newer = NOW - 10 * day, NOW - 2 * day

    await apply(event_reservation.TYPE, reserved("ev-new", newer, [1, 2, 3, 4]))
    assert history_of(await summaries(engine), 1) == "0"  # reserved, no outcome yet: PENDING
    await apply(event_outcome.TYPE, outcomes("ev-new", (1, SP, False), (2, NR, False), (3, IO, False)))
    # The older event's reservation and outcomes arrive later: it still goes behind the newer one.
    await apply(event_reservation.TYPE, reserved("ev-old", older, [1, 2, 3, 5]))
    await apply(event_outcome.TYPE, outcomes("ev-old", (1, NR, False), (2, NR, True), (5, ER, False)))
    kept = await summaries(engine)
    assert [history_of(kept, d) for d in (1, 2, 3, 4, 5)] == ["15", "53", "20", "0", "4"]

    # A correction replaces the class; an outcome CANCELLED takes the event out of the history.
    answer = await apply(event_outcome.TYPE, outcomes("ev-new", (2, SP, False), (3, CN, False)))
    assert answer["corrected"] == 2
    kept = await summaries(engine)
    assert [history_of(kept, d) for d in (2, 3)] == ["13", "0"]

    # An update moves the old event after the new one and releases device 5 (a release keeps the call).
    await apply(event_reservation.TYPE, reserved("ev-old", NOW - day, [1, 2, 3], update=True))
    kept = await summaries(engine)
    assert [history_of(kept, d) for d in (1, 2, 5)] == ["51", "31", "4"]

    # A third event in the other program, then its cancellation: HEAT histories appear, then go.
    await apply(event_reservation.TYPE, reserved("ev-heat", NOW - 3 * day, [1, 6], program="HEAT"))
    assert history_of(await summaries(engine), 6, "HEAT") == "0"
    await apply(
        event_cancellation.TYPE,
        event_cancellation.EventCancellation(
            event_id="ev-heat", derms_instance_id="derms-1", cancelled_at=NOW - 4 * day, reason_text="test"
        ),
    )
    kept = await summaries(engine)
    assert history_of(kept, 6, "HEAT") == ""
    assert history_of(kept, 1) == "51"
    # An update that says the event is cancelled empties it from every history too.
    await apply(event_reservation.TYPE, reserved("ev-new", newer, [1, 2, 3, 4], update=True, status="CANCELLED"))
    kept = await summaries(engine)
    assert [history_of(kept, d) for d in (1, 2, 4)] == ["5", "3", ""]


async def test_event_starts_are_kept_to_the_microsecond(engine: AsyncEngine) -> None:
    # SQLite rounds times to the millisecond in its date functions: a start at …:59.9997 must not become the
    # next second (it did, by a whole second, before the seconds were taken from the text alone).
    start = datetime(2027, 7, 14, 11, 59, 59, 999_700, tzinfo=UTC)
    async with engine.begin() as connection:
        await create_programs(connection)
        await add_devices(connection, 1, np.random.default_rng(0))
        await connection.execute(
            insert(ah.program_events),
            [
                {
                    "event_id": "ev-edge",
                    "derms_instance_id": "derms-1",
                    "program_code": "COOL",
                    "event_type": "ECONOMIC",
                    "start_at": start,
                    "end_at": start + timedelta(hours=1),
                    "status": "COMPLETED",
                    "received_at": start,
                }
            ],
        )
        await connection.execute(
            insert(ah.participation_records),
            [
                {
                    "record_id": "r-edge",
                    "event_id": "ev-edge",
                    "device_id": 1,
                    "status": "COMPLETED",
                    "reservation_start_at": start,
                    "reservation_end_at": start,
                    "outcome": SP,
                    "preemptive_opt_out": False,
                }
            ],
        )
        await rebuild_summaries(connection)
    exact = int((start - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    assert {(d, p, c, s) for d, p, c, s in await summaries(engine)} == {(1, "COOL", "1", str(exact))}
    await assert_same_scores(engine)


async def test_in_place_patches_equal_a_rebuild_on_ties_and_out_of_order_events(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every branch of the in-place patches (``add_event_entries``, ``set_event_classes``) against the rebuild
    (the Applier compares after each message): a new event that goes first, one that goes behind, one that
    starts at the same moment as an event already held (the summary keeps no event ids: recomputed), outcomes
    on a first entry, on an entry behind a newer one, on an entry tied at its start, and CANCELLED outcomes
    coming and going."""
    async with engine.begin() as connection:
        await create_programs(connection)
        await add_devices(connection, 8, np.random.default_rng(1))
    apply = Applier(engine)
    day = timedelta(days=1)
    t1, t2, t3 = NOW - 9 * day, NOW - 6 * day, NOW - 3 * day
    # Which devices the patches hand over to a recompute: the others were patched in place.
    recomputed: list[set[int]] = []
    refresh = summaries_module.refresh_summaries

    async def recording(connection: AsyncConnection, device_ids: Any) -> None:
        ids = set(device_ids)
        recomputed.append(ids)
        await refresh(connection, ids)

    monkeypatch.setattr(summaries_module, "refresh_summaries", recording)

    def handed_over() -> set[int]:
        ids = set().union(*recomputed)
        recomputed.clear()
        return ids

    await apply(event_reservation.TYPE, reserved("ev-m", t2, [1, 2, 3, 4, 5]))  # new rows
    await apply(event_reservation.TYPE, reserved("ev-z", t3, [1, 2, 6]))  # first for 1 and 2, new row for 6
    assert handed_over() == set()
    await apply(event_reservation.TYPE, reserved("ev-a", t1, [3, 4, 7]))  # behind ev-m: 3, 4 recomputed
    assert handed_over() == {3, 4}
    # Two events at the same start as ev-m, one with a smaller id and one with a larger: recomputed.
    await apply(event_reservation.TYPE, reserved("ev-b", t2, [4, 5]))
    await apply(event_reservation.TYPE, reserved("ev-y", t2, [5, 8]))
    assert handed_over() == {4, 5}
    kept = await summaries(engine)
    assert [history_of(kept, d) for d in (1, 3, 5, 8)] == ["00", "00", "000", "0"]

    # Outcomes: first entry (1, 2 on ev-z; 6 alone), behind a newer event (1 on ev-m), tied (5 on ev-m).
    await apply(event_outcome.TYPE, outcomes("ev-z", (1, SP, False), (2, IO, False), (6, NR, False)))
    assert handed_over() == set()
    await apply(event_outcome.TYPE, outcomes("ev-m", (1, ER, False), (3, SP, True), (5, SP, False)))
    assert handed_over() == {1, 5}  # 1: behind ev-z; 5: tied with ev-b and ev-y (3 is first: in place)
    await apply(event_outcome.TYPE, outcomes("ev-y", (5, NR, False), (8, SP, False)))
    assert handed_over() == {5}
    kept = await summaries(engine)
    assert [history_of(kept, d) for d in (1, 2, 3, 6, 8)] == ["14", "20", "30", "5", "1"]
    # A correction in place, then to CANCELLED (the entry goes), then back (it returns).
    await apply(event_outcome.TYPE, outcomes("ev-z", (6, SP, False)))
    await apply(event_outcome.TYPE, outcomes("ev-z", (6, CN, False), (2, CN, False)))
    assert [history_of(await summaries(engine), d) for d in (2, 6)] == ["0", ""]
    await apply(event_outcome.TYPE, outcomes("ev-z", (6, IO, False), (2, NR, False)))
    assert [history_of(await summaries(engine), d) for d in (2, 6)] == ["50", "2"]
