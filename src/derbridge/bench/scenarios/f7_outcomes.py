"""F7: the outcomes of F5's event, reported by the aggregators to the edge VTN, until Asset Hub's history
has every one (the season's world)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from derbridge.assethub.adapters import tables as ah
from derbridge.bench.core import (
    Result,
    bare_insert_baseline,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
)
from derbridge.bench.scenarios.common import (
    EDGE,
    SETTLE_TIMEOUT,
    BenchFailure,
    count_rows,
    expect_ok,
    make_result,
    scenario_stopwatch,
)
from derbridge.derms.adapters import tables as dm
from derbridge.derms.services.events import advance_lifecycle
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.edge.tables import edge_objects
from derbridge.embedded import EmbeddedSystem
from derbridge.infra.clock import SimulatedClock
from derbridge.settings import Settings
from derbridge.sim.ven import outcome_payloads

REPORT_SIZE = 10_000
"""Resources per OpenADR report in F7 (about 2.5 MB of JSON: well under the server's body limit)."""


@dataclass
class _Reporter:
    """An aggregator as the edge knows it: its VEN client's token, its ven, and its resources (by nic id)."""

    head_end_system: str
    headers: dict[str, str]
    ven_id: str
    nics: list[str]


async def _onboard_reporters(system: EmbeddedSystem, event_id: str) -> list[_Reporter]:
    """Set-up: one VEN client per head end holding the event's devices, its ven, and every reserved device
    registered as a resource (named by its nic id), through the VTN's API (``/resources/batch``)."""
    async with system.runtime.async_engine("derms").connect() as connection:
        reserved = (
            await connection.execute(
                select(dm.devices.c.head_end_system, dm.devices.c.nic_id)
                .join(dm.reservations, dm.reservations.c.device_id == dm.devices.c.device_id)
                .where(dm.reservations.c.event_id == event_id)
                .order_by(dm.reservations.c.rank)
            )
        ).all()
    by_head_end: dict[str, list[str]] = {}
    for head_end, nic in reserved:
        by_head_end.setdefault(head_end, []).append(nic)
    reporters = []
    for head_end, nics in sorted(by_head_end.items()):
        made = await asyncio.to_thread(
            add_client, system.runtime.sync_engine("derms"), f"{head_end} bench", head_end, Role.VEN
        )
        token = expect_ok(
            await system.client.post(
                f"{EDGE}/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": made.client_id,
                    "client_secret": made.client_secret,
                },
            ),
            "fetching a token",
        )["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        ven_id = expect_ok(
            await system.client.post(
                f"{EDGE}/vens", json={"objectType": "VEN_VEN_REQUEST", "venName": head_end.lower()}, headers=headers
            ),
            "registering the ven",
        )["id"]
        for start in range(0, len(nics), 5_000):
            resources = [
                {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": nic, "venID": ven_id}
                for nic in nics[start : start + 5_000]
            ]
            expect_ok(
                await system.client.post(f"{EDGE}/resources/batch", json={"resources": resources}, headers=headers),
                "onboarding resources",
            )
        reporters.append(_Reporter(head_end, headers, ven_id, nics))
    return reporters


async def _vtn_events(system: EmbeddedSystem, event_id: str) -> dict[str, str]:
    """The VTN's event mirroring the DERMS event, per ven (made by the ``edge-mirror`` job)."""
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(edge_objects.c.ven_id, edge_objects.c.id).where(
                edge_objects.c.object_type == "EVENT", edge_objects.c.event_id == event_id
            )
        )
        return {str(ven): str(vtn_event) for ven, vtn_event in rows.tuples()}


