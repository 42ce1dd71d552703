"""The scenarios of quality.md. Each builds its given state (not timed), runs the real flow on the
embedded system (timed), checks the flow did what it must, then measures its baseline in the same process.

Sizes are full size; ``--quick`` divides them by ten (:func:`derbridge.bench.core.scaled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
from fastapi import FastAPI
from sqlalchemy import Table, delete, func, insert, select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.bench.core import (
    Backend,
    Baseline,
    Result,
    Stopwatch,
    backend_names,
    bare_insert_baseline,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
    scaled,
)
from derbridge.bench.world import (
    PROGRAM,
    accepted_devices,
    create_programs,
    customers_for_devices,
    generate,
    report_online,
    seed_enrolled_devices,
)
from derbridge.bridge.tables import queue_messages, tracked_messages
from derbridge.cis.importer import import_extract
from derbridge.contracts import device_status_check as check_contract
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.embedded import EmbeddedSystem, SettleTimeout
from derbridge.infra.clock import SimulatedClock
from derbridge.infra.ids import new_id
from derbridge.infra.outbox import outbox_rows
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from derbridge.sim.aggregator import load_aggregators

NOW = datetime(2027, 6, 2, 14, tzinfo=UTC)
"""Business time of every scenario (after the generated enrollment requests, in the summer season)."""
SETTLE_TIMEOUT = 1800.0
CONCURRENCY = 32
"""Requests in flight at once in the throughput scenarios (F1 single and its baseline)."""

Scenario = Callable[[Settings, Path, bool], Coroutine[Any, Any, Result]]


@dataclass(frozen=True)
class Spec:
    """A scenario: what it measures, its target, and the backends quality.md asks it to run on."""

    name: str
    run: Scenario
    backends: tuple[Backend, ...]
    summary: str


class BenchFailure(RuntimeError):
    """The flow under measurement did not do what it must: the figure would be meaningless."""


def _ok(response: httpx.Response, what: str, *codes: int) -> dict[str, Any]:
    if response.status_code not in (codes or (200, 201, 202)):
        raise BenchFailure(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


@contextlib.asynccontextmanager
async def _embedded(settings: Settings) -> AsyncIterator[EmbeddedSystem]:
    migrate_all(settings)
    runtime = Runtime(settings)
    async with EmbeddedSystem(runtime, SimulatedClock(NOW)) as system:
        yield system


async def _count(system: EmbeddedSystem, name: str, table: Table, *where: Any) -> int:
    async with system.runtime.async_engine(name).connect() as connection:  # type: ignore[arg-type]
        return int(await connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def _result(settings: Settings, scenario: str, **fields: Any) -> Result:
    database, transport = backend_names(settings)
    return Result(scenario=scenario, database=database, transport=transport, **fields)


async def _seeded_world(system: EmbeddedSystem, workdir: Path, devices: int) -> None:
    """Programs through the APIs, then ``devices`` ACTIVE, AVAILABLE devices seeded in bulk."""
    progress(f"generating a utility for {devices:,} devices")
    generate(customers_for_devices(devices), workdir / "utility")
    table = accepted_devices(workdir / "utility", devices)
    await create_programs(system.client)
    progress(f"seeding {devices:,} enrolled devices in both systems")
    await asyncio.to_thread(seed_enrolled_devices, system.runtime, table, NOW)


async def _transfer_scores(system: EmbeddedSystem, devices: int) -> dict[str, Any]:
    body = _ok(await system.client.post("/assethub/v1/score-transfers"), "score transfer")
    await system.settle(timeout=SETTLE_TIMEOUT)
    async with system.runtime.async_engine("derms").connect() as connection:
        current = (
            await connection.execute(select(dm.score_snapshots).where(dm.score_snapshots.c.is_current.is_(True)))
        ).first()
    if current is None or current.row_count != devices:
        raise BenchFailure(f"the DERMS did not load a {devices:,}-row snapshot: {current} after {body}")
    return body


# --- F4 -----------------------------------------------------------------------------------------------


async def f4_score_transfer(settings: Settings, workdir: Path, quick: bool) -> Result:
    """Compute, write, store, deliver, verify and load a score snapshot of every enrolled device."""
    devices = scaled(1_000_000, quick)
    async with _embedded(settings) as system:
        await _seeded_world(system, workdir, devices)
        progress(f"F4: transferring {devices:,} scores")
        reset_peak_rss()
        with Stopwatch() as watch:
            body = await _transfer_scores(system, devices)
        peak = peak_rss_mb()
    postgres = settings.database_url("assethub").startswith("postgresql")
    return _result(
        settings,
        "f4-score-transfer",
        sizes={"devices": devices},
        seconds=watch.seconds,
        rate=devices / watch.seconds,
        unit="devices",
        target=("≤ 8 s on PostgreSQL" if postgres else "≤ 10 s embedded")
        + "; whole flow ≤ 3 times the baseline (ratio ≥ 0.33); peak RSS ≤ 1 GB",
        baseline=bare_insert_baseline(settings, {"derms": ["device_scores"]}),
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"assethub_seconds": body.get("seconds", {}), "total_rows": devices},
    )


# --- F5 -----------------------------------------------------------------------------------------------


async def _create_event(system: EmbeddedSystem, target: int) -> dict[str, Any]:
    start_at = system.clock.now() + timedelta(hours=2)
    return _ok(
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


async def _reserve(system: EmbeddedSystem, target: int) -> dict[str, Any]:
    event = await _create_event(system, target)
    await system.settle(timeout=SETTLE_TIMEOUT)
    recorded = await _count(
        system, "assethub", ah.participation_records, ah.participation_records.c.event_id == event["event_id"]
    )
    if event["reserved_count"] != target or recorded != target:
        raise BenchFailure(f"asked {target:,}: reserved {event['reserved_count']:,}, Asset Hub recorded {recorded:,}")
    return event


async def f5_reservation(settings: Settings, workdir: Path, quick: bool) -> Result:
    """An event reserving 100,000 of 1,000,000 candidates: ranked, stored, delivered, recorded."""
    candidates, target = scaled(1_000_000, quick), scaled(100_000, quick)
    async with _embedded(settings) as system:
        await _seeded_world(system, workdir, candidates)
        progress("F5: transferring scores first (set-up)")
        await _transfer_scores(system, candidates)
        progress(f"F5: reserving {target:,} of {candidates:,}")
        reset_peak_rss()
        with Stopwatch() as watch:
            event = await _reserve(system, target)
        peak = peak_rss_mb()
    return _result(
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


# --- F7 -----------------------------------------------------------------------------------------------


async def f7_outcomes(settings: Settings, workdir: Path, quick: bool) -> Result:
    """100,000 per-device outcomes reported to the DERMS, closed and recorded in Asset Hub's history."""
    count = scaled(100_000, quick)
    async with _embedded(settings) as system:
        await _seeded_world(system, workdir, count)
        progress("F7: scores and a reservation first (set-up)")
        await _transfer_scores(system, count)
        event = await _reserve(system, count)
        event_id = event["event_id"]
        clock = system.clock
        assert isinstance(clock, SimulatedClock)
        start_at = datetime.fromisoformat(event["start_at"])
        end_at = datetime.fromisoformat(event["end_at"])
        clock.set(start_at + timedelta(minutes=1))
        await system.settle(jobs=True, timeout=SETTLE_TIMEOUT)
        async with system.runtime.async_engine("derms").connect() as connection:
            reserved = (
                await connection.execute(
                    select(dm.devices.c.head_end_system, dm.devices.c.nic_id)
                    .join(dm.reservations, dm.reservations.c.device_id == dm.devices.c.device_id)
                    .where(dm.reservations.c.event_id == event_id)
                    .order_by(dm.reservations.c.rank)
                )
            ).all()
        outcomes = [
            {"head_end_system": head, "nic_id": nic, "outcome": "IN_FLIGHT_OVERRIDE", "preemptive_opt_out": True}
            if i % 10 == 0
            else {
                "head_end_system": head,
                "nic_id": nic,
                "outcome": "SUCCESSFUL_PARTICIPATION",
                "participation_start_at": start_at.isoformat(),
                "participation_end_at": end_at.isoformat(),
                "shed_kw": 1.25,
            }
            for i, (head, nic) in enumerate(reserved)
        ]
        progress(f"F7: reporting {len(outcomes):,} outcomes")
        reset_peak_rss()
        with Stopwatch() as watch:
            for start in range(0, len(outcomes), 10_000):
                _ok(
                    await system.client.post(
                        f"/derms/v1/events/{event_id}/outcomes", json={"outcomes": outcomes[start : start + 10_000]}
                    ),
                    "reporting outcomes",
                )
            watch.lap("reported")
            clock.set(end_at + timedelta(hours=24, minutes=1))  # past the closing grace
            await system.settle(jobs=True, timeout=SETTLE_TIMEOUT)
            watch.lap("closed and recorded")
        peak = peak_rss_mb()
        recorded = await _count(
            system,
            "assethub",
            ah.participation_records,
            ah.participation_records.c.event_id == event_id,
            ah.participation_records.c.outcome.is_not(None),
        )
        if recorded != count:
            raise BenchFailure(f"Asset Hub recorded {recorded:,} outcomes of {count:,}")
    return _result(
        settings,
        "f7-outcomes",
        sizes={"outcomes": count},
        seconds=watch.seconds,
        rate=count / watch.seconds,
        unit="outcomes",
        target="≤ 10 s",
        baseline=bare_insert_baseline(settings, {"derms": ["outcomes"], "assethub": ["participation_records"]}),
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"phases": watch.laps},
    )


