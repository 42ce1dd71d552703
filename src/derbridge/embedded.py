"""The whole system in one process, stepped by its caller: both systems' APIs served in-process, the
bridge worker, and both systems' jobs — on a business clock the caller may move.

``derbridge up`` runs the same parts on their own loops; the demo and the flow tests step them here, so
that a summer of events runs in seconds and every step is deterministic.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from types import TracebackType

import httpx
from sqlalchemy import Table, func, select

from derbridge.api.app import build_systems, create_app, relayed_outboxes
from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.system import AssetHub
from derbridge.bridge.assembly import build_worker
from derbridge.bridge.tables import queue_messages
from derbridge.derms.adapters import tables as dm
from derbridge.derms.system import Derms
from derbridge.infra.collector import serving_pace
from derbridge.runtime import Runtime


class SettleTimeout(RuntimeError):
    """Messages were still moving when the time allowed ran out."""


class EmbeddedSystem:
    """Asset Hub + DERMS + bridge in this process. Use as an async context manager."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.clock = runtime.clock
        # The systems as every process builds them (their composition roots), on the runtime's clock.
        self.systems = build_systems(runtime)
        if self.systems.assethub is None or self.systems.derms is None:
            raise RuntimeError("the embedded system serves both systems")
        self.assethub: AssetHub = self.systems.assethub
        self.derms: Derms = self.systems.derms
        self.app = create_app(runtime, systems=self.systems)
        # Stepped by its caller, the worker takes bigger batches and never waits on an empty queue: the
        # caller decides when to look again.
        self.worker = build_worker(
            runtime,
            self.app,
            bridge_settings=runtime.settings.bridge.model_copy(update={"batch_size": 500, "poll_seconds": 0.001}),
            outboxes=relayed_outboxes(),
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
            base_url="http://derbridge.local",
            headers={"Authorization": f"Bearer {runtime.settings.resolved_api_token()}"},
            timeout=httpx.Timeout(300.0),
        )
        self.assethub_jobs = self.assethub.job_runner()
        self.derms_jobs = self.derms.job_runner()
        self._stack = ExitStack()

    async def __aenter__(self) -> EmbeddedSystem:
        self._stack.enter_context(serving_pace())  # the collector's pace of a serving process
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            await self.client.aclose()
            await self.worker.deliverer.close()
        finally:
            self._stack.close()
            await self.runtime.aclose()

    async def run_jobs(self) -> dict[str, int]:
        """Run every job of both systems once, at the clock's time; Asset Hub's by name, the DERMS's as
        ``derms:<name>``."""
        done = dict(await self.assethub_jobs.run_due(force=True))
        done |= {f"derms:{k}": v for k, v in (await self.derms_jobs.run_due(force=True)).items()}
        return done

    async def _count(self, system: str, table: Table, *where: object) -> int:
        async with self.runtime.async_engine(system).connect() as connection:  # type: ignore[arg-type]
            statement = select(func.count()).select_from(table)
            for condition in where:
                statement = statement.where(condition)  # type: ignore[arg-type]
            return int(await connection.scalar(statement) or 0)

    async def busy(self) -> bool:
        """True while an outbox row is unpublished or a queue holds a message."""
        unpublished = await self._count("assethub", ah.outbox, ah.outbox.c.published_at.is_(None))
        unpublished += await self._count("derms", dm.outbox, dm.outbox.c.published_at.is_(None))
        return unpublished > 0 or await self._count("bridge", queue_messages) > 0

    async def settle(self, *, jobs: bool = False, timeout: float = 120.0) -> None:
        """Move messages until every outbox is published and every queue is empty (running the jobs each
        round with ``jobs``). Messages waiting to be retried or parked stay where they are."""
        deadline = time.monotonic() + timeout
        while True:
            moved = sum((await self.run_jobs()).values()) if jobs else 0
            while (published := await self.worker.relay_once()) > 0:
                moved += published
            while (taken := await self.worker.consume_once()) > 0:
                moved += taken
            await self.worker.wait_in_flight()
            moved += await self.worker.schedule_once()
            if not moved and not await self.busy():
                return
            if time.monotonic() > deadline:
                raise SettleTimeout(f"messages still moving after {timeout:.0f} s")
            await asyncio.sleep(0)
