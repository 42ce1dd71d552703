"""Periodic jobs run under a lease: one runner at a time per job, at most once per interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.assethub.adapters.tables import job_leases
from derbridge.infra.clock import SimulatedClock, use_clock
from derbridge.infra.jobs import JobRegistry, JobRunner, last_runs
from derbridge.runtime import Runtime


async def test_a_job_runs_once_per_interval_and_two_runners_do_not_both_run_it(runtime: Runtime) -> None:
    registry = JobRegistry()
    seen: list[datetime] = []

    @registry.job("count", every=timedelta(hours=1))
    async def count(_engine: AsyncEngine, now: datetime) -> int:
        seen.append(now)
        return 1

    clock = SimulatedClock(datetime(2027, 7, 1, tzinfo=UTC))
    previous = use_clock(clock)
    try:
        engine = runtime.async_engine("assethub")
        first, second = (JobRunner(engine, job_leases, registry, system="test") for _ in range(2))
        assert await first.run_due() == {"count": 1}
        assert await second.run_due() == {}  # within the interval: nobody runs it again
        assert await first.run_due(force=True) == {"count": 1}  # forced (the demo, tests) runs regardless
        assert seen == [clock.now(), clock.now()]  # jobs get business time
        assert (await last_runs(engine, job_leases))["count"] is not None
    finally:
        use_clock(previous)
        await runtime.aclose()


async def test_a_failing_job_does_not_stop_the_others_and_releases_its_lease(runtime: Runtime) -> None:
    registry = JobRegistry()

    @registry.job("broken", every=timedelta(seconds=0))
    async def broken(_engine: AsyncEngine, _now: datetime) -> int:
        raise RuntimeError("boom")

    @registry.job("fine", every=timedelta(seconds=0))
    async def fine(_engine: AsyncEngine, _now: datetime) -> int:
        return 2

    engine = runtime.async_engine("assethub")
    runner = JobRunner(engine, job_leases, registry, system="test")
    assert await runner.run_due() == {"fine": 2}
    other = JobRunner(engine, job_leases, registry, system="test")
    assert await other.run_due() == {"fine": 2}  # the lease was released
    await runtime.aclose()