# --- CIS import ---------------------------------------------------------------------------------------


CIS_TABLES: dict[str, Sequence[str]] = {
    "assethub": ["persons", "accounts", "premises", "service_points"],
    "derms": ["contacts", "customers", "locations"],
}


async def cis_import(settings: Settings, workdir: Path, quick: bool) -> Result:
    """A CIS extract of 1,000,000 customers into both systems (P0)."""
    customers = scaled(1_000_000, quick)
    migrate_all(settings)
    progress(f"CIS: generating {customers:,} customers")
    utility = generate(customers, workdir / "utility")
    runtime = Runtime(settings)
    loaders = [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]
    progress(f"CIS: importing {utility.cis_rows:,} rows")
    reset_peak_rss()
    with Stopwatch() as watch:
        report = await asyncio.to_thread(import_extract, utility.cis_extract, loaders)
    peak = peak_rss_mb()
    runtime.close_sync()
    counts = report.as_dict()
    if counts["assethub"]["inserted"] < customers:
        raise BenchFailure(f"the import inserted too little: {counts}")
    return _result(
        settings,
        "cis-import",
        sizes={"customers": customers, "extract_rows": utility.cis_rows},
        seconds=watch.seconds,
        rate=utility.cis_rows / watch.seconds,
        unit="extract rows",
        target="≤ 60 s",
        baseline=bare_insert_baseline(settings, CIS_TABLES),
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"counts": counts},
    )


