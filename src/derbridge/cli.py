"""The ``derbridge`` command line: one entry point for every component.

Progress bars and tables go to stderr, so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from derbridge import __version__
from derbridge.edge.cli import edge_app as _edge_app
from derbridge.infra.problems import ProblemError
from derbridge.settings import Settings
from derbridge.sim.cli import sim_app as _sim_app

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

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
assethub_app = typer.Typer(help="Asset Hub: enrollments and device status checks.", no_args_is_help=True)
app.add_typer(assethub_app, name="assethub")
derms_app = typer.Typer(help="The DERMS: program events.", no_args_is_help=True)
app.add_typer(derms_app, name="derms")
event_app = typer.Typer(help="Program events: create (and reserve devices), cancel before start.", no_args_is_help=True)
derms_app.add_typer(event_app, name="event")
score_app = typer.Typer(help="Device scores (F4).", no_args_is_help=True)
app.add_typer(score_app, name="score")
contracts_app = typer.Typer(help="The message contracts between the systems.", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
messages_app = typer.Typer(help="Messages between the systems: find, follow, replay, count.", no_args_is_help=True)
app.add_typer(messages_app, name="messages")
app.add_typer(_edge_app, name="edge")
app.add_typer(_sim_app, name="sim")

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


@contracts_app.command("asyncapi")
def contracts_asyncapi(
    out_file: Annotated[
        Path | None,
        typer.Option("--out", dir_okay=False, help="Write the document to this file instead of printing it."),
    ] = None,
) -> None:
    """The AsyncAPI 3.0 document of every bridge message (channels, messages, operations, schemas), as JSON."""
    from derbridge.contracts.asyncapi import build_asyncapi, render

    text = render(build_asyncapi(__version__))
    if out_file is None:
        sys.stdout.write(text)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    err.print(f"wrote {out_file}", markup=False, highlight=False)


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
        raise typer.Exit(1)


def _announce_accounts(settings: Settings, account_ids: set[str]) -> int:
    """Wake the bridge's messages parked for customers this import brought (F3 syncs waiting for P0)."""
    if not account_ids:
        return 0
    import asyncio

    from derbridge.derms.services.enrollment_sync import announce_cis_accounts
    from derbridge.runtime import Runtime

    async def announce() -> int:
        runtime = Runtime(settings)
        try:
            return await announce_cis_accounts(runtime, account_ids)
        finally:
            await runtime.aclose()

    return asyncio.run(announce())


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
        create_asgi(Runtime(settings), run_bridge=True, run_jobs=True),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
    )


@app.command()
def serve(
    component: Annotated[str, typer.Argument(help="assethub, derms or bridge.")],
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="Port (default 8080).")] = None,
) -> None:
    """Serve one component (the distributed mode): a system's API, or the bridge worker with its
    operations API. Several processes of each may run against the same databases and broker."""
    import uvicorn

    from derbridge.api.app import ALL_COMPONENTS, create_asgi
    from derbridge.runtime import Runtime, migrate_all

    if component not in ALL_COMPONENTS:
        err.print(f"[red]unknown component {component!r}[/]: choose one of {', '.join(ALL_COMPONENTS)}")
        raise typer.Exit(2)
    settings = load_settings()
    if host is not None:
        settings.server.host = host
    if port is not None:
        settings.server.port = port
    migrate_all(settings)
    err.print(f"derbridge {__version__}: {component} on http://{settings.server.host}:{settings.server.port}")
    uvicorn.run(
        create_asgi(
            Runtime(settings), components=[component], run_bridge=component == "bridge", run_jobs=component != "bridge"
        ),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        access_log=False,
    )


# --- systems: one operation each, run against the system's database ---------------------------------


def _system_call(work: Callable[[Runtime], Awaitable[Any]]) -> Any:
    """Run ``work(runtime)`` against the configured systems (migrated first); problems become messages."""
    import asyncio

    from derbridge.assethub import flows as assethub_flows
    from derbridge.derms import flows as derms_flows
    from derbridge.runtime import Runtime, migrate_all

    settings = load_settings()
    migrate_all(settings)
    assethub_flows.load()
    derms_flows.load()

    async def run() -> Any:
        from derbridge.api.app import configure_flows

        runtime = Runtime(settings)
        configure_flows(runtime, "assethub")
        configure_flows(runtime, "derms")
        try:
            return await work(runtime)
        finally:
            await runtime.aclose()

    try:
        return asyncio.run(run())
    except ProblemError as problem:
        err.print(f"[red]{problem.title}:[/] {problem.detail}")
        for error in problem.errors or []:
            err.print(f"  {error.field}: {error.message}")
        raise typer.Exit(1 if problem.status != 404 else 3) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


