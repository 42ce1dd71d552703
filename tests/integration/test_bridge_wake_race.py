"""A park that races its prerequisite's delivery is due at once, not after its whole park backoff.

Two batches in parallel: the program's sync in one, an enrollment sync that needs the program in the other.
The DERMS parks the enrollment sync (its program has not landed yet); the program sync is delivered and
settled, and its wake finds nothing parked — the park is settled a moment later. Settling the park sees
that its condition was announced since its attempt began and makes it due now. A prerequisite delivered
before the attempt began does not: then the target really lacks something else, and the park backs off.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from derbridge.bridge.tables import tracked_messages as t
from derbridge.bridge.tracking import MessageState, Settlement, Tracker
from derbridge.infra.db import utcnow
from derbridge.migrations.runner import upgrade
from derbridge.runtime import Runtime
from derbridge.settings import Settings
from tests.support.messages import enrollment_sync, program_sync
from tests.support.services import PostgresServer

PARK_BACKOFF = timedelta(seconds=60)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def tracker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Tracker]:
    settings = Settings(data_dir=tmp_path / "var", api_token="test-token")
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        settings = Settings.model_validate(
            {"data_dir": tmp_path / "var", "api_token": "test-token"}
            | {"bridge": {"database_url": server.create_database("bridge")}}
        )
    upgrade("bridge", settings.database_url("bridge"))
    runtime = Runtime(settings)
    yield Tracker(runtime.async_engine("bridge"))
    await runtime.aclose()


def delivered() -> Settlement:
    return Settlement(MessageState.DELIVERED, "delivered", 200, None, None, 5)


def parked(wake_on: str) -> Settlement:
    return Settlement(
        MessageState.PARKED,
        "park",
        409,
        "the program is unknown",
        {"type": "missing-prerequisite", "wake_on": wake_on},
        5,
        next_attempt_at=utcnow() + PARK_BACKOFF,
        wake_on=wake_on,
    )


async def next_attempt(tracker: Tracker, message_id: str) -> tuple[str, object]:
    async with tracker.engine.connect() as connection:
        row = (
            await connection.execute(select(t.c.state, t.c.next_attempt_at).where(t.c.message_id == message_id))
        ).one()
    return row.state, row.next_attempt_at


async def test_a_park_settled_after_its_prerequisite_was_delivered_during_the_attempt_is_due_at_once(
    tracker: Tracker,
) -> None:
    program, waiting = program_sync("RACE"), enrollment_sync(1)
    await tracker.see([program, waiting])
    attempt_began = utcnow()
    # The other batch: the program sync delivered and settled; its wake finds nothing parked yet.
    await tracker.settle([(program.message_id, 1, delivered())])
    assert await tracker.wake({"program:RACE"}) == 0
    # This batch's park, settled afterwards.
    await tracker.settle([(waiting.message_id, 1, parked("program:RACE"))], attempted_at=attempt_began)
    state, when = await next_attempt(tracker, waiting.message_id)
    assert state == MessageState.PARKED.value
    assert when is not None
    assert when <= utcnow()  # due now, not in 60 s
    claimed = await tracker.claim_due(utcnow(), 10, utcnow() - timedelta(minutes=5))
    assert [message_id for message_id, _, _ in claimed] == [waiting.message_id]


async def test_a_park_whose_prerequisite_was_delivered_before_the_attempt_keeps_its_backoff(
    tracker: Tracker,
) -> None:
    program, waiting = program_sync("OLD"), enrollment_sync(2)
    await tracker.see([program, waiting])
    await tracker.settle([(program.message_id, 1, delivered())])
    attempt_began = utcnow() + timedelta(milliseconds=1)  # the attempt began after the delivery
    await tracker.settle([(waiting.message_id, 1, parked("program:OLD"))], attempted_at=attempt_began)
    state, when = await next_attempt(tracker, waiting.message_id)
    assert state == MessageState.PARKED.value
    assert when is not None
    assert when > utcnow() + PARK_BACKOFF / 2
    assert await tracker.claim_due(utcnow(), 10, utcnow() - timedelta(minutes=5)) == []


async def test_a_park_for_another_condition_or_an_undelivered_prerequisite_keeps_its_backoff(
    tracker: Tracker,
) -> None:
    other, pending, waiting = program_sync("OTHER"), program_sync("LATER"), enrollment_sync(3)
    await tracker.see([other, pending, waiting])
    attempt_began = utcnow()
    await tracker.settle([(other.message_id, 1, delivered())])  # another program's sync
    await tracker.settle([(waiting.message_id, 1, parked("program:LATER"))], attempted_at=attempt_began)
    _, when = await next_attempt(tracker, waiting.message_id)
    assert when is not None
    assert when > utcnow() + PARK_BACKOFF / 2
