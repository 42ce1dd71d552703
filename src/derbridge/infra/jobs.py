"""Periodic jobs of a system (status-check timeouts, event lifecycle, scheduled score transfers …), run
under a lease in the system's own database so that one instance runs each job at a time across processes.

A flow registers its job on its system's :class:`JobRegistry` with ``@jobs.job(name, every=...)``; the job
is ``async def job(engine, now) -> int`` (how much it did) and must be idempotent: a job that dies halfway
is simply run again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Table, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.infra import clock
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


@dataclass
class JobRegistry:
    """The jobs of one system."""

    jobs: dict[str, Job] = field(default_factory=dict)

    def job(self, name: str, *, every: timedelta) -> Callable[[JobFunction], JobFunction]:
        """Register the decorated function as the job ``name``."""

        def register(function: JobFunction) -> JobFunction:
            self.jobs[name] = Job(name, every, function)
            return function

        return register


class JobRunner:
    """Runs a system's jobs, each under a lease row in ``leases`` (the system's ``job_leases`` table)."""

    def __init__(self, engine: AsyncEngine, leases: Table, registry: JobRegistry) -> None:
        self.engine = engine
        self.leases = leases
        self.registry = registry
        self.owner = new_id()

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

    async def _release(self, job: Job, wall: datetime) -> None:
        table = self.leases
        async with self.engine.begin() as connection:
            await connection.execute(
                update(table)
                .where(table.c.name == job.name, table.c.owner == self.owner)
                .values(owner=None, lease_until=None, last_run_at=wall)
            )

    async def run_due(self, *, force: bool = False) -> dict[str, int]:
        """Run every job whose interval has passed (all of them with ``force``); returns what each did."""
        done: dict[str, int] = {}
        for job in self.registry.jobs.values():
            wall = utcnow()
            if not force and not await self._take_lease(job, wall):
                continue
            try:
                done[job.name] = await job.run(self.engine, clock.now())
            except Exception:
                log.exception("job failed; it runs again at its next turn", job=job.name)
            finally:
                if not force:
                    await self._release(job, wall)
        return done

    async def run(self, stop: asyncio.Event, tick: float = 1.0) -> None:
        """Run due jobs until ``stop`` is set."""
        while not stop.is_set():
            await self.run_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=tick)


async def last_runs(engine: AsyncEngine, leases: Table) -> dict[str, datetime | None]:
    """When each job last finished (for operators)."""
    async with engine.connect() as connection:
        rows = await connection.execute(select(leases.c.name, leases.c.last_run_at))
        return {row.name: row.last_run_at for row in rows}