# --- F1 -----------------------------------------------------------------------------------------------


class EnrollmentGateway(Protocol):
    """Where aggregators send enrollment requests. Today the DERMS's API; the edge VTN (being built in
    ``derbridge.edge``) will be a second implementation, and F1 must then be measured through it."""

    async def send_one(self, head_end_system: str, request: dict[str, Any]) -> None:
        """One request."""

    async def send_batch(self, head_end_system: str, requests: Sequence[dict[str, Any]]) -> None:
        """Many requests of one head-end."""


class DermsApiGateway:
    """Enrollment requests through ``/derms/v1/enrollment-requests`` (single and batch)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send_one(self, head_end_system: str, request: dict[str, Any]) -> None:
        """One request."""
        _ok(
            await self.client.post(
                "/derms/v1/enrollment-requests", json=request | {"head_end_system": head_end_system}
            ),
            "enrollment request",
        )

    async def send_batch(self, head_end_system: str, requests: Sequence[dict[str, Any]]) -> None:
        """Many requests of one head-end."""
        _ok(
            await self.client.post(
                "/derms/v1/enrollment-requests/batch",
                json={"head_end_system": head_end_system, "requests": list(requests)},
            ),
            "enrollment batch",
        )


@dataclass
class _Enrollment:
    requests: list[tuple[str, dict[str, Any]]]
    accepted: int


async def _enrollment_world(system: EmbeddedSystem, workdir: Path, requests: int) -> _Enrollment:
    """A utility whose inventories hold about ``requests`` requests: its CIS imported into both systems,
    the program, and every device reporting ONLINE (so that device setup can succeed at once)."""
    customers = max(1, int(requests / 1.031))
    progress(f"F1: generating {customers:,} customers, importing the CIS, reporting devices online")
    utility = generate(customers, workdir / "utility")
    runtime = system.runtime
    loaders = [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]
    await asyncio.to_thread(import_extract, utility.cis_extract, loaders)
    await create_programs(system.client)
    await report_online(system.client, accepted_devices(workdir / "utility"), NOW)
    aggregators = load_aggregators(workdir / "utility" / "aggregators")
    pairs = [(a.head_end_system, r) for a in aggregators for r in a.requests]
    return _Enrollment(requests=pairs, accepted=customers)


async def _until_active(system: EmbeddedSystem, expected: int, deadline: float) -> int:
    """Run the bridge and the jobs until ``expected`` enrollments are ACTIVE in Asset Hub, or until
    ``deadline`` (``time.monotonic()``) passes; how many are ACTIVE. A run cut off by the deadline reports
    what it reached (``completed: false``) so that the whole suite keeps to its time budget."""
    while True:
        await system.settle(jobs=True, timeout=max(1.0, deadline - time.monotonic()))
        active = await _count(system, "assethub", ah.enrollments, ah.enrollments.c.state == "ACTIVE")
        if active >= expected or time.monotonic() > deadline:
            return active


F1_BUDGET_SECONDS = 120.0
"""How long an F1 scenario may run before it reports what it reached (the suite must fit in 15 minutes)."""


async def f1_bulk(settings: Settings, workdir: Path, quick: bool) -> Result:
    """100,000 enrollment requests in batches of 5,000, until Asset Hub has them ACTIVE."""
    requests = scaled(100_000, quick)
    async with _embedded(settings) as system:
        world = await _enrollment_world(system, workdir, requests)
        gateway: EnrollmentGateway = DermsApiGateway(system.client)
        progress(f"F1 bulk: {len(world.requests):,} requests")
        reset_peak_rss()
        started = time.monotonic()
        with Stopwatch() as watch:
            by_head_end: dict[str, list[dict[str, Any]]] = {}
            for head_end, request in world.requests:
                by_head_end.setdefault(head_end, []).append(request)
            for head_end, batch in by_head_end.items():
                for start in range(0, len(batch), 5_000):
                    await gateway.send_batch(head_end, batch[start : start + 5_000])
            watch.lap("recorded")
            try:
                active = await _until_active(system, world.accepted, started + F1_BUDGET_SECONDS)
            except SettleTimeout:
                active = await _count(system, "assethub", ah.enrollments, ah.enrollments.c.state == "ACTIVE")
            watch.lap("active")
        peak = peak_rss_mb()
    return _result(
        settings,
        "f1-bulk",
        sizes={"requests": len(world.requests), "expected_active": world.accepted},
        seconds=watch.seconds,
        rate=active / watch.seconds,
        unit="requests",
        target="≤ 60 s to ACTIVE",
        baseline=bare_insert_baseline(
            settings,
            {
                "derms": ["enrollment_requests", "devices", "device_availability"],
                "assethub": ["devices", "enrollments", "enrollment_devices", "enrollment_transitions"],
            },
        ),
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"phases": watch.laps, "gateway": "derms-api", "active": active, "completed": active >= world.accepted},
    )


def trivial_app() -> FastAPI:
    """The baseline server: one FastAPI endpoint that validates nothing and answers a constant."""
    app = FastAPI()

    @app.post("/trivial")
    async def trivial() -> dict[str, bool]:
        return {"ok": True}

    return app


async def _trivial_rate(count: int, body: dict[str, Any]) -> Baseline:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=trivial_app()), base_url="http://derbridge.local"
    ) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one() -> None:
            async with gate:
                _ok(await client.post("/trivial", json=body), "trivial endpoint")

        with Stopwatch() as watch:
            await asyncio.gather(*(one() for _ in range(count)))
    return Baseline(
        what=f"a trivial FastAPI endpoint, same in-process server transport, {CONCURRENCY} in flight",
        seconds=watch.seconds,
        rate=count / watch.seconds,
    )


async def f1_single(settings: Settings, workdir: Path, quick: bool) -> Result:
    """Sustained single enrollment requests (32 in flight) until Asset Hub has them ACTIVE, while the
    bridge and the jobs run."""
    requests = scaled(5_000, quick)
    async with _embedded(settings) as system:
        world = await _enrollment_world(system, workdir, requests)
        gateway: EnrollmentGateway = DermsApiGateway(system.client)
        gate = asyncio.Semaphore(CONCURRENCY)
        sending = True

        async def one(head_end: str, request: dict[str, Any]) -> None:
            async with gate:
                await gateway.send_one(head_end, request)

        async def pump() -> None:
            while sending:
                await system.settle(jobs=True, timeout=SETTLE_TIMEOUT)
                await asyncio.sleep(0.005)

        progress(f"F1 single: {len(world.requests):,} requests")
        reset_peak_rss()
        started = time.monotonic()
        with Stopwatch() as watch:
            pumping = asyncio.create_task(pump())
            await asyncio.gather(*(one(h, r) for h, r in world.requests))
            watch.lap("recorded")
            sending = False
            await pumping
            try:
                active = await _until_active(system, world.accepted, started + F1_BUDGET_SECONDS)
            except SettleTimeout:
                active = await _count(system, "assethub", ah.enrollments, ah.enrollments.c.state == "ACTIVE")
            watch.lap("active")
        peak = peak_rss_mb()
        sample = world.requests[0][1] | {"head_end_system": world.requests[0][0]}
    baseline = await _trivial_rate(len(world.requests), sample)
    return _result(
        settings,
        "f1-single",
        sizes={"requests": len(world.requests), "expected_active": world.accepted, "concurrency": CONCURRENCY},
        seconds=watch.seconds,
        rate=active / watch.seconds,
        unit="requests",
        target="≥ 500 requests/s to ACTIVE",
        baseline=baseline,
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"phases": watch.laps, "gateway": "derms-api", "active": active, "completed": active >= world.accepted},
    )


# --- F2 -----------------------------------------------------------------------------------------------


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def f2_status_check(settings: Settings, workdir: Path, quick: bool) -> Result:
    """Agent status checks one after another, each timed from the API call to the answer stored in Asset
    Hub, with the bridge running as under ``derbridge up``."""
    devices, checks = scaled(10_000, quick), scaled(1_000, quick)
    async with _embedded(settings) as system:
        await _seeded_world(system, workdir, devices)
        table = accepted_devices(workdir / "utility", devices)
        await report_online(system.client, table, NOW)
        keys = list(zip(table.column("head_end_system").to_pylist(), table.column("nic_id").to_pylist(), strict=True))
        stop = asyncio.Event()
        running = asyncio.create_task(system.worker.run(stop))
        latencies: list[float] = []
        progress(f"F2: {checks:,} status checks")
        reset_peak_rss()
        try:
            with Stopwatch() as watch:
                for i in range(checks):
                    head, nic = keys[(i * 7919) % len(keys)]
                    started = time.perf_counter()
                    check = _ok(
                        await system.client.post(
                            "/assethub/v1/status-checks",
                            json={"head_end_system": head, "nic_id": nic, "requested_by": "agent-bench"},
                        ),
                        "status check",
                    )
                    while check["status"] == "OPEN":
                        await asyncio.sleep(0.001)
                        check = _ok(
                            await system.client.get(f"/assethub/v1/status-checks/{check['check_id']}"), "status check"
                        )
                    latencies.append(time.perf_counter() - started)
                    if check["status"] != "ANSWERED":
                        raise BenchFailure(f"status check ended {check['status']}: {check}")
            peak = peak_rss_mb()
        finally:
            stop.set()
            await running
    baseline_latencies: list[float] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=trivial_app()), base_url="http://derbridge.local"
    ) as client:
        with Stopwatch() as trivial:
            for _ in range(checks):
                started = time.perf_counter()
                _ok(await client.post("/trivial", json={}), "trivial endpoint")
                baseline_latencies.append(time.perf_counter() - started)
    ms = 1000.0
    return _result(
        settings,
        "f2-status-check",
        sizes={"checks": checks, "devices": devices},
        seconds=watch.seconds,
        rate=checks / watch.seconds,
        unit="checks (sequential)",
        target="p99 ≤ 100 ms",
        baseline=Baseline(
            what="a trivial FastAPI endpoint called one request at a time (no bridge)",
            seconds=trivial.seconds,
            rate=checks / trivial.seconds,
        ),
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={
            "p50_ms": round(_percentile(latencies, 0.50) * ms, 2),
            "p99_ms": round(_percentile(latencies, 0.99) * ms, 2),
            "max_ms": round(max(latencies) * ms, 2),
            "mean_ms": round(statistics.fmean(latencies) * ms, 2),
            "baseline_p99_ms": round(_percentile(baseline_latencies, 0.99) * ms, 3),
        },
    )


# --- bridge -------------------------------------------------------------------------------------------


def _status_check_messages(count: int) -> list[Any]:
    return [
        new_envelope(
            check_contract.TYPE,
            check_contract.StatusCheckRequest(
                check_id=(check_id := new_id()),
                reason=check_contract.CheckReason.AGENT_TROUBLESHOOT,
                requested_by="bench",
                device=check_contract.CheckedDevice(
                    head_end_system="ECOBEE",
                    nic_id=f"{100_000_000_000 + i}",
                    device_type="THERMOSTAT",
                    manufacturer="ecobee",
                    model="Premium",
                ),
            ),
            business_key=f"bench:{i}",
            correlation_id=check_id,
            occurred_at=NOW,
        )
        for i in range(count)
    ]


async def _raw_queue_table(system: EmbeddedSystem, bodies: list[tuple[str, bytes]]) -> Baseline:
    """Insert every body into the bridge's queue table, then claim and delete them 500 at a time."""
    engine = system.runtime.async_engine("bridge")
    queue = "bench.raw"
    with Stopwatch() as watch:
        for start in range(0, len(bodies), 500):
            async with engine.begin() as connection:
                await connection.execute(
                    insert(queue_messages),
                    [
                        {"queue": queue, "message_id": m, "body": b, "enqueued_at": NOW, "deliveries": 0}
                        for m, b in bodies[start : start + 500]
                    ],
                )
        taken = 0
        while taken < len(bodies):
            async with engine.begin() as connection:
                ids = (
                    await connection.scalars(
                        select(queue_messages.c.id)
                        .where(queue_messages.c.queue == queue)
                        .order_by(queue_messages.c.id)
                        .limit(500)
                    )
                ).all()
                await connection.execute(delete(queue_messages).where(queue_messages.c.id.in_(ids)))
            taken += len(ids)
    return Baseline(
        what="raw queue table: insert 500 rows per transaction, then select and delete 500 per transaction",
        seconds=watch.seconds,
        rate=len(bodies) / watch.seconds,
    )


