"""``derbridge demo``: the whole loop on the embedded system."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from derbridge.cli.common import (
    ExitCode,
    check_port_free,
    load_settings,
    out,
)

if TYPE_CHECKING:
    pass


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
    from derbridge.settings import Settings

    base = load_settings()
    if serve:  # before the demo's run, not after it: the port must be free to serve its systems at the end
        check_port_free(base.server.host, base.server.port)
    demo_dir = base.data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    # The demo is the embedded system whatever else is configured: its own SQLite files, sql transport.
    # Logs were configured by the global options (WARNING unless asked: the narration is the demo's output).
    settings = Settings(data_dir=demo_dir, api_token=base.api_token, log_level=base.log_level, log_json=base.log_json)
    result = run_demo(settings, customers=customers, seed=seed, console=out)
    if summary is not None:
        summary.write_text(json.dumps(result, indent=2) + "\n")
    healthy = all(result["consistency"].values()) and not any(
        counts["dead"] or counts["parked"] for counts in result["flows"].values()
    )
    if serve:
        from derbridge.cli.serving import run_server

        run_server(
            settings,
            f"serving the demo's systems on http://{settings.server.host}:{settings.server.port} (Ctrl-C to stop)",
        )
    if not healthy:
        raise typer.Exit(ExitCode.FAILED)