@assethub_app.command("status-check")
def assethub_status_check(
    head_end_system: Annotated[str, typer.Argument(help="e.g. ECOBEE")],
    nic_id: Annotated[str, typer.Argument(help="The device's id at its head end.")],
    requested_by: Annotated[str, typer.Option(help="Who asks (kept with the check).")] = "cli",
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the DERMS's answer.")] = 15.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask the DERMS for a device's latest communication status (F2) and wait for the answer. The bridge
    must be running (``derbridge up``) to carry the question and the answer."""
    from derbridge.assethub.services.status_checks import run_status_check

    async def work(runtime: Runtime) -> Any:
        return await run_status_check(runtime, head_end_system, nic_id, requested_by=requested_by, timeout_seconds=wait)

    check = _system_call(work)
    if as_json:
        _print_json(check)
        return
    if check["status"] == "OPEN":
        out.print(f"check {check['check_id']} is still open after {wait:.0f} s: is the bridge running (derbridge up)?")
        raise typer.Exit(4)
    out.print(
        f"check {check['check_id']}: {check['status']} — {check.get('result')} "
        f"{check.get('communication_status')}, last seen {check.get('last_communication_at')} "
        f"(source {check.get('source')}){' — ' + str(check['detail']) if check.get('detail') else ''}"
    )


@assethub_app.command("unenroll")
def assethub_unenroll(
    enrollment_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why, kept with the transition.")] = "unenrolled by an operator",
) -> None:
    """Unenroll an ACTIVE enrollment: its devices become unavailable in the DERMS (F3)."""
    from derbridge.assethub.services.enrollment_sync import unenroll

    async def work(runtime: Runtime) -> Any:
        return await unenroll(runtime.async_engine("assethub"), enrollment_id, reason)

    change = _system_call(work)
    out.print(
        f"{change.enrollment_id}: {change.state.value}; "
        f"sync {change.sync.sync_id} (sequence {change.sync.sequence}) sent"
    )


@assethub_app.command("replace-device")
def assethub_replace_device(
    enrollment_id: Annotated[str, typer.Argument()],
    old_head_end: Annotated[str, typer.Option(help="The replaced device's head-end system.")],
    old_nic_id: Annotated[str, typer.Option(help="The replaced device's id at its head end.")],
    new_head_end: Annotated[str, typer.Option()],
    new_nic_id: Annotated[str, typer.Option()],
    manufacturer: Annotated[str, typer.Option()],
    model: Annotated[str, typer.Option()],
    serial_no: Annotated[str, typer.Option()],
    device_type: Annotated[str, typer.Option()] = "THERMOSTAT",
) -> None:
    """Replace an ACTIVE enrollment's device: the swap reaches the DERMS atomically (F3)."""
    from pydantic import ValidationError

    from derbridge.assethub.services.enrollment_sync import DeviceKey, ReplacementDevice, replace_device

    try:
        old = DeviceKey(head_end_system=old_head_end, nic_id=old_nic_id)
        new = ReplacementDevice(
            head_end_system=new_head_end,
            nic_id=new_nic_id,
            device_type=device_type,
            manufacturer=manufacturer,
            model=model,
            serial_no=serial_no,
        )
    except ValidationError as error:
        err.print(f"[red]bad device:[/] {error}")
        raise typer.Exit(2) from None

    async def work(runtime: Runtime) -> Any:
        return await replace_device(runtime.async_engine("assethub"), enrollment_id, old, new)

    change = _system_call(work)
    out.print(
        f"{change.enrollment_id}: device replaced; sync {change.sync.sync_id} (sequence {change.sync.sequence}) sent"
    )


@score_app.command("transfer")
def score_transfer_now(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Compute every active device's score now and send the file to the DERMS (F4; the bridge delivers)."""
    from derbridge.assethub.services.score_transfer import TransferBusy, transfer_now

    async def work(runtime: Runtime) -> Any:
        return await transfer_now(runtime)

    try:
        report = _system_call(work)
    except TransferBusy:
        err.print("another score transfer is running (in this or another process); try again when it ends")
        raise typer.Exit(1) from None
    if as_json:
        sys.stdout.write(report.model_dump_json() + "\n")
        return
    if report.status == "nothing-to-score":
        out.print("no ACTIVE program: nothing to score")
        return
    out.print(
        f"{report.row_count:,} device scores ({report.eligible_count:,} eligible) for {', '.join(report.programs)}: "
        f"file {report.file_id} sent as message {report.message_id}"
    )


@event_app.command("create")
def derms_event_create(
    program: Annotated[str, typer.Option(help="Program code.")],
    start: Annotated[datetime, typer.Option(help="Start, ISO 8601 (UTC unless an offset is given).")],
    end: Annotated[datetime, typer.Option(help="End, ISO 8601.")],
    event_type: Annotated[str, typer.Option("--type", help="ECONOMIC, EMERGENCY or DEVICE_TEST.")] = "ECONOMIC",
    devices: Annotated[int | None, typer.Option(min=1, help="Target: a number of devices.")] = None,
    kw: Annotated[float | None, typer.Option(min=0.001, help="Target: kW of expected shed.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create a program event and reserve the most eligible devices (F5); a shortfall is reported."""
    from pydantic import ValidationError

    from derbridge.derms.api.schemas import EventIn
    from derbridge.derms.services.events import create_event

    try:
        request = EventIn.model_validate(
            {
                "program_code": program,
                "event_type": event_type,
                "start_at": _aware(start),
                "end_at": _aware(end),
                "target_devices": devices,
                "target_kw": kw,
                "created_by": "cli",
            }
        )
    except ValidationError as error:
        err.print(f"[red]bad event:[/] {error}")
        raise typer.Exit(2) from None

    async def work(runtime: Runtime) -> Any:
        return await create_event(runtime.async_engine("derms"), request, runtime.settings.derms_instance_id)

    event = _system_call(work)
    if as_json:
        _print_json(event)
        return
    out.print(
        f"event {event['event_id']} {event['status']}: reserved {event['reserved_count']:,} of "
        f"{event['candidate_count']:,} candidates ({event['reserved_kw']:.1f} kW); "
        f"shortfall {event['shortfall_devices']:,} devices / {event['shortfall_kw']:.1f} kW"
    )


@event_app.command("cancel")
def derms_event_cancel(
    event_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option(help="Why (sent to Asset Hub).")] = "cancelled by operator",
) -> None:
    """Cancel an event before its start and release its reservations (F6); refused once it has started."""
    from derbridge.derms.api.schemas import EventCancel
    from derbridge.derms.services.events import cancel_event

    async def work(runtime: Runtime) -> Any:
        return await cancel_event(runtime.async_engine("derms"), event_id, EventCancel(reason_text=reason))

    event = _system_call(work)
    out.print(f"event {event['event_id']} {event['status']} at {event['cancelled_at']}")


# --- messages ---------------------------------------------------------------------------------------


def _bridge_call(work: Callable[[Runtime, Any], Awaitable[Any]]) -> Any:
    """Run ``work(runtime, transport)`` against the bridge database and transport, then close them."""
    import asyncio

    from derbridge.bridge.assembly import build_transport
    from derbridge.bridge.worker import flow_queues
    from derbridge.runtime import Runtime, migrate_all

    settings = load_settings()
    migrate_all(settings)

    async def run() -> Any:
        runtime = Runtime(settings)
        transport = build_transport(runtime)
        try:
            await transport.start(list(flow_queues(settings.bridge.queue_prefix)))
            return await work(runtime, transport)
        finally:
            await transport.close()
            await runtime.aclose()

    try:
        return asyncio.run(run())
    except ProblemError as problem:
        err.print(f"[red]{problem.title}:[/] {problem.detail}")
        raise typer.Exit(1 if problem.status != 404 else 3) from None


@messages_app.command("list")
def messages_list(
    flow: Annotated[str | None, typer.Option(help="Only this flow (e.g. enrollment-sync).")] = None,
    state: Annotated[str | None, typer.Option(help="pending, delivered, retrying, parked or dead.")] = None,
    business_key: Annotated[str | None, typer.Option(help="e.g. an enrollment id, or HEAD_END:NIC_ID.")] = None,
    correlation_id: Annotated[str | None, typer.Option()] = None,
    since: Annotated[datetime | None, typer.Option(help="occurred at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, typer.Option(help="occurred before (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List messages, oldest first."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import MessageState
    from derbridge.contracts.envelope import Flow

    try:
        where = ops.MessageFilter(
            flow=Flow(flow) if flow else None,
            state=MessageState(state) if state else None,
            business_key=business_key,
            correlation_id=correlation_id,
            since=_aware(since),
            until=_aware(until),
        )
    except ValueError as error:
        err.print(f"[red]bad filter:[/] {error}")
        raise typer.Exit(2) from None

    async def work(runtime: Runtime, _transport: Any) -> list[Any]:
        items, _ = await ops.list_messages(runtime.async_engine("bridge"), where, limit=limit, after=None)
        return items

    items = _bridge_call(work)
    if as_json:
        sys.stdout.write(json.dumps([i.model_dump(mode="json") for i in items]) + "\n")
        return
    table = Table(title=f"{len(items)} messages", title_justify="left")
    for column in ("message_id", "flow", "type", "state", "attempts", "business_key", "occurred_at"):
        table.add_column(column)
    for item in items:
        table.add_row(
            item.message_id,
            item.flow,
            item.type,
            item.state.value,
            str(item.attempts),
            item.business_key,
            item.occurred_at.isoformat(timespec="seconds"),
        )
    out.print(table)


def _aware(value: datetime | None) -> datetime | None:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@messages_app.command("show")
def messages_show(
    message_id: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show a message's envelope and whole journey."""
    from derbridge.bridge import operations as ops

    async def work(runtime: Runtime, _transport: Any) -> Any:
        return await ops.show_message(runtime.async_engine("bridge"), message_id)

    journey = _bridge_call(work)
    if as_json:
        sys.stdout.write(journey.model_dump_json() + "\n")
        return
    out.print(f"[bold]{journey.message_id}[/] {journey.type} ({journey.flow}) {journey.source} → {journey.target}")
    out.print(
        f"state [bold]{journey.state.value}[/] after {journey.attempts} attempts; business key {journey.business_key}"
    )
    if journey.wake_on:
        out.print(f"waiting for {journey.wake_on}; next attempt {journey.next_attempt_at}")
    if journey.last_problem:
        out.print_json(json.dumps(journey.last_problem))
    table = Table(title="journey", title_justify="left")
    for column in ("#", "at", "outcome", "status", "ms", "detail"):
        table.add_column(column)
    for a in journey.journey:
        table.add_row(
            str(a.attempt),
            a.at.isoformat(timespec="milliseconds"),
            a.outcome,
            str(a.status_code or ""),
            str(a.duration_ms),
            a.detail or "",
        )
    out.print(table)


@messages_app.command("replay")
def messages_replay(message_ids: Annotated[list[str], typer.Argument(help="Dead or parked messages.")]) -> None:
    """Deliver dead or parked messages again, after their cause was fixed (no duplicate effect)."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import Tracker

    async def work(runtime: Runtime, transport: Any) -> None:
        tracker = Tracker(runtime.async_engine("bridge"))
        for message_id in message_ids:
            await ops.replay_message(tracker, transport, runtime.settings.bridge.queue_prefix, message_id)
            err.print(f"replayed {message_id}")

    _bridge_call(work)


@messages_app.command("stats")
def messages_stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per flow, how many messages are in each state."""
    from derbridge.bridge import operations as ops
    from derbridge.bridge.tracking import STATES, Tracker

    async def work(runtime: Runtime, _transport: Any) -> dict[str, dict[str, int]]:
        return await ops.message_stats(Tracker(runtime.async_engine("bridge")))

    stats = _bridge_call(work)
    if as_json:
        sys.stdout.write(json.dumps(stats) + "\n")
        return
    table = Table(title="messages per flow and state", title_justify="left")
    table.add_column("flow")
    for state in STATES:
        table.add_column(state.value, justify="right")
    for flow, counts in stats.items():
        table.add_row(flow, *(f"{counts.get(s.value, 0):,}" for s in STATES))
    out.print(table)


@messages_app.command("wake")
def messages_wake(conditions: Annotated[list[str], typer.Argument(help="e.g. cis-account:A0000001")]) -> None:
    """Wake parked messages waiting for these conditions: they are delivered again at once."""
    from derbridge.bridge.tracking import Tracker

    async def work(runtime: Runtime, _transport: Any) -> int:
        return await Tracker(runtime.async_engine("bridge")).wake(set(conditions))

    err.print(f"woke {_bridge_call(work)} parked messages")


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Customers of the synthetic utility.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    summary: Annotated[Path | None, typer.Option(help="Also write the summary as JSON to this file.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Keep the APIs up afterwards, for exploration.")] = False,
) -> None:
    """The whole loop on the embedded system (SQLite, sql transport, in DATA_DIR/demo, made anew):
    generate a utility, import customers, enroll, check, sync, score, run an event to its outcomes, cancel
    another, score again — then print what happened and check that the two systems agree."""
    import shutil

    from derbridge.demo import run_demo

    base = load_settings()
    demo_dir = base.data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    # The demo is the embedded system whatever else is configured: its own SQLite files, sql transport.
    settings = Settings(data_dir=demo_dir, api_token=base.api_token, log_level=base.log_level, log_json=base.log_json)
    from derbridge.infra.logging import configure_logging

    # The narration is the demo's output; per-message logs would bury it (they stay on for `up`).
    configure_logging("WARNING", json=base.log_json)
    result = run_demo(settings, customers=customers, seed=seed, console=out)
    if summary is not None:
        summary.write_text(json.dumps(result, indent=2) + "\n")
    healthy = all(result["consistency"].values()) and not any(
        counts["dead"] or counts["parked"] for counts in result["flows"].values()
    )
    if serve:
        import uvicorn

        from derbridge.api.app import create_asgi
        from derbridge.runtime import Runtime

        err.print(
            f"serving the demo's systems on http://{settings.server.host}:{settings.server.port} (Ctrl-C to stop)"
        )
        uvicorn.run(
            create_asgi(Runtime(settings), run_bridge=True, run_jobs=True),
            host=settings.server.host,
            port=settings.server.port,
            log_level="warning",
            access_log=False,
        )
    if not healthy:
        raise typer.Exit(1)


@app.command()
def bench(
    scenario: Annotated[
        list[str] | None, typer.Argument(help="Scenarios to run (default: all). See docs/performance.md.")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Every size divided by ten (what CI runs).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON objects on stdout, one per line.")] = False,
) -> None:
    """The benchmarks of quality.md, each in a fresh process on throw-away databases, each with its baseline
    measured in the same run: one JSON object per scenario and backend. PostgreSQL and RabbitMQ runs need
    DERBRIDGE_BENCH_POSTGRES_URL / DERBRIDGE_BENCH_AMQP_URL (or the test URLs); without them they are
    reported as skipped."""
    from derbridge.bench.run import failed, plan, run_all

    try:
        planned = plan(scenario)
    except KeyError as error:
        err.print(f"[red]{error.args[0]}[/]")
        raise typer.Exit(2) from error

    def emit(data: dict[str, Any]) -> None:
        print(json.dumps(data, ensure_ascii=False), flush=True)
        if as_json:
            return
        if "error" in data or "skipped" in data:
            err.print(f"[yellow]{data['scenario']} ({data['backend']}): {data.get('error') or data['skipped']}[/]")
            return
        ratio = f", ratio {data['ratio']:.2f} to the baseline" if data.get("ratio") is not None else ""
        err.print(
            f"[green]✓[/] {data['scenario']} ({data['database']}/{data['transport']}): {data['seconds']:.2f} s, "
            f"{data['rate']:,.0f} {data['unit']}/s{ratio}, peak {data['peak_rss_mb']:,.0f} MB — target {data['target']}"
        )

    err.print(f"running {len(planned)} benchmark(s){' (quick)' if quick else ''}; progress on stderr")
    results = run_all(scenario, quick=quick, emit=emit)
    if any(True for _ in failed(results)):
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()