def _outcome_report(
    vtn_event: str, reporter: _Reporter, nics: Sequence[str], offset: int, start_at: datetime, end_at: datetime
) -> dict[str, Any]:
    """An OpenADR report of ``nics``' outcomes (as ``sim.ven`` writes them): one in ten overridden with a
    pre-emptive opt-out, the others took part and shed 1.25 kW."""
    resources = []
    for i, nic in enumerate(nics, start=offset):
        outcome: dict[str, Any] = (
            {"outcome": "IN_FLIGHT_OVERRIDE", "preemptive_opt_out": True}
            if i % 10 == 0
            else {
                "outcome": "SUCCESSFUL_PARTICIPATION",
                "participation_start_at": start_at.isoformat(),
                "participation_end_at": end_at.isoformat(),
                "shed_kw": 1.25,
            }
        )
        resources.append({"resourceName": nic, **outcome_payloads(outcome)})
    return {
        "eventID": vtn_event,
        "clientName": reporter.head_end_system.lower(),
        "reportName": f"{reporter.head_end_system} outcomes",
        "resources": resources,
    }


async def f7_outcomes(settings: Settings, system: EmbeddedSystem, event: dict[str, Any], quick: bool) -> Result:
    """F7, timed: an outcome for every device ``event`` reserved, reported by the aggregators to the edge
    (OpenADR reports to the VTN), recorded by the DERMS, the event closed by its job, until Asset Hub's
    history has every outcome."""
    count = int(event["reserved_count"])
    event_id = event["event_id"]
    progress("F7: the aggregators' resources at the edge first (set-up)")
    reporters = await _onboard_reporters(system, event_id)
    clock = system.clock
    assert isinstance(clock, SimulatedClock)
    start_at = datetime.fromisoformat(event["start_at"])
    end_at = datetime.fromisoformat(event["end_at"])
    clock.set(start_at + timedelta(minutes=1))
    await system.settle(jobs=True, timeout=SETTLE_TIMEOUT)  # the event starts and is mirrored to the VTN
    vtn_events = await _vtn_events(system, event_id)
    reports = [
        (
            reporter,
            _outcome_report(
                vtn_events[reporter.ven_id], reporter, reporter.nics[i : i + REPORT_SIZE], i, start_at, end_at
            ),
        )
        for reporter in reporters
        for i in range(0, len(reporter.nics), REPORT_SIZE)
    ]
    progress(f"F7: {count:,} outcomes in {len(reports)} OpenADR reports to the VTN")
    reset_peak_rss()
    with scenario_stopwatch(settings, "f7-outcomes") as watch:
        for reporter, report in reports:
            expect_ok(
                await system.client.post(f"{EDGE}/reports", json=report, headers=reporter.headers),
                "reporting outcomes",
                201,
            )
        watch.lap("reported")
        clock.set(end_at + timedelta(hours=24, minutes=1))  # past the closing grace
        # The event-lifecycle job's work, alone: settle(jobs=True) would also run every other job, and a
        # day later Asset Hub's daily score transfer is due — F4's work, not F7's.
        await advance_lifecycle(system.runtime.async_engine("derms"), clock.now())
        await system.settle(timeout=SETTLE_TIMEOUT)
        watch.lap("closed and recorded")
    peak = peak_rss_mb()
    recorded = await count_rows(
        system,
        "assethub",
        ah.participation_records,
        ah.participation_records.c.event_id == event_id,
        ah.participation_records.c.outcome.is_not(None),
    )
    reported = await count_rows(
        system, "derms", dm.outcomes, dm.outcomes.c.event_id == event_id, dm.outcomes.c.origin == "REPORTED"
    )
    if recorded != count or reported != count:
        raise BenchFailure(
            f"the DERMS took {reported:,} reported outcomes, Asset Hub recorded {recorded:,} of {count:,}"
        )
    return make_result(
        settings,
        "f7-outcomes",
        sizes={"outcomes": count, "reports": len(reports)},
        seconds=watch.seconds,
        rate=count / watch.seconds,
        unit="outcomes",
        target="≤ 10 s",
        baseline=bare_insert_baseline(settings, {"derms": ["outcomes"], "assethub": ["participation_records"]}),
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={"phases": watch.laps, "entry": f"POST {EDGE}/reports (OpenADR 3.1 VTN)"},
    )
