"""The ``derbridge`` command line: one entry point for every component.

Progress bars and tables go to stderr, so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from derbridge import __version__
from derbridge.settings import Settings

app = typer.Typer(
    name="derbridge",
    help="Demand response between Asset Hub and a DERMS: both systems, the edge and the bridge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
cis_app = typer.Typer(help="The CIS extract: import customers into both systems.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The systems' databases.", no_args_is_help=True)
app.add_typer(cis_app, name="cis")
app.add_typer(config_app, name="config")
app.add_typer(db_app, name="db")

# soft_wrap: a message is one line in a log or a pipe, not cut at 80 columns.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class State:
    """What the global options set for the subcommands."""

    data_dir: Path | None = None


state = State()


def load_settings() -> Settings:
    """Settings from the environment and config file, with the global ``--data-dir`` on top."""
    if state.data_dir is not None:
        return Settings(data_dir=state.data_dir)
    return Settings()


def _version(value: bool) -> None:
    if value:
        out.print(f"derbridge {__version__}")
        raise typer.Exit


@app.callback()
def main_options(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", help="Where the embedded databases and files live (DERBRIDGE_DATA_DIR).", show_default="./var"
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="A TOML settings file (DERBRIDGE_CONFIG).", exists=True, dir_okay=False),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Global options."""
    state.data_dir = data_dir
    if config is not None:
        os.environ["DERBRIDGE_CONFIG"] = str(config)
    from derbridge.infra.logging import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, json=settings.log_json)


# --- config and databases -------------------------------------------------------------------------


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration as JSON, secrets masked."""
    out.print_json(json.dumps(load_settings().masked()))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate every system's database to the newest schema."""
    from derbridge.runtime import migrate_all

    settings = load_settings()
    migrate_all(settings)
    err.print("[green]databases are up to date[/]")


# --- synthetic utility ----------------------------------------------------------------------------


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=1, help="Customers with an enrollable account.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed writes the same files.")] = 42,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write into.")] = Path("utility"),
    program: Annotated[str, typer.Option(help="Program code the aggregators enroll into.")] = "SUMMER-BYOT",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Write a synthetic utility: a CIS extract and one device inventory per aggregator."""
    from derbridge.sim.generator import generate_utility

    with _progress() as progress:
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


# --- CIS import -----------------------------------------------------------------------------------


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )


MAX_REJECTIONS_SHOWN = 50


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
    from derbridge.runtime import Runtime, migrate_all

    settings = load_settings()
    migrate_all(settings)
    runtime = Runtime(settings)
    started = time.perf_counter()
    try:
        loaders = [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]
        with _progress() as progress:
            task = progress.add_task(f"importing {file.name}", total=file.stat().st_size)
            report = import_extract(file, loaders, on_progress=lambda done: progress.update(task, completed=done))
    except ExtractHeaderError as error:
        err.print(f"[red]refused:[/] {file}: {error}. Nothing was loaded.")
        raise typer.Exit(2) from None
    finally:
        runtime.close_sync()
    seconds = time.perf_counter() - started
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
        raise typer.Exit(1)


# --- serving --------------------------------------------------------------------------------------


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8080).")] = None,
) -> None:
    """Serve both systems' APIs in one process, with /healthz, /readyz and /metrics."""
    import uvicorn

    from derbridge.api.app import create_asgi
    from derbridge.runtime import Runtime, migrate_all

    settings = load_settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    migrate_all(settings)
    err.print(
        f"derbridge {__version__} on http://{settings.server.host}:{settings.server.port} "
        f"(Asset Hub: /assethub/v1/docs, DERMS: /derms/v1/docs); service token in "
        f"{settings.data_dir / 'api-token'}"
    )
    uvicorn.run(
        create_asgi(Runtime(settings)),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
    )


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Customers of the synthetic utility.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    summary: Annotated[Path | None, typer.Option(help="Also write the summary as JSON to this file.")] = None,
) -> None:
    """Generate a small utility, import its CIS extract into both systems, and show what each holds."""
    from derbridge.demo import run_demo

    result = run_demo(load_settings(), customers=customers, seed=seed, console=out, progress=_progress)
    if summary is not None:
        summary.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    """Console-script entry point."""
    app()
