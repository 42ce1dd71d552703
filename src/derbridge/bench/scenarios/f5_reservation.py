"""F5: an event reserving its target of the scored candidates, recorded in Asset Hub (the season's
world)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from derbridge.assethub.adapters import tables as ah
from derbridge.bench.core import (
    Result,
    bare_insert_baseline,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
)
from derbridge.bench.scenarios.common import (
    SETTLE_TIMEOUT,
    BenchFailure,
    count_rows,
    expect_ok,
    make_result,
    scenario_stopwatch,
)
from derbridge.bench.world import PROGRAM
from derbridge.embedded import EmbeddedSystem
from derbridge.settings import Settings


async def _create_event(system: EmbeddedSystem, target: int) -> dict[str, Any]:
    start_at = system.clock.now() + timedelta(hours=2)
    return expect_ok(
        await system.client.post(
            "/derms/v1/events",
            json={
                "program_code": PROGRAM,
                "event_type": "ECONOMIC",
                "start_at": start_at.isoformat(),
                "end_at": (start_at + timedelta(hours=3)).isoformat(),
                "target_devices": target,
                "created_by": "bench",
            },
        ),
        "creating the event",
        201,
    )


async def reserve(system: EmbeddedSystem, target: int) -> dict[str, Any]:
    event = await _create_event(system, target)
    await system.settle(timeout=SETTLE_TIMEOUT)
    recorded = await count_rows(
        system, "assethub", ah.participation_records, ah.participation_records.c.event_id == event["event_id"]
    )
    if event["reserved_count"] != target or recorded != target:
        raise BenchFailure(f"asked {target:,}: reserved {event['reserved_count']:,}, Asset Hub recorded {recorded:,}")
    return event


async def f5_reservation(
    settings: Settings, system: EmbeddedSystem, candidates: int, target: int, quick: bool
) -> tuple[Result, dict[str, Any]]:
    """F5, timed: an event reserving ``target`` of the ``candidates``: ranked, stored, delivered, recorded.
    Returns the result and the event (F7 reports on it)."""
    progress(f"F5: reserving {target:,} of {candidates:,}")
    reset_peak_rss()
    with scenario_stopwatch(settings, "f5-reservation") as watch:
        event = await reserve(system, target)
    peak = peak_rss_mb()
    result = make_result(
        settings,
        "f5-reservation",
        sizes={"candidates": candidates, "reserved": target},
        seconds=watch.seconds,
        rate=target / watch.seconds,
        unit="reservations",
        target="≤ 3 s",
        baseline=bare_insert_baseline(settings, {"derms": ["reservations"], "assethub": ["participation_records"]}),
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"candidate_count": event["candidate_count"]},
    )
    return result, event
