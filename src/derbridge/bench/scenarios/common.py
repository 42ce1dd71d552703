"""What every scenario shares: the business time, the embedded system it runs on, the checks that a flow did
what it must, and the result it reports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import Table, func, select

from derbridge.api.app import relayed_outboxes
from derbridge.bench.core import Result, Stopwatch, backend_names, progress
from derbridge.bench.world import (
    accepted_devices,
    create_programs,
    customers_for_devices,
    generate,
    seed_enrolled_devices,
)
from derbridge.bridge.assembly import build_worker
from derbridge.bridge.worker import BridgeWorker
from derbridge.embedded import EmbeddedSystem
from derbridge.infra.clock import SimulatedClock
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings

NOW = datetime(2027, 6, 2, 14, tzinfo=UTC)
"""Business time of every scenario (after the generated enrollment requests, in the summer season)."""
SETTLE_TIMEOUT = 1800.0
CONCURRENCY = 32
"""Requests in flight at once in the throughput scenarios (F1 single and its baseline)."""

Scenario = Callable[[Settings, Path, bool], Coroutine[Any, Any, Result]]


class BenchFailure(RuntimeError):
    """The flow under measurement did not do what it must: the figure would be meaningless."""


def expect_ok(response: httpx.Response, what: str, *codes: int) -> dict[str, Any]:
    if response.status_code not in (codes or (200, 201, 202)):
        raise BenchFailure(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


@contextlib.asynccontextmanager
async def embedded_system(settings: Settings) -> AsyncIterator[EmbeddedSystem]:
    migrate_all(settings)
    runtime = Runtime(settings, clock=SimulatedClock(NOW))
    async with EmbeddedSystem(runtime) as system:
        yield system


def up_worker(system: EmbeddedSystem) -> BridgeWorker:
    """A bridge worker as ``derbridge up`` runs it (the settings' batch size and poll interval), not the
    embedded system's stepped one (close it with :func:`close_worker`)."""
    return build_worker(system.runtime, system.app, outboxes=relayed_outboxes())


async def close_worker(worker: BridgeWorker) -> None:
    await worker.deliverer.close()
    await worker.transport.close()


async def count_rows(system: EmbeddedSystem, name: str, table: Table, *where: Any) -> int:
    async with system.runtime.async_engine(name).connect() as connection:  # type: ignore[arg-type]
        return int(await connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def scenario_stopwatch(settings: Settings, scenario: str) -> Stopwatch:
    """The clock of ``scenario``'s timed part (its profiles named by scenario and backend)."""
    return Stopwatch(profile_as="-".join([scenario, *backend_names(settings)]))


def make_result(settings: Settings, scenario: str, **fields: Any) -> Result:
    database, transport = backend_names(settings)
    return Result(scenario=scenario, database=database, transport=transport, **fields)


async def seeded_world(system: EmbeddedSystem, workdir: Path, devices: int) -> None:
    """Programs through the APIs, then ``devices`` ACTIVE, AVAILABLE devices seeded in bulk."""
    progress(f"generating a utility for {devices:,} devices")
    generate(customers_for_devices(devices), workdir / "utility")
    table = accepted_devices(workdir / "utility", devices)
    await create_programs(system)
    progress(f"seeding {devices:,} enrolled devices in both systems")
    await asyncio.to_thread(seed_enrolled_devices, system.runtime, table, NOW)


EDGE = "/openadr3/3.1.0"


def trivial_app() -> FastAPI:
    """The baseline server: one FastAPI endpoint that validates nothing and answers a constant."""
    app = FastAPI()

    @app.post("/trivial")
    async def trivial() -> dict[str, bool]:
        return {"ok": True}

    return app
