"""CIS import: an extract of 1,000,000 customers into both systems (P0)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from derbridge.bench.core import (
    Result,
    bare_insert_baseline,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
    scaled,
)
from derbridge.bench.scenarios.common import BenchFailure, make_result, scenario_stopwatch
from derbridge.bench.world import generate
from derbridge.cis.importer import import_extract
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from derbridge.usecases.cis_import import loaders as cis_loaders

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
    loaders = cis_loaders(runtime)
    progress(f"CIS: importing {utility.cis_rows:,} rows")
    reset_peak_rss()
    with scenario_stopwatch(settings, "cis-import") as watch:
        report = await asyncio.to_thread(import_extract, utility.cis_extract, loaders)
    peak = peak_rss_mb()
    runtime.close_sync()
    counts = report.as_dict()
    if counts["assethub"]["inserted"] < customers:
        raise BenchFailure(f"the import inserted too little: {counts}")
    return make_result(
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
