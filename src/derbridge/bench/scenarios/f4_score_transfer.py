"""F4: a score snapshot of every device, from Asset Hub to the DERMS (timed on the season's world)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from derbridge.bench.core import (
    Result,
    bare_insert_baseline,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
)
from derbridge.bench.scenarios.common import SETTLE_TIMEOUT, BenchFailure, expect_ok, make_result, scenario_stopwatch
from derbridge.derms.adapters import tables as dm
from derbridge.embedded import EmbeddedSystem
from derbridge.settings import Settings


async def transfer_scores(system: EmbeddedSystem, devices: int) -> dict[str, Any]:
    body = expect_ok(await system.client.post("/assethub/v1/score-transfers"), "score transfer")
    await system.settle(timeout=SETTLE_TIMEOUT)
    async with system.runtime.async_engine("derms").connect() as connection:
        current = (
            await connection.execute(select(dm.score_snapshots).where(dm.score_snapshots.c.is_current.is_(True)))
        ).first()
    if current is None or current.row_count != devices:
        raise BenchFailure(f"the DERMS did not load a {devices:,}-row snapshot: {current} after {body}")
    return body


async def f4_score_transfer(settings: Settings, system: EmbeddedSystem, devices: int, quick: bool) -> Result:
    """F4, timed: compute, write, store, deliver, verify and load a score snapshot of every device."""
    progress(f"F4: transferring {devices:,} scores")
    reset_peak_rss()
    with scenario_stopwatch(settings, "f4-score-transfer") as watch:
        body = await transfer_scores(system, devices)
    peak = peak_rss_mb()
    postgres = settings.database_url("assethub").startswith("postgresql")
    return make_result(
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