async def _raw_rabbitmq(url: str, bodies: list[tuple[str, bytes]]) -> Baseline:
    """Publish every body (confirmed, persistent, to a quorum queue as the transport's) 500 at a time,
    then consume and acknowledge them all."""
    import aio_pika

    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=500)
        queue = await channel.declare_queue("bench.raw", durable=True, arguments={"x-queue-type": "quorum"})
        with Stopwatch() as watch:
            for start in range(0, len(bodies), 500):
                await asyncio.gather(
                    *(
                        channel.default_exchange.publish(
                            aio_pika.Message(b, message_id=m, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key=queue.name,
                        )
                        for m, b in bodies[start : start + 500]
                    )
                )
            received = 0
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    received += 1
                    if received == len(bodies):
                        break
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return Baseline(
        what="raw aio-pika: publish with confirms 500 at a time to a quorum queue, then consume and ack",
        seconds=watch.seconds,
        rate=len(bodies) / watch.seconds,
    )


async def bridge_throughput(settings: Settings, workdir: Path, quick: bool) -> Result:
    """Small messages (F2 requests) from Asset Hub's outbox through relay, transport, worker and the
    DERMS's inbox (dedup, handler), with the worker running as under ``derbridge up``."""
    count = scaled(50_000, quick)
    settings = settings.model_copy(
        update={"bridge": settings.bridge.model_copy(update={"relay_systems": ["assethub"]})}
    )
    async with _embedded(settings) as system:
        envelopes = _status_check_messages(count)
        bodies = [(e.message_id, e.model_dump_json().encode()) for e in envelopes]
        async with system.runtime.async_engine("assethub").begin() as connection:
            for start in range(0, count, 5_000):
                await connection.execute(insert(ah.outbox), outbox_rows(envelopes[start : start + 5_000]))
        del envelopes
        progress(f"bridge: {count:,} messages on {settings.bridge.transport}")
        stop = asyncio.Event()
        reset_peak_rss()
        with Stopwatch() as watch:
            running = asyncio.create_task(system.worker.run(stop))
            while await _count(system, "bridge", tracked_messages, tracked_messages.c.state == "delivered") < count:
                await asyncio.sleep(0.05)
                if running.done():
                    running.result()
                    raise BenchFailure("the bridge worker stopped")
        peak = peak_rss_mb()
        stop.set()
        await running
        answered = await _count(system, "derms", dm.outbox)
        if answered != count:
            raise BenchFailure(f"the DERMS answered {answered:,} of {count:,} status checks")
        if settings.bridge.transport == "amqp":
            baseline = await _raw_rabbitmq(settings.bridge.amqp_url.get_secret_value(), bodies)
        else:
            baseline = await _raw_queue_table(system, bodies)
    postgres = settings.database_url("bridge").startswith("postgresql")
    return _result(
        settings,
        "bridge-throughput",
        sizes={"messages": count},
        seconds=watch.seconds,
        rate=count / watch.seconds,
        unit="messages",
        target=(
            "≥ 50 % of raw RabbitMQ (ratio ≥ 0.5)"
            if settings.bridge.transport == "amqp"
            else ("≥ 5,000 msg/s" if postgres else "none on SQLite (quality.md sets sql/PostgreSQL and amqp)")
        ),
        baseline=baseline,
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"message_bytes": sum(len(b) for _, b in bodies) // max(1, count)},
    )


SCENARIOS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec("f4-score-transfer", f4_score_transfer, ("sqlite", "postgres"), "F4: 1,000,000 device scores"),
        Spec("f5-reservation", f5_reservation, ("sqlite",), "F5: reserve 100,000 of 1,000,000 candidates"),
        Spec("f7-outcomes", f7_outcomes, ("sqlite",), "F7: 100,000 outcomes to Asset Hub history"),
        Spec("f1-single", f1_single, ("sqlite",), "F1: sustained single enrollment requests to ACTIVE"),
        Spec("f1-bulk", f1_bulk, ("sqlite",), "F1: 100,000 enrollment requests in batches to ACTIVE"),
        Spec("f2-status-check", f2_status_check, ("sqlite",), "F2: status check round trip p50/p99"),
        Spec("bridge-throughput", bridge_throughput, ("sqlite", "postgres", "amqp"), "bridge: small messages"),
        Spec("cis-import", cis_import, ("sqlite",), "CIS import: 1,000,000 customers into both systems"),
    )
}
"""Every scenario by name, in the order ``derbridge bench`` runs them."""
