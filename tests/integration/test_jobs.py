"""Periodic jobs run under a lease: one runner at a time per job, at most once per interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.assethub.adapters.tables import job_leases
from derbridge.infra.clock import SimulatedClock, SystemClock
from derbridge.infra.jobs import Job, JobRunner, last_runs
from derbridge.runtime import Runtime


async def test_a_job_runs_once_per_interval_and_two_runners_do_not_both_run_it(runtime: Runtime) -> None:
    seen: list[datetime] = []

    async def count(_engine: AsyncEngine, now: datetime) -> int:
        seen.append(now)
        return 1

    jobs = [Job("count", timedelta(hours=1), count)]
    clock = SimulatedClock(datetime(2027, 7, 1, tzinfo=UTC))
    try:
        engine = runtime.async_engine("assethub")
        first, second = (JobRunner(engine, job_leases, jobs, system="test", clock=clock) for _ in range(2))
        assert await first.run_due() == {"count": 1}
        assert await second.run_due() == {}  # within the interval: nobody runs it again
        assert await first.run_due(force=True) == {"count": 1}  # forced (the demo, tests) runs regardless
        assert seen == [clock.now(), clock.now()]  # jobs get the business time of the runner's clock
        assert (await last_runs(engine, job_leases))["count"] is not None
    finally:
        await runtime.aclose()


async def test_a_failing_job_does_not_stop_the_others_and_releases_its_lease(runtime: Runtime) -> None:
    async def broken(_engine: AsyncEngine, _now: datetime) -> int:
        raise RuntimeError("boom")

    async def fine(_engine: AsyncEngine, _now: datetime) -> int:
        return 2

    jobs = [Job("broken", timedelta(seconds=0), broken), Job("fine", timedelta(seconds=0), fine)]
    engine = runtime.async_engine("assethub")
    runner = JobRunner(engine, job_leases, jobs, system="test", clock=SystemClock())
    assert await runner.run_due() == {"fine": 2}
    other = JobRunner(engine, job_leases, jobs, system="test", clock=SystemClock())
    assert await other.run_due() == {"fine": 2}  # the lease was released
    await runtime.aclose()
