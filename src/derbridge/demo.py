"""``derbridge demo``: the whole loop on the embedded default, narrated stage by stage.

A synthetic utility is generated; its CIS extract goes into both systems; simulated aggregators — real
OpenADR 3.1 VENs on the ``openadr3`` client (:mod:`derbridge.sim.ven`), each an edge client made as
``derbridge edge client add`` makes one — take a token, register their VEN, onboard their devices through
the VTN's bulk ``/resources/batch`` (enrollment requests, F1) and heartbeat on the program's status event;
Asset Hub validates the requests, checks each device (F2) and syncs the active enrollments (F3); scores are
computed and transferred (F4); an event is created, reserved (F5), reaches the aggregators as OpenADR
events, which they answer with outcome reports (F7) before it closes; a second event is created and
cancelled (F6) and the aggregators see it withdrawn; scores are computed again from the new history. Every
message goes through the bridge (sql transport, SQLite). Business time is simulated, so a day of events
takes seconds.

The ``openadr3`` client is synchronous HTTP, so the embedded system is also served on a loopback port by
uvicorn in the demo's event loop, and the VENs' calls run in a worker thread (:func:`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shlex
import shutil
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.bridge import operations as ops
from derbridge.bridge.tracking import Tracker
from derbridge.cis.importer import import_extract
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.derms.services.enrollment_sync import cis_account_conditions
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.embedded import EmbeddedSystem
from derbridge.infra.clock import SimulatedClock
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from derbridge.sim.aggregator import Aggregator, load_aggregators
from derbridge.sim.generator import ENROLLMENT_CLOSES, ENROLLMENT_OPENS, generate_utility
from derbridge.sim.ven import SimulatedVen

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


class DemoFailure(RuntimeError):
    """A stage did not do what it must (an API refused, or the systems disagree)."""


def _check(response: httpx.Response, what: str, *ok: int) -> dict[str, Any]:
    if response.status_code not in (ok or (200, 201, 202)):
        raise DemoFailure(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


class Demo:
    """One run of the demo."""

    def __init__(self, settings: Settings, customers: int, seed: int, console: Console) -> None:
        self.settings = settings
        self.customers = customers
        self.seed = seed
        self.console = console
        self.rng = random.Random(seed)
        self.stages: list[tuple[str, float, str]] = []
        self.events: list[dict[str, Any]] = []

    async def stage(self, name: str, work: Callable[[], Awaitable[str]]) -> None:
        """Run one stage with a spinner, and keep its time and result line."""
        started = time.perf_counter()
        with self.console.status(f"[bold]{name}[/] …"):
            result = await work()
        took = time.perf_counter() - started
        self.stages.append((name, took, result))
        self.console.print(f"[green]✓[/] {name:<22} {took:6.2f} s  {result}")

    async def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        migrate_all(self.settings)
        utility_dir = self.settings.data_dir / "utility"
        generated = generate_utility(self.customers, self.seed, utility_dir, program_code=DEMO_PROGRAM)
        self.stages.append(
            (
                "generate",
                generated.seconds,
                f"{generated.customers:,} customers, "
                f"{generated.devices:,} devices at {len(generated.inventories)} aggregators",
            )
        )
        self.console.print(f"[green]✓[/] {'generate':<22} {generated.seconds:6.2f} s  {self.stages[-1][2]}")
        runtime = Runtime(self.settings)
        aggregators = load_aggregators(utility_dir / "aggregators")
        clock = SimulatedClock(DEMO_START)
        async with EmbeddedSystem(runtime, clock) as system, loopback(system.app) as base:
            self.system = system
            self.clock = clock
            self.base = base
            self.vens: list[SimulatedVen] = []

            async def cis() -> str:
                loaders = [
                    AssetHubCisLoader(runtime.sync_engine("assethub")),
                    DermsCisLoader(runtime.sync_engine("derms")),
                ]
                report = await asyncio.to_thread(import_extract, generated.cis_extract, loaders)
                woken = await Tracker(runtime.async_engine("bridge")).wake(
                    cis_account_conditions(report.loaded_account_ids["derms"])
                )
                counts = report.as_dict()
                return (
                    f"{counts['assethub']['inserted']:,} new rows in Asset Hub, "
                    f"{counts['derms']['inserted']:,} in the DERMS ({woken} parked messages woken)"
                )

            await self.stage("CIS import", cis)
            await self.stage("programs", self._programs)
            await self.stage("edge: VENs", lambda: self._vens(aggregators))
            await self.stage("enrollment requests", self._enroll)
            await self.stage("heartbeats & answers", self._heartbeats)
            await self.stage("device setup & sync", self._setup)
            await self.stage("score transfer", self._scores)
            await self.stage("event: reserve", lambda: self._event(cancel=False))
            await self.stage("event: cancel", lambda: self._event(cancel=True))
            await self.stage("score transfer again", self._scores)
            summary = await self._summary(time.perf_counter() - started)
            for ven in self.vens:
                ven.close()
        runtime.close_sync()
        self._print(summary)
        return summary

    # --- stages ------------------------------------------------------------------------------------

    async def _programs(self) -> str:
        client = self.system.client
        _check(
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
        _check(await client.get(f"/derms/v1/programs/{DEMO_PROGRAM}"), "reading the synced program in the DERMS", 200)
        await self.system.run_jobs()
        return f"{DEMO_PROGRAM} active in Asset Hub, synced to the DERMS, and on the VTN"

    async def _vens(self, aggregators: list[Aggregator]) -> str:
        # Each aggregator is an edge client (as `derbridge edge client add` makes it), then a VEN.
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
        return f"{len(self.vens)} aggregators hold a token and a VEN on the VTN"

    async def _enroll(self) -> str:
        # Bulk onboarding: every device a resource with its enrollment attributes, 1,000 per call.
        sent = 0
        for ven in self.vens:
            sent += await asyncio.to_thread(ven.onboard)
        requests = await self._count_rows("derms", dm.enrollment_requests)
        return f"{sent:,} resources onboarded through /resources/batch; {requests:,} enrollment requests forwarded"

    async def _heartbeats(self) -> str:
        reported = 0
        for ven in self.vens:
            reported += await asyncio.to_thread(ven.heartbeat)
        await self.system.settle(timeout=SETTLE_TIMEOUT)
        offline = sum(1 for ven in self.vens for d in ven.aggregator.devices.values() if d.offline)
        answers = await self._count_by("derms", dm.enrollment_requests.c.answer)
        return f"{reported:,} devices reported ({offline:,} offline); answered: " + ", ".join(
            f"{k} {v:,}" for k, v in sorted(answers.items())
        )

    async def _setup(self) -> str:
        # The setup step checks each device; answers make enrollments ACTIVE, which syncs them to the DERMS.
        for _ in range(3):
            await self.system.settle(jobs=True, timeout=SETTLE_TIMEOUT)
        states = await self._count_by("assethub", ah.enrollments.c.state)
        available = await self._count_rows(
            "derms", dm.device_availability, dm.device_availability.c.availability == "AVAILABLE"
        )
        return ", ".join(f"{k} {v:,}" for k, v in sorted(states.items())) + f"; {available:,} devices available"

    async def _scores(self) -> str:
        body = _check(await self.system.client.post("/assethub/v1/score-transfers"), "score transfer")
        await self.system.settle(timeout=SETTLE_TIMEOUT)
        async with self.system.runtime.async_engine("derms").connect() as connection:
            current = (
                await connection.execute(select(dm.score_snapshots).where(dm.score_snapshots.c.is_current.is_(True)))
            ).first()
        if current is None:
            raise DemoFailure(f"the DERMS has no current score snapshot after the transfer: {body}")
        return f"{current.row_count:,} device scores loaded as snapshot {current.file_id}"

    async def _event(self, *, cancel: bool) -> str:
        client = self.system.client
        available = await self._count_rows(
            "derms", dm.device_availability, dm.device_availability.c.availability == "AVAILABLE"
        )
        start_at = self.clock.now() + timedelta(hours=2)
        end_at = start_at + timedelta(hours=3)
        event = _check(
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
            _check(
                await client.post(f"/derms/v1/events/{event_id}/cancel", json={"reason_text": "forecast changed"}),
                "cancelling the event",
            )
            await self.system.settle(jobs=True, timeout=SETTLE_TIMEOUT)  # the mirror withdraws it
            seen = [await asyncio.to_thread(ven.program_events) for ven in self.vens]
            if any(e["eventName"].endswith(event_id) for events in seen for e in events):
                raise DemoFailure(f"an aggregator still sees cancelled event {event_id} on the VTN")
            self.events.append({"event_id": event_id})
            return (
                f"event {event_id} reserved {event['reserved_count']:,} devices, then cancelled before start; "
                "withdrawn from the VTN"
            )
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
        return (
            f"event {event_id} reserved {event['reserved_count']:,} of {event['candidate_count']:,} "
            f"candidates; {reported:,} outcomes reported through the VTN, the rest closed NON_RESPONSIVE"
        )

    # --- reading the systems -----------------------------------------------------------------------

    async def _reserved(self, event_id: str) -> list[tuple[str, str]]:
        async with self.system.runtime.async_engine("derms").connect() as connection:
            rows = await connection.execute(
                select(dm.devices.c.head_end_system, dm.devices.c.nic_id)
                .join(dm.reservations, dm.reservations.c.device_id == dm.devices.c.device_id)
                .where(dm.reservations.c.event_id == event_id, dm.reservations.c.status == "RESERVED")
            )
            return [(r.head_end_system, r.nic_id) for r in rows]

    async def _count_by(self, system: str, column: Any) -> dict[str, int]:
        async with self.system.runtime.async_engine(system).connect() as connection:  # type: ignore[arg-type]
            rows = await connection.execute(select(column, func.count()).group_by(column))
            return {str(k): int(v) for k, v in rows.tuples()}

    async def _count_rows(self, system: str, table: Any, *where: Any) -> int:
        async with self.system.runtime.async_engine(system).connect() as connection:  # type: ignore[arg-type]
            return int(await connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)

    async def _summary(self, seconds: float) -> dict[str, Any]:
        tracker = Tracker(self.system.runtime.async_engine("bridge"))
        flows = await ops.message_stats(tracker)
        enrollments = await self._count_by("assethub", ah.enrollments.c.state)
        checks: Counter[str] = Counter()
        async with self.system.runtime.async_engine("assethub").connect() as connection:
            for status, result, count in (
                await connection.execute(
                    select(ah.device_status_checks.c.status, ah.device_status_checks.c.result, func.count()).group_by(
                        ah.device_status_checks.c.status, ah.device_status_checks.c.result
                    )
                )
            ).tuples():
                checks["TIMED_OUT" if status == "TIMED_OUT" else str(result or status)] += int(count)
            latest = (
                await connection.execute(
                    select(ah.score_snapshots).order_by(ah.score_snapshots.c.generated_at.desc()).limit(1)
                )
            ).first()
        events = []
        for event in self.events:
            events.append(await self._event_summary(event["event_id"]))
        return {
            "flows": {
                flow: {k: counts[k] for k in ("pending", "delivered", "retrying", "parked", "dead")}
                for flow, counts in flows.items()
            },
            "enrollments": enrollments,
            "status_checks": dict(checks),
            "scores": {"rows": latest.row_count if latest else 0, "eligible": latest.eligible_count if latest else 0},
            "events": events,
            "consistency": await self._consistency(),
            "seconds": round(seconds, 3),
        }

    async def _event_summary(self, event_id: str) -> dict[str, Any]:
        async with self.system.runtime.async_engine("derms").connect() as connection:
            event = (
                await connection.execute(select(dm.program_events).where(dm.program_events.c.event_id == event_id))
            ).one()
        async with self.system.runtime.async_engine("assethub").connect() as connection:
            outcomes = await connection.execute(
                select(ah.participation_records.c.outcome, func.count())
                .where(ah.participation_records.c.event_id == event_id, ah.participation_records.c.outcome.is_not(None))
                .group_by(ah.participation_records.c.outcome)
            )
            outcome_counts = {str(k): int(v) for k, v in outcomes.tuples()}
        return {
            "event_id": event_id,
            "status": event.status,
            "requested": event.target_devices or 0,
            "reserved": event.reserved_count,
            "outcomes": outcome_counts,
        }

    async def _consistency(self) -> dict[str, bool]:
        """The checks the two systems must pass together at the end of the demo."""
        async with self.system.runtime.async_engine("assethub").connect() as connection:
            active = set(
                (
                    await connection.execute(
                        select(ah.devices.c.head_end_system, ah.devices.c.nic_id)
                        .join(ah.enrollment_devices, ah.enrollment_devices.c.device_id == ah.devices.c.device_id)
                        .join(ah.enrollments, ah.enrollments.c.enrollment_id == ah.enrollment_devices.c.enrollment_id)
                        .where(ah.enrollments.c.state == "ACTIVE", ah.enrollment_devices.c.removed_at.is_(None))
                    )
                ).tuples()
            )
        async with self.system.runtime.async_engine("derms").connect() as connection:
            available = set(
                (
                    await connection.execute(
                        select(dm.devices.c.head_end_system, dm.devices.c.nic_id)
                        .join(dm.device_availability, dm.device_availability.c.device_id == dm.devices.c.device_id)
                        .where(dm.device_availability.c.availability == "AVAILABLE")
                    )
                ).tuples()
            )
        cancelled_ok = completed_ok = True
        for event in self.events:
            summary = await self._event_summary(event["event_id"])
            async with self.system.runtime.async_engine("derms").connect() as connection:
                held = await connection.scalar(
                    select(func.count())
                    .select_from(dm.reservations)
                    .where(dm.reservations.c.event_id == event["event_id"], dm.reservations.c.status == "RESERVED")
                )
            async with self.system.runtime.async_engine("assethub").connect() as connection:
                records = (
                    await connection.execute(
                        select(ah.participation_records.c.status, ah.participation_records.c.outcome).where(
                            ah.participation_records.c.event_id == event["event_id"]
                        )
                    )
                ).all()
            if summary["status"] == "CANCELLED":
                cancelled_ok = cancelled_ok and held == 0 and all(r.status == "CANCELLED" for r in records)
            elif summary["status"] == "COMPLETED":
                completed_ok = (
                    completed_ok and len(records) == summary["reserved"] and all(r.outcome is not None for r in records)
                )
        return {
            "programs_match": await self._programs_match(),
            "active_enrollments_match_available_devices": active == available,
            "cancelled_event_released": cancelled_ok,
            "completed_event_has_every_outcome": completed_ok,
        }

    async def _programs_match(self) -> bool:
        """Every Asset Hub program is in the DERMS at its latest version, with its name, status and dispatch
        settings (program sync), and the DERMS has no program of its own."""
        async with self.system.runtime.async_engine("assethub").connect() as connection:
            mine = {
                (r.program_code, r.name, r.status, r.version, r.rules.get("expected_shed_kw", 1.0))
                for r in await connection.execute(select(ah.programs))
            }
        async with self.system.runtime.async_engine("derms").connect() as connection:
            theirs = {
                (r.program_code, r.name, r.status, r.version, r.expected_shed_kw)
                for r in await connection.execute(select(dm.programs))
            }
        return mine == theirs

    def _print(self, summary: dict[str, Any]) -> None:
        table = Table(title="messages per flow (from the bridge's tracking)", title_justify="left")
        table.add_column("flow")
        for state in ("pending", "delivered", "retrying", "parked", "dead"):
            table.add_column(state, justify="right")
        for flow, counts in summary["flows"].items():
            table.add_row(flow, *(f"{counts[s]:,}" for s in ("pending", "delivered", "retrying", "parked", "dead")))
        self.console.print(table)
        self.console.print(
            "enrollments: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["enrollments"].items())) + "\n"
            "status checks: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary["status_checks"].items())) + "\n"
            f"scores: {summary['scores']['rows']:,} rows, {summary['scores']['eligible']:,} eligible"
        )
        for event in summary["events"]:
            self.console.print(
                f"event {event['event_id']}: {event['status']}, {event['reserved']:,} reserved of "
                f"{event['requested']:,} asked; outcomes "
                + (", ".join(f"{k} {v:,}" for k, v in sorted(event["outcomes"].items())) or "none")
            )
        agree = all(summary["consistency"].values())
        failed = [k.replace("_", " ") for k, v in summary["consistency"].items() if not v]
        self.console.print(
            "[green]the two systems agree[/]" if agree else "[red]the two systems disagree:[/] " + ", ".join(failed)
        )
        # markup=False: a path with brackets is printed as it is, to be copied.
        self.console.print(
            f"Done in {summary['seconds']:.1f} s. Explore: "
            + shlex.join([*_how_to_run(), "--data-dir", str(self.settings.data_dir), "up"]),
            markup=False,
            highlight=False,
        )


def _how_to_run() -> list[str]:
    """The words that run this derbridge again from this shell, as typed: ``derbridge`` when that is what
    the shell finds on PATH, else the path of the running program (relative to the current directory when it
    is under it, e.g. ``.venv/bin/derbridge``), or ``python -m derbridge`` with this interpreter."""
    program = Path(sys.argv[0])
    if program.name == "__main__.py" or not program.exists():
        return [_as_typed(Path(sys.executable)), "-m", "derbridge"]
    found = shutil.which(program.name)
    if found is not None and Path(found).resolve() == program.resolve():
        return [program.name]
    return [_as_typed(program)]


def _as_typed(path: Path) -> str:
    """``path`` relative to the current directory when it is under it (still with a slash, so that the
    shell runs it as a path and not through PATH), else absolute."""
    absolute = path.absolute()
    try:
        relative = absolute.relative_to(Path.cwd())
    except ValueError:
        return str(absolute)
    return str(relative) if len(relative.parts) > 1 else f"./{relative}"


def run_demo(settings: Settings, *, customers: int, seed: int, console: Console) -> dict[str, Any]:
    """Run the demo and return its summary (what ``--summary`` writes)."""
    return asyncio.run(Demo(settings, customers, seed, console).run())
