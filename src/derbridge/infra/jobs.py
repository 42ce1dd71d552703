"""Periodic jobs of a system (status-check timeouts, event lifecycle, scheduled score transfers …), run
under a lease in the system's own database so that one instance runs each job at a time across processes.

A system's composition root (``build()``) lists its jobs as :class:`Job` values; a job is
``async def job(engine, now) -> int`` (how much it did, ``now`` read from the system's business clock) and
must be idempotent: a job that dies halfway is simply run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.infra import metrics
from derbridge.infra.clock import Clock
from derbridge.infra.db import utcnow
from derbridge.infra.ids import new_id
from derbridge.infra.upsert import insert_for

log = structlog.get_logger("derbridge.jobs")

JobFunction = Callable[[AsyncEngine, datetime], Awaitable[int]]


@dataclass(frozen=True)
class Job:
    """A job: what it is called, how often it runs (wall-clock time), and what it does."""

    name: str
    every: timedelta
    run: JobFunction


LATE_MARGIN = timedelta(seconds=60)
"""A job is late when it has not completed within ``3 * every + LATE_MARGIN`` (readiness, and the alert)."""


def late_after(job: Job) -> timedelta:
    """How long after its last completion a job counts as late: three missed turns and a minute."""
    return job.every * 3 + LATE_MARGIN


@dataclass(frozen=True)
class LateJob:
    """A job that has not completed in time (for ``/readyz``)."""

    job: str
    last_completed_at: datetime | None
    late_after_seconds: float


class JobRunner:
    """Runs a system's jobs, each under a lease row in ``leases`` (the system's ``job_leases`` table).

    The lease row says who runs the job (``owner``, until ``lease_until``) and when it last *completed*
    (``last_run_at``: the start of its last successful run; a run that failed leaves it, and only holds the
    job back for one interval). The loop (:meth:`run`) outlives a lost database: a round that fails on the
    database is logged and counted, and the loop backs off (capped) and goes on, so the jobs run again as
    soon as the database answers. A release that fails leaves the lease to this runner, which takes it back
    at its next round (its ``owner`` id does not change); any other process takes it when ``lease_until``
    passes — the job is never held longer than its lease.
    """

    def __init__(self, engine: AsyncEngine, leases: Table, jobs: Sequence[Job], *, system: str, clock: Clock) -> None:
        self.engine = engine
        self.leases = leases
        self.jobs = {job.name: job for job in jobs}
        if len(self.jobs) != len(jobs):
            raise ValueError(f"two jobs of {system} have one name")
        self.system = system
        self.clock = clock
        self.owner = new_id()
        self.started_at = utcnow()
        self._running = False
        self._last_success: dict[str, float] = {}
        for job in self.jobs.values():
            metrics.JOB_INTERVAL.labels(system, job.name).set(job.every.total_seconds())

    @property
    def alive(self) -> bool:
        """True while :meth:`run`'s loop is running."""
        return self._running

    async def _take_lease(self, job: Job, wall: datetime) -> bool:
        table = self.leases
        async with self.engine.begin() as connection:
            await connection.execute(
                insert_for(connection.dialect.name, table)
                .values(name=job.name)
                .on_conflict_do_nothing(index_elements=[table.c.name])
            )
            taken = await connection.execute(
                update(table)
                .where(
                    table.c.name == job.name,
                    or_(table.c.lease_until.is_(None), table.c.lease_until < wall, table.c.owner == self.owner),
                    or_(table.c.last_run_at.is_(None), table.c.last_run_at <= wall - job.every),
                )
                .values(owner=self.owner, lease_until=wall + max(job.every * 4, timedelta(seconds=60)))
                .returning(table.c.name)
            )
            return taken.first() is not None

    async def _release(self, job: Job, wall: datetime, *, completed: bool) -> None:
        table = self.leases
        # A completed run records when it ran; a failed one does not (last_run_at means "last completed", what
        # readiness and the lateness metric read) but holds the job back one interval, as a completed run
        # would, so that a job failing at once is not retried every tick.
        values = (
            {"owner": None, "lease_until": None, "last_run_at": wall}
            if completed
            else {"owner": None, "lease_until": wall + job.every}
        )
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table).where(table.c.name == job.name, table.c.owner == self.owner).values(**values)
            )

    def _succeeded(self, job: Job, at: float) -> None:
        # Never backwards: the lease table may show an older completion than the one this process just made.
        latest = self._last_success[job.name] = max(self._last_success.get(job.name, 0.0), at)
        metrics.JOB_LAST_SUCCESS.labels(self.system, job.name).set(latest)

    def _failed(self, job: Job) -> None:
        metrics.JOB_FAILURES.labels(self.system, job.name).inc()

    async def _observe_completions(self) -> None:
        """Carry the completions the lease table knows of (this process's or another's) into the metric."""
        for name, last_run_at in (await last_runs(self.engine, self.leases)).items():
            job = self.jobs.get(name)
            if job is not None and last_run_at is not None:
                self._succeeded(job, last_run_at.timestamp())

    async def run_due(self, *, force: bool = False) -> dict[str, int]:
        """Run every job whose interval has passed (all of them with ``force``); returns what each did.

        A job that raises is logged and counted, and the others run. A lease that cannot be taken or
        released (the database does not answer) ends the round with that error, counted against the job,
        for the caller to back off: the next job would meet the same database.
        """
        done: dict[str, int] = {}
        if not force:
            try:
                await self._observe_completions()
            except Exception:
                for job in self.jobs.values():
                    self._failed(job)
                raise
        for job in self.jobs.values():
            wall = utcnow()
            if not force:
                try:
                    if not await self._take_lease(job, wall):
                        continue
                except Exception:
                    self._failed(job)
                    raise
            completed = False
            try:
                done[job.name] = await job.run(self.engine, self.clock.now())
                completed = True
                self._succeeded(job, time.time())
            except Exception:
                self._failed(job)
                log.exception("job failed; it runs again at its next turn", system=self.system, job=job.name)
            if not force:
                try:
                    await self._release(job, wall, completed=completed)
                except Exception:
                    if completed:  # a failed run was counted already
                        self._failed(job)
                    raise
        return done

    async def run(self, stop: asyncio.Event, tick: float = 1.0, *, backoff_cap: float = 30.0) -> None:
        """Run due jobs every ``tick`` seconds until ``stop`` is set.

        A round that fails (the database restarts, fails over, or the network drops) is logged, and the next
        one waits ``tick · 2^failures``, at most ``backoff_cap`` seconds; the first round that succeeds resets
        the wait. Nothing but ``stop`` (or cancellation) ends the loop: a loop that ended on an exception
        would leave every job of the system stopped for good while the process looks healthy.
        """
        self._running = True
        self.started_at = utcnow()
        failures = 0
        try:
            while not stop.is_set():
                try:
                    await self.run_due()
                    if failures:
                        log.info("jobs run again", system=self.system, failed_rounds=failures)
                    failures = 0
                    wait = tick
                except Exception as error:
                    failures += 1
                    wait = min(backoff_cap, tick * 2**failures)
                    log.warning(
                        "jobs round failed; retrying",
                        system=self.system,
                        error=f"{type(error).__name__}: {error}"[:500],
                        failures=failures,
                        retry_in_seconds=wait,
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            self._running = False

    async def late_jobs(self, now: datetime | None = None) -> list[LateJob]:
        """The jobs that have not completed within ``3 * every + 60 s``, in this process or another (the
        lease table is shared). Not late: a job whose lease is held now (it is running somewhere), and a job
        that never ran while this runner has not been up that long (its first turn is still to come)."""
        now = now or utcnow()
        table = self.leases
        async with self.engine.connect() as connection:
            rows = {
                row.name: row
                for row in await connection.execute(
                    select(table.c.name, table.c.owner, table.c.lease_until, table.c.last_run_at)
                )
            }
        late: list[LateJob] = []
        for job in self.jobs.values():
            limit = late_after(job)
            row = rows.get(job.name)
            last = row.last_run_at if row is not None else None
            if last is not None and now - last <= limit:
                continue
            if row is not None and row.owner is not None and row.lease_until is not None and row.lease_until > now:
                continue
            if last is None and now - self.started_at <= limit:
                continue
            late.append(LateJob(job.name, last, limit.total_seconds()))
        return late


async def last_runs(engine: AsyncEngine, leases: Table) -> dict[str, datetime | None]:
    """When each job last completed (the start of its last successful run), for operators."""
    async with engine.connect() as connection:
        rows = await connection.execute(select(leases.c.name, leases.c.last_run_at))
        return {row.name: row.last_run_at for row in rows}
