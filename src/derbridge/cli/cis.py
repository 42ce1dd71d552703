"""``derbridge cis import``: the CIS extract into both systems."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from derbridge.cli.common import (
    MAX_REJECTIONS_SHOWN,
    ExitCode,
    err,
    fail,
    load_settings,
    out,
    progress_bar,
)

if TYPE_CHECKING:
    from derbridge.settings import Settings

cis_app = typer.Typer(help="The CIS extract: import customers into both systems.", no_args_is_help=True)


@cis_app.command("import")
def cis_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CIS extract (CSV).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts per system as JSON.")] = False,
) -> None:
    """Load a CIS extract into Asset Hub and the DERMS: upsert by CIS ids, bulk, idempotent.

    Exit status: 0 when every row loaded, 1 when some rows were rejected (the others are loaded),
    2 when the file is not a CIS extract (nothing is loaded).
    """
    from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
    from derbridge.cis.extract import ExtractHeaderError
    from derbridge.cis.importer import import_extract
    from derbridge.derms.adapters.cis_loader import DermsCisLoader
    from derbridge.infra.metrics import CIS_ROWS
    from derbridge.runtime import Runtime, ensure_migrated

    settings = load_settings()
    ensure_migrated(settings)
    runtime = Runtime(settings)
    started = time.perf_counter()
    try:
        loaders = [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]
        with progress_bar() as progress:
            task = progress.add_task(f"importing {file.name}", total=file.stat().st_size)
            report = import_extract(file, loaders, on_progress=lambda done: progress.update(task, completed=done))
    except ExtractHeaderError as error:
        fail(f"{file} is not a CIS extract: {error}. Nothing was loaded.", ExitCode.USAGE)
    finally:
        runtime.close_sync()
    woken = _announce_accounts(settings, report.loaded_account_ids.get("derms", set()))
    seconds = time.perf_counter() - started
    if woken:
        err.print(f"{woken} parked messages were waiting for these customers: delivered again now")
    for system, counts in report.systems.items():
        for result in ("inserted", "updated", "unchanged", "rejected"):
            CIS_ROWS.labels(system, result).inc(getattr(counts, result))

    if report.rejected:
        table = Table(title=f"{len(report.rejected):,} rejected rows (not loaded)", title_justify="left")
        table.add_column("line", justify="right")
        table.add_column("column")
        table.add_column("reason")
        for row in report.rejected[:MAX_REJECTIONS_SHOWN]:
            table.add_row(str(row.line), row.column or "-", row.reason)
        if len(report.rejected) > MAX_REJECTIONS_SHOWN:
            table.caption = f"and {len(report.rejected) - MAX_REJECTIONS_SHOWN:,} more"
        err.print(table)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    else:
        table = Table(title=f"CIS import of {file.name} in {seconds:.1f} s")
        for column in ("system", "read", "inserted", "updated", "unchanged", "rejected"):
            table.add_column(column, justify="left" if column == "system" else "right")
        for system, counts in report.systems.items():
            d = counts.as_dict()
            table.add_row(system, *(f"{d[k]:,}" for k in ("read", "inserted", "updated", "unchanged", "rejected")))
        out.print(table)
    if report.rejected:
        raise typer.Exit(ExitCode.FAILED)


def _announce_accounts(settings: Settings, account_ids: set[str]) -> int:
    """Wake the bridge's messages parked for customers this import brought (F3 syncs waiting for P0)."""
    if not account_ids:
        return 0
    import asyncio

    from derbridge.bridge.tracking import Tracker
    from derbridge.derms.services.enrollment_sync import cis_account_conditions
    from derbridge.runtime import Runtime

    async def announce() -> int:
        runtime = Runtime(settings)
        try:
            return await Tracker(runtime.async_engine("bridge")).wake(cis_account_conditions(account_ids))
        finally:
            await runtime.aclose()

    return asyncio.run(announce())
