"""``derbridge bench``: the benchmarks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.cli.common import (
    ExitCode,
    err,
    fail,
)

if TYPE_CHECKING:
    pass


def bench(
    scenario: Annotated[
        list[str] | None, typer.Argument(help="Scenarios to run, by name (default: all of them).")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Every size divided by ten (what CI runs).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Only the JSON objects on stdout, one per line.")] = False,
) -> None:
    """Measure derbridge's speed against its targets: each scenario in a fresh process on throw-away
    databases, next to a baseline measured in the same run; one JSON object per scenario and backend.

    PostgreSQL and RabbitMQ runs need DERBRIDGE_BENCH_POSTGRES_URL / DERBRIDGE_BENCH_AMQP_URL (or the test
    URLs); without them they are reported as skipped."""
    from derbridge.bench.run import failed, plan, run_all

    try:
        planned = plan(scenario)
    except KeyError as error:
        fail(str(error.args[0]), ExitCode.USAGE)

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
        raise typer.Exit(ExitCode.FAILED)
