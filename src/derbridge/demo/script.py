"""The demo's script: the stages it drives, in order, on the embedded system through the public APIs and the
simulated aggregators' VENs. Each stage returns what it did; :mod:`derbridge.demo.report` makes the line a
person reads of it, and :mod:`derbridge.demo.checks` checks that it worked.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from derbridge.assethub.adapters import tables as ah
from derbridge.demo import checks, report
from derbridge.demo.checks import checked
from derbridge.demo.report import Narration
from derbridge.derms.adapters import tables as dm
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.embedded import EmbeddedSystem
from derbridge.infra.clock import SimulatedClock
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from derbridge.sim.aggregator import Aggregator, load_aggregators
from derbridge.sim.generator import ENROLLMENT_CLOSES, ENROLLMENT_OPENS, generate_utility
from derbridge.sim.ven import SimulatedVen
from derbridge.usecases import cis_import

DEMO_PROGRAM = "SUMMER-BYOT"
DEMO_START = datetime(2027, 6, 2, 14, tzinfo=UTC)
"""Business time when the demo begins: after the generated requests (March to May 2027)."""
SETTLE_TIMEOUT = 900.0
"""Seconds a stage may take to move its messages before the demo gives up (a stuck bridge, not a slow one)."""
EVENT_SHARE = 0.2
"""Share of the available devices the demo event asks for."""


@contextlib.asynccontextmanager
async def loopback(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port in this event loop (for the synchronous ``openadr3`` client);
    yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # the server could not start: raise why
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class Demo:
    """One run of the demo: its stages, narrated on ``narration``."""

    def __init__(self, settings: Settings, customers: int, seed: int, narration: Narration) -> None:
        self.settings = settings
        self.customers = customers
        self.seed = seed
        self.narration = narration
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []

    async def run(self) -> dict[str, Any]:
        """Every stage in order; the summary of what the systems hold at the end (printed, and returned)."""
        started = time.perf_counter()
        migrate_all(self.settings)
        utility_dir = self.settings.data_dir / "utility"
        generated = generate_utility(self.customers, self.seed, utility_dir, program_code=DEMO_PROGRAM)
        self.narration.done(
            "generate",
            generated.seconds,
            report.generated_line(generated.customers, generated.devices, len(generated.inventories)),
        )
        aggregators = load_aggregators(utility_dir / "aggregators")
        clock = SimulatedClock(DEMO_START)
        runtime = Runtime(self.settings, clock=clock)
        stage = self.narration.stage
        async with EmbeddedSystem(runtime) as system, loopback(system.app) as base:
            self.system = system
            self.clock = clock
            self.base = base
            self.vens: list[SimulatedVen] = []

            async def cis() -> tuple[dict[str, Any], int]:
                imported = await asyncio.to_thread(cis_import.import_into_both_systems, runtime, generated.cis_extract)
                return imported.as_dict(), await cis_import.wake_parked(runtime, imported)

            await stage("CIS import", cis, lambda done: report.cis_line(*done))
            await stage("programs", self.programs, report.programs_line)
            await stage("edge: VENs", lambda: self.connect_vens(aggregators), report.vens_line)
            await stage("enrollment requests", self.enroll, lambda done: report.enroll_line(*done))
            await stage("heartbeats & answers", self.heartbeats, lambda done: report.heartbeats_line(*done))
            await stage("device setup & sync", self.setup, lambda done: report.setup_line(*done))
            await stage("score transfer", self.scores, lambda done: report.scores_line(*done))
            await stage("event: reserve", lambda: self.event(cancel=False), lambda done: report.event_line(*done))
            await stage("event: cancel", lambda: self.event(cancel=True), lambda done: report.event_line(*done))
            await stage("score transfer again", self.scores, lambda done: report.scores_line(*done))
            summary = await checks.summary(runtime, [e["event_id"] for e in self.events], time.perf_counter() - started)
            for ven in self.vens:
                ven.close()
        runtime.close_sync()
        report.print_summary(self.narration.console, summary, self.settings.data_dir)
        return summary

    # --- stages ------------------------------------------------------------------------------------

    async def programs(self) -> str:
        """The demo's program created in Asset Hub, carried to the DERMS by program sync, mirrored on the VTN."""
        client = self.system.client
        checked(
            await client.post(
                "/assethub/v1/programs",
                json={
                    "program_code": DEMO_PROGRAM,
                    "name": "Summer bring-your-own-thermostat",
                    "status": "ACTIVE",
                    "enrollment_opens_at": ENROLLMENT_OPENS.isoformat(),
                    "enrollment_closes_at": (ENROLLMENT_CLOSES + timedelta(days=120)).isoformat(),
                },
            ),
            "creating the program in Asset Hub",
            201,
            409,
        )
        # Program sync carries it to the DERMS; then the edge mirrors it (and its status event) for the VENs.
        await self.system.settle()
        checked(await client.get(f"/derms/v1/programs/{DEMO_PROGRAM}"), "reading the synced program in the DERMS", 200)
        await self.system.run_jobs()
        return DEMO_PROGRAM

    async def connect_vens(self, aggregators: list[Aggregator]) -> int:
        """Each aggregator an edge client (as `derbridge edge client add` makes it), then a VEN; how many."""
        engine = self.system.runtime.sync_engine("derms")
        for aggregator in aggregators:
            head_end = aggregator.head_end_system
            made = await asyncio.to_thread(add_client, engine, f"{head_end} (demo)", head_end, Role.VEN)
            ven = SimulatedVen(
                self.base,
                made.client_id,
                made.client_secret,
                aggregator,
                random.Random(self.rng.random()),
            )
            await asyncio.to_thread(ven.connect)
            self.vens.append(ven)
        return len(self.vens)

    async def enroll(self) -> tuple[int, int]:
        """Bulk onboarding: every device a resource with its enrollment attributes, 1,000 per call; the
        resources sent and the enrollment requests the DERMS holds."""
        sent = 0
        for ven in self.vens:
            sent += await asyncio.to_thread(ven.onboard)
        requests = await checks.count_rows(self.system.runtime, "derms", dm.enrollment_requests)
        return sent, requests

    async def heartbeats(self) -> tuple[int, int, dict[str, int]]:
        """Every VEN reports its devices; the devices reported, those offline, and the requests' answers."""
        reported = 0
        for ven in self.vens:
            reported += await asyncio.to_thread(ven.heartbeat)
        await self.system.settle(timeout=SETTLE_TIMEOUT)
        offline = sum(1 for ven in self.vens for d in ven.aggregator.devices.values() if d.offline)
        answers = await checks.count_by(self.system.runtime, "derms", dm.enrollment_requests.c.answer)
        return reported, offline, answers

    async def setup(self) -> tuple[dict[str, int], int]:
        """The setup step checks each device; answers make enrollments ACTIVE, which syncs them to the DERMS.
        The enrollments by state and the devices available."""
        for _ in range(3):
            await self.system.settle(jobs=True, timeout=SETTLE_TIMEOUT)
        states = await checks.count_by(self.system.runtime, "assethub", ah.enrollments.c.state)
        available = await checks.available_devices(self.system.runtime)
        return states, available

    async def scores(self) -> tuple[int, str]:
        """A score transfer, to the DERMS's new current snapshot: its rows and file."""
        body = checked(await self.system.client.post("/assethub/v1/score-transfers"), "score transfer")
        await self.system.settle(timeout=SETTLE_TIMEOUT)
        current = await checks.current_snapshot(self.system.runtime, body)
        return current.row_count, current.file_id

    async def event(self, *, cancel: bool) -> tuple[dict[str, Any], int | None]:
        """An event for a share of the available devices, then either cancelled before it starts (withdrawn
        from the VTN; ``None`` outcomes) or run to its end with the VENs reporting outcomes (how many)."""
        client = self.system.client
        available = await checks.available_devices(self.system.runtime)
        start_at = self.clock.now() + timedelta(hours=2)
        end_at = start_at + timedelta(hours=3)
        event = checked(
            await client.post(
                "/derms/v1/events",
                json={
                    "program_code": DEMO_PROGRAM,
                    "event_type": "ECONOMIC",
                    "start_at": start_at.isoformat(),
                    "end_at": end_at.isoformat(),
                    "target_devices": max(1, int(available * EVENT_SHARE)),
                    "created_by": "demo",
                },
            ),
            "creating an event",
            201,
        )
        event_id = event["event_id"]
        await self.system.settle(timeout=SETTLE_TIMEOUT)
        if cancel:
            checked(
                await client.post(f"/derms/v1/events/{event_id}/cancel", json={"reason_text": "forecast changed"}),
                "cancelling the event",
            )
            await self.system.settle(jobs=True, timeout=SETTLE_TIMEOUT)  # the mirror withdraws it
            checks.check_withdrawn(event_id, [await asyncio.to_thread(ven.program_events) for ven in self.vens])
            self.events.append({"event_id": event_id})
            return event, None
        self.clock.set(start_at + timedelta(minutes=1))
        await self.system.settle(jobs=True, timeout=SETTLE_TIMEOUT)  # the mirror sends it to the VENs
        reported = 0
        for ven in self.vens:
            for vtn_event in await asyncio.to_thread(ven.program_events):
                if vtn_event["eventName"].endswith(event_id):
                    reported += await asyncio.to_thread(ven.report_outcomes, vtn_event)
        self.clock.set(end_at + timedelta(hours=24, minutes=1))  # past the closing grace
        await self.system.settle(jobs=True, timeout=SETTLE_TIMEOUT)
        self.events.append({"event_id": event_id})
        return event, reported
