"""F2: agent status checks one after another, each from the API call to the answer in Asset Hub."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from derbridge.bench.core import (
    Baseline,
    Result,
    Stopwatch,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
    scaled,
)
from derbridge.bench.scenarios.common import (
    NOW,
    BenchFailure,
    close_worker,
    embedded_system,
    expect_ok,
    make_result,
    scenario_stopwatch,
    seeded_world,
    trivial_app,
    up_worker,
)
from derbridge.bench.world import accepted_devices, report_online
from derbridge.settings import Settings


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def f2_status_check(settings: Settings, workdir: Path, quick: bool) -> Result:
    """Agent status checks one after another, each timed from the API call to the answer stored in Asset
    Hub, with the bridge running as under ``derbridge up``."""
    devices, checks = scaled(10_000, quick), scaled(500, quick)
    async with embedded_system(settings) as system:
        await seeded_world(system, workdir, devices)
        table = accepted_devices(workdir / "utility", devices)
        await report_online(system.client, table, NOW)
        keys = list(zip(table.column("head_end_system").to_pylist(), table.column("nic_id").to_pylist(), strict=True))
        stop = asyncio.Event()
        worker = up_worker(system)
        running = asyncio.create_task(worker.run(stop))
        latencies: list[float] = []
        progress(f"F2: {checks:,} status checks")
        reset_peak_rss()
        try:
            with scenario_stopwatch(settings, "f2-status-check") as watch:
                for i in range(checks):
                    head, nic = keys[(i * 7919) % len(keys)]
                    started = time.perf_counter()
                    check = expect_ok(
                        await system.client.post(
                            "/assethub/v1/status-checks",
                            json={"head_end_system": head, "nic_id": nic, "requested_by": "agent-bench"},
                        ),
                        "status check",
                    )
                    while check["status"] == "OPEN":
                        await asyncio.sleep(0.001)
                        check = expect_ok(
                            await system.client.get(f"/assethub/v1/status-checks/{check['check_id']}"), "status check"
                        )
                    latencies.append(time.perf_counter() - started)
                    if check["status"] != "ANSWERED":
                        raise BenchFailure(f"status check ended {check['status']}: {check}")
            peak = peak_rss_mb()
        finally:
            stop.set()
            await running
            await close_worker(worker)
    baseline_latencies: list[float] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=trivial_app()), base_url="http://derbridge.local"
    ) as client:
        with Stopwatch() as trivial:
            for _ in range(checks):
                started = time.perf_counter()
                expect_ok(await client.post("/trivial", json={}), "trivial endpoint")
                baseline_latencies.append(time.perf_counter() - started)
    ms = 1000.0
    return make_result(
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
            "cpu_seconds": round(watch.cpu_seconds, 2),
        },
    )
