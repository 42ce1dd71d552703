"""The whole system in one test process: both systems' APIs in-process, the bridge worker stepped by
hand, and each system's jobs — so a flow test drives the public APIs and waits until every message has
settled, deterministically."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from derbridge.api.app import create_app
from derbridge.assethub import flows as assethub_flows
from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.jobs import jobs as assethub_jobs
from derbridge.bridge.assembly import build_worker
from derbridge.bridge.tables import queue_messages
from derbridge.bridge.worker import BridgeWorker
from derbridge.derms import flows as derms_flows
from derbridge.derms.adapters import tables as dm
from derbridge.derms.jobs import jobs as derms_jobs
from derbridge.infra.clock import SimulatedClock, use_clock
from derbridge.infra.jobs import JobRunner
from derbridge.runtime import Runtime

TOKEN = "test-token"


class System:
    """Asset Hub + DERMS + bridge, driven from a test."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient, worker: BridgeWorker, clock: SimulatedClock):
        self.runtime = runtime
        self.client = client
        self.worker = worker
        self.clock = clock
        self.assethub_jobs = JobRunner(runtime.async_engine("assethub"), ah.job_leases, assethub_jobs)
        self.derms_jobs = JobRunner(runtime.async_engine("derms"), dm.job_leases, derms_jobs)

    async def run_jobs(self) -> dict[str, int]:
        """Run every job of both systems once, now (business time from the simulated clock)."""
        done = await self.assethub_jobs.run_due(force=True)
        done |= {f"derms:{k}": v for k, v in (await self.derms_jobs.run_due(force=True)).items()}
        return done

    async def _unpublished(self) -> int:
        total = 0
        for system, outbox in (("assethub", ah.outbox), ("derms", dm.outbox)):
            async with self.runtime.async_engine(system).connect() as connection:  # type: ignore[arg-type]
                total += int(
                    await connection.scalar(
                        select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))
                    )
                    or 0
                )
        return total

    async def _queued(self) -> int:
        async with self.runtime.async_engine("bridge").connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(queue_messages)) or 0)

    async def settle(self, *, jobs: bool = False, timeout: float = 30.0) -> None:
        """Move messages until no outbox row is unpublished and no queue holds a message (and, with
        ``jobs``, run both systems' jobs each round). Retrying/parked messages wait for their time."""
        deadline = time.monotonic() + timeout
        while True:
            if jobs:
                await self.run_jobs()
            moved = await self.worker.relay_once()
            moved += await self.worker.consume_once()
            await self.worker.wait_in_flight()
            moved += await self.worker.schedule_once()
            if not moved and not await self._unpublished() and not await self._queued():
                return
            assert time.monotonic() < deadline, "the system did not settle in time"
            await asyncio.sleep(0)


@pytest.fixture
async def system(runtime: Runtime) -> AsyncIterator[System]:
    """The whole system on fresh databases, with a simulated business clock at 2027-06-01 12:00 UTC."""
    assethub_flows.load()
    derms_flows.load()
    clock = SimulatedClock(datetime(2027, 6, 1, 12, tzinfo=UTC))
    previous = use_clock(clock)
    app = create_app(runtime)
    worker = build_worker(runtime, app)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://derbridge.test",
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield System(runtime, client, worker, clock)
    await worker.deliverer.close()
    use_clock(previous)
    await runtime.aclose()
