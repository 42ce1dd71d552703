"""``derbridge demo``: the whole loop on the embedded default, narrated stage by stage.

Today's stages: generate a synthetic utility, import its CIS extract into both systems, set up the demo
program in both through their public APIs, and show what each system holds. The flows (enrollment,
status checks, sync, scores, events, outcomes) join as they land.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import func, select

from derbridge.api.app import create_app
from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.cis.importer import import_extract
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.infra.db import utcnow
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from derbridge.sim.generator import ENROLLMENT_CLOSES, ENROLLMENT_OPENS, generate_utility

DEMO_PROGRAM = "SUMMER-BYOT"


async def _ensure_programs(runtime: Runtime) -> None:
    """Create the demo program in both systems through their APIs (an existing one is kept)."""
    token = runtime.settings.resolved_api_token()
    transport = httpx.ASGITransport(app=create_app(runtime))
    now = utcnow()
    async with httpx.AsyncClient(
        transport=transport, base_url="http://derbridge", headers={"Authorization": f"Bearer {token}"}
    ) as client:
        for path, body in (
            (
                "/assethub/v1/programs",
                {
                    "program_code": DEMO_PROGRAM,
                    "name": "Summer bring-your-own-thermostat",
                    "status": "ACTIVE",
                    # Open now, and over the season the generated requests are dated in.
                    "enrollment_opens_at": min(now - timedelta(days=30), ENROLLMENT_OPENS).isoformat(),
                    "enrollment_closes_at": max(now + timedelta(days=335), ENROLLMENT_CLOSES).isoformat(),
                },
            ),
            ("/derms/v1/programs", {"program_code": DEMO_PROGRAM, "name": "Summer bring-your-own-thermostat"}),
        ):
            response = await client.post(path, json=body)
            if response.status_code not in (201, 409):
                raise RuntimeError(f"creating the demo program at {path} failed: {response.text}")


def _count(runtime: Runtime, system: str, table: Any, *where: Any) -> int:
    engine = runtime.sync_engine("assethub" if system == "assethub" else "derms")
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)


def run_demo(
    settings: Settings,
    *,
    customers: int,
    seed: int,
    console: Console,
    progress: Callable[[], Progress],
) -> dict[str, Any]:
    """Run the demo and return its summary (what ``--summary`` writes)."""
    started = time.perf_counter()
    stages: list[tuple[str, float, str]] = []
    migrate_all(settings)
    runtime = Runtime(settings)
    utility_dir = settings.data_dir / "utility"

    stage_start = time.perf_counter()
    with progress() as bar:
        tasks: dict[str, Any] = {}

        def on_generate(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        generated = generate_utility(customers, seed, utility_dir, program_code=DEMO_PROGRAM, progress=on_generate)
    stages.append(
        (
            "generate",
            time.perf_counter() - stage_start,
            f"{generated.customers:,} customers, {generated.devices:,} devices at "
            f"{len(generated.inventories)} aggregators",
        )
    )

    stage_start = time.perf_counter()
    loaders = [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]
    with progress() as bar:
        extract = generated.cis_extract
        task = bar.add_task("CIS import", total=extract.stat().st_size)
        report = import_extract(extract, loaders, on_progress=lambda done: bar.update(task, completed=done))
    counts = report.as_dict()
    stages.append(
        (
            "CIS import",
            time.perf_counter() - stage_start,
            ", ".join(f"{system}: {c['inserted']:,} new, {c['unchanged']:,} unchanged" for system, c in counts.items()),
        )
    )

    stage_start = time.perf_counter()
    asyncio.run(_ensure_programs(runtime))
    stages.append(("programs", time.perf_counter() - stage_start, f"{DEMO_PROGRAM} active in both systems"))

    holdings = {
        "assethub": {
            "persons": _count(runtime, "assethub", ah.persons),
            "accounts": _count(runtime, "assethub", ah.accounts),
            "accounts_active": _count(runtime, "assethub", ah.accounts, ah.accounts.c.status == "ACTIVE"),
            "premises": _count(runtime, "assethub", ah.premises),
            "service_points": _count(runtime, "assethub", ah.service_points),
            "programs": _count(runtime, "assethub", ah.programs),
        },
        "derms": {
            "contacts": _count(runtime, "derms", dm.contacts),
            "customers": _count(runtime, "derms", dm.customers),
            "customers_active": _count(runtime, "derms", dm.customers, dm.customers.c.status == "ACTIVE"),
            "locations": _count(runtime, "derms", dm.locations),
            "programs": _count(runtime, "derms", dm.programs),
        },
    }
    runtime.close_sync()
    seconds = time.perf_counter() - started

    stage_table = Table(title="derbridge demo", title_justify="left")
    stage_table.add_column("stage")
    stage_table.add_column("seconds", justify="right")
    stage_table.add_column("result")
    for name, took, what in stages:
        stage_table.add_row(name, f"{took:.2f}", what)
    console.print(stage_table)
    held = Table(title="what each system holds", title_justify="left")
    held.add_column("system")
    held.add_column("records")
    for system, figures in holdings.items():
        held.add_row(system, ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in figures.items()))
    console.print(held)
    console.print(
        f"Aggregator inventories waiting to enroll {generated.requests:,} requests: {utility_dir / 'aggregators'}\n"
        f"Explore: derbridge --data-dir {settings.data_dir} up  (then /assethub/v1/docs and /derms/v1/docs)\n"
        f"Done in {seconds:.1f} s."
    )
    return {
        "cis_import": counts,
        "holdings": holdings,
        "generated": {
            "customers": generated.customers,
            "devices": generated.devices,
            "requests": generated.requests,
            "rejected_requests": generated.rejected_requests,
        },
        "seconds": round(seconds, 3),
    }
