"""F1 single: sustained single enrollment requests through the edge (32 in flight) until ACTIVE."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from derbridge.bench.core import (
    Baseline,
    Result,
    Stopwatch,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
    scaled,
)
from derbridge.bench.scenarios.common import (
    CONCURRENCY,
    SETTLE_TIMEOUT,
    embedded_system,
    expect_ok,
    make_result,
    scenario_stopwatch,
    trivial_app,
)
from derbridge.bench.scenarios.enrollment_world import EnrollmentGateway, enrollment_world, f1_details, until_active
from derbridge.settings import Settings

F1_BUDGET_SECONDS = 90.0
"""How long F1 single may run before it reports what it reached (the suite must fit in 15 minutes)."""


async def _trivial_rate(count: int, body: dict[str, Any]) -> Baseline:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=trivial_app()), base_url="http://derbridge.local"
    ) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                expect_ok(await client.post("/trivial", json=body), "trivial endpoint")

        with Stopwatch() as watch:
            await asyncio.gather(*(one() for _ in range(count)))
    return Baseline(
        what=f"a trivial FastAPI endpoint, same in-process server transport, {CONCURRENCY} in flight",
        seconds=watch.seconds,
        rate=count / watch.seconds,
    )


async def f1_single(settings: Settings, workdir: Path, quick: bool) -> Result:
    """Sustained single enrollment requests (``POST /resources`` on the edge, 32 in flight) until Asset Hub
    has every accepted one ACTIVE, while the bridge and the jobs run."""
    requests = scaled(2_000, quick)
    async with embedded_system(settings) as system:
        world = await enrollment_world(system, workdir, requests)
        gateway: EnrollmentGateway = world.gateway
        gate = asyncio.Semaphore(CONCURRENCY)
        sending = True

        async def one(head_end: str, resource: dict[str, Any]) -> None:
            async with gate:
                await gateway.send_one(head_end, resource)

        async def pump() -> None:
            while sending:
                await system.settle(jobs=True, timeout=SETTLE_TIMEOUT)
                await asyncio.sleep(0.005)

        progress(f"F1 single: {len(world.resources):,} requests through the edge")
        reset_peak_rss()
        started = time.monotonic()
        with scenario_stopwatch(settings, "f1-single") as watch:
            pumping = asyncio.create_task(pump())
            await asyncio.gather(*(one(h, r) for h, r in world.resources))
            watch.lap("recorded")
            sending = False
            await pumping
            reached = await until_active(system, started + F1_BUDGET_SECONDS)
            watch.lap("active")
        peak = peak_rss_mb()
        sample = world.resources[0][1]
    baseline = await _trivial_rate(len(world.resources), sample)
    return make_result(
        settings,
        "f1-single",
        sizes={"requests": len(world.resources), "concurrency": CONCURRENCY},
        seconds=watch.seconds,
        rate=reached.active / watch.seconds,
        unit="requests",
        target="≥ 500 requests/s to ACTIVE",
        baseline=baseline,
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details=f1_details(watch, reached),
    )
