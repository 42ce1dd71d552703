"""``derbridge generate``: a synthetic utility."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from derbridge.cli.common import (
    out,
    progress_bar,
)

if TYPE_CHECKING:
    from rich.progress import TaskID


def generate(
    customers: Annotated[int, typer.Option(min=1, help="Customers with an enrollable account.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same files.")] = 42,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write into.")] = Path("utility"),
    program: Annotated[str, typer.Option(help="Program code the aggregators enroll into.")] = "SUMMER-BYOT",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Write a synthetic utility: a CIS extract and one device inventory per aggregator."""
    from derbridge.sim.generator import generate_utility

    with progress_bar() as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        report = generate_utility(customers, seed, out_dir, program_code=program, progress=on_progress)
    summary = {
        "customers": report.customers,
        "cis_rows": report.cis_rows,
        "devices": report.devices,
        "requests": report.requests,
        "rejected_requests": report.rejected_requests,
        "devices_by_head_end": report.devices_by_head_end,
        "rejections_by_reason": report.rejections_by_reason,
        "cis_extract": str(report.cis_extract),
        "inventories": {k: str(v) for k, v in report.inventories.items()},
        "seconds": round(report.seconds, 3),
    }
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    table = Table(title=f"synthetic utility in {out_dir} ({report.seconds:.1f} s)")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("customers", f"{report.customers:,}")
    table.add_row("CIS extract rows", f"{report.cis_rows:,}")
    table.add_row("enrollment requests", f"{report.requests:,}")
    table.add_row("  of which must be rejected", f"{report.rejected_requests:,}")
    for head_end, count in sorted(report.devices_by_head_end.items()):
        table.add_row(f"devices at {head_end}", f"{count:,}")
    out.print(table)
