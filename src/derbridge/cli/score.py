"""``derbridge score transfer``: device scores now."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.cli.common import (
    ExitCode,
    fail,
    out,
    system_call,
    working,
)

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

score_app = typer.Typer(
    help="Device scores: how well each device is expected to respond to events.", no_args_is_help=True
)


@score_app.command("transfer")
def score_transfer_now(
    as_json: Annotated[bool, typer.Option("--json", help="Print the transfer's report as JSON.")] = False,
) -> None:
    """Compute every active device's score now and send the file to the DERMS (the bridge delivers it)."""
    from derbridge.assethub.services.score_transfer import TransferBusy, transfer_now

    async def work(runtime: Runtime) -> Any:
        return await transfer_now(runtime, runtime.clock.now())

    try:
        with working("scoring every active device and writing the file"):
            report = system_call(work)
    except TransferBusy:
        fail(
            "another score transfer is running (in this or another process): try again when it ends", ExitCode.CONFLICT
        )
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
