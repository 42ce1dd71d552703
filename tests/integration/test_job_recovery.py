"""Periodic jobs outlive a lost database, and ``/readyz`` says when a job is late or its loop is not running.

Issue 13, defect 1: after a PostgreSQL restart none of the jobs ran again — the runner's loop ended on the
first database error (from taking or releasing a lease) and its task died quietly — while ``/readyz``
answered 200. Here PostgreSQL really goes away under a running loop (new connections refused, open ones
terminated with ``pg_terminate_backend``, in the middle of a job's run so that its release fails too) and
comes back; and a real job fails turn after turn until ``/readyz`` names it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.api.app import create_app
from derbridge.assethub.adapters.tables import job_leases
from derbridge.infra.clock import SystemClock
from derbridge.infra.db import create_async_db_engine, utcnow
from derbridge.infra.jobs import Job, JobRunner
from derbridge.migrations.runner import upgrade
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from tests.support.services import PostgresServer

DEADLINE = 120.0
"""A bound on every wait (a hang fails the test; nothing is timed)."""


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        done = condition()
        if not isinstance(done, bool):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.02)


def failures(system: str, job: str) -> float:
    return REGISTRY.get_sample_value("derbridge_job_failures_total", {"system": system, "job": job}) or 0.0


class Outage:
    """PostgreSQL gone for one database, as a restart looks to the application: new connections refused,
    open ones terminated."""

    def __init__(self, server: PostgresServer, url: str) -> None:
        self.conninfo = server.conninfo
        self.database = make_url(url).database

    def _run(self, *statements: str) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement)

    def begin(self) -> None:
        self._run(
            f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS false',
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.database}'",
        )

    def end(self) -> None:
        self._run(f'ALTER DATABASE "{self.database}" WITH ALLOW_CONNECTIONS true')


@pytest.mark.postgres
async def test_the_job_loop_survives_a_lost_database_and_runs_the_jobs_again(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database("jobs")
    upgrade("assethub", url)
    outage = Outage(postgres, url)
    runs: list[datetime] = []
    outage_started = asyncio.Event()

    async def heartbeat(_engine: AsyncEngine, now: datetime) -> int:
        runs.append(now)
        if len(runs) == 2:
            # The database goes away while the job runs: the lease it holds cannot be released.
            await asyncio.to_thread(outage.begin)
            outage_started.set()
        return 1

    engine = create_async_db_engine(url)
    runner = JobRunner(
        engine, job_leases, [Job("heartbeat", timedelta(0), heartbeat)], system="recovery-test", clock=SystemClock()
    )
    stop = asyncio.Event()
    loop = asyncio.create_task(runner.run(stop, tick=0.02, backoff_cap=0.2))
    try:
        await until(outage_started.is_set, "the job's second run")
        before = failures("recovery-test", "heartbeat")
        # The loop meets the outage (the release, then the rounds after it) and keeps going.
        await until(lambda: loop.done() or failures("recovery-test", "heartbeat") >= before + 3, "failed rounds")
        assert not loop.done(), f"the job loop ended: {loop.exception() if not loop.cancelled() else 'cancelled'}"
        assert runner.alive
        ran_before_recovery = len(runs)
        assert ran_before_recovery == 2  # nothing ran while the database was away
        outage.end()
        await until(lambda: loop.done() or len(runs) > ran_before_recovery + 1, "the job to run again")
        assert not loop.done()
        # The lease left unreleased by the outage was this runner's: taken back at once, released since.
        async with engine.connect() as connection:
            row = (await connection.execute(select(job_leases).where(job_leases.c.name == "heartbeat"))).one()
        assert row.owner in (None, runner.owner)
        success = REGISTRY.get_sample_value(
            "derbridge_job_last_success_timestamp_seconds", {"system": "recovery-test", "job": "heartbeat"}
        )
        assert success is not None
        assert success >= time.time() - DEADLINE
        assert REGISTRY.get_sample_value(
            "derbridge_job_interval_seconds", {"system": "recovery-test", "job": "heartbeat"}
        ) == pytest.approx(0.0)
    finally:
        outage.end()
        stop.set()
        await asyncio.wait_for(loop, timeout=DEADLINE)
        await engine.dispose()
    assert not runner.alive


@pytest.fixture
def assethub_only(tmp_path: Path) -> Runtime:
    settings = Settings(data_dir=tmp_path / "var", api_token="test-token")
    migrate_all(settings)
    return Runtime(settings)


async def test_readyz_names_a_late_job_and_a_job_loop_that_is_not_running(assethub_only: Runtime) -> None:
    runtime = assethub_only
    database = make_url(runtime.settings.database_url("assethub")).database
    assert database is not None
    app = create_app(runtime, components=["assethub"], run_jobs=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://derbridge.test") as client,
    ):
        engine = runtime.async_engine("assethub")

        async def completed(job: str) -> bool:
            async with engine.connect() as connection:
                return (
                    await connection.scalar(select(job_leases.c.last_run_at).where(job_leases.c.name == job))
                ) is not None

        await until(lambda: completed("status-check-timeouts"), "the jobs' first turn")
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["jobs"] == {"assethub": "ok"}

        # The job fails at every turn from now on (its table is gone), and has not completed for an hour.
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE device_status_checks RENAME TO device_status_checks_away")
        an_hour_ago = utcnow() - timedelta(hours=1)
        async with engine.begin() as connection:
            await connection.execute(
                update(job_leases).where(job_leases.c.name == "status-check-timeouts").values(last_run_at=an_hour_ago)
            )
        failed_before = failures("assethub", "status-check-timeouts")
        await until(lambda: failures("assethub", "status-check-timeouts") > failed_before, "the job to fail")

        late = await client.get("/readyz")
        assert late.status_code == 503
        assert late.headers["content-type"].startswith("application/problem+json")
        body = late.json()
        assert body["status"] == 503
        assert body["checks"] == {"assethub": "ok"}  # the database answers; the job does not complete
        assert body["jobs"] == {"assethub": "late"}
        assert [(j["system"], j["job"]) for j in body["late_jobs"]] == [("assethub", "status-check-timeouts")]
        assert body["late_jobs"][0]["late_after_seconds"] == 75.0  # 3 x 5 s + 60 s
        assert datetime.fromisoformat(body["late_jobs"][0]["last_completed_at"]) == an_hour_ago
        assert "status-check-timeouts" in body["detail"]

        # Fixed: the job completes at its next turn, and the process is ready again.
        with sqlite3.connect(database) as connection:
            connection.execute("ALTER TABLE device_status_checks_away RENAME TO device_status_checks")

        async def ready_again() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await until(ready_again, "the job to complete again")

        # A job loop that is not running (here: cancelled, as a loop that died would be) is not ready either.
        (jobs_task,) = [task for task in asyncio.all_tasks() if task.get_name() == "assethub-jobs"]
        jobs_task.cancel()
        await asyncio.gather(jobs_task, return_exceptions=True)
        stopped = await client.get("/readyz")
        assert stopped.status_code == 503
        assert stopped.json()["jobs"] == {"assethub": "not running"}
        assert "job loop of assethub is not running" in stopped.json()["detail"]
    await runtime.aclose()
