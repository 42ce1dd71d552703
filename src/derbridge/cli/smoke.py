"""``derbridge smoke``: the post-deployment check (:mod:`derbridge.smoke` drives it; this module parses the
options and prints one line per step)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from derbridge.cli.common import ExitCode, err, fail, load_settings, out, print_json

if TYPE_CHECKING:
    from derbridge.smoke import Failure, StepResult

_EXIT_CODES = {
    "unreachable": ExitCode.UNREACHABLE,
    "refused": ExitCode.CONFLICT,
    "timeout": ExitCode.WAITING,
    "failed": ExitCode.FAILED,
    "wrong-url": ExitCode.USAGE,
}


def _exit_code(kind: Failure | None) -> ExitCode:
    return _EXIT_CODES.get(kind.value if kind is not None else "failed", ExitCode.FAILED)


def _service_token(given: str | None) -> str | None:
    """``--token``, else the configured service credential (DERBRIDGE_API_TOKEN, or the data dir's api-token
    file when there is one). Never a new one: a check must not write a token file on the operator's machine."""
    if given:
        return given
    settings = load_settings()
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    from derbridge.settings import API_TOKEN_FILE

    path = settings.data_dir / API_TOKEN_FILE
    return path.read_text().strip() if path.is_file() else None


def _line(result: StepResult) -> None:
    from rich.text import Text

    mark = Text("✓", style="green") if result.ok else Text("✗", style="bold red")
    name = ("clean-up: " if result.cleanup else "") + result.step
    out.print(Text.assemble(mark, f" {name:<28} {result.seconds:7.2f} s  ", result.detail))
    if not result.ok and result.check:
        out.print(Text.assemble("  check: ", result.check))


def smoke(
    assethub: Annotated[
        str, typer.Option(help="Asset Hub's URL: the server's root (http://host:8080) or its API (…/assethub/v1).")
    ],
    derms: Annotated[str, typer.Option(help="The DERMS's URL: the server's root or its API (…/derms/v1).")],
    vtn: Annotated[str, typer.Option(help="The edge VTN's URL: the server's root or its API (…/openadr3/3.1.0).")],
    token: Annotated[
        str | None,
        typer.Option(help="The service credential; default: DERBRIDGE_API_TOKEN, or the data dir's api-token file."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait, at each step, for a change to reach the other systems.")
    ] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole run as one JSON document.")] = False,
) -> None:
    """Check a running deployment through its public APIs: a test customer, program and aggregator client,
    one enrollment request on the VTN until ACTIVE in every system, a status check, a score transfer, an
    event and its cancellation — then undo all of it (records the domain keeps as history are left CLOSED,
    named SMOKE-…). One line per step; exit 0 when every step passed.

    Exit status otherwise: 5 a URL does not answer, 2 a URL answers but is not the API named, 6 a
    credential or a rule refused, 4 a change did not reach the other side in time, 1 an unexpected answer.
    The failed step's line says what to check."""
    from derbridge.smoke import Endpoints, run_smoke

    endpoints = Endpoints.parse(assethub, derms, vtn)
    report = run_smoke(endpoints, _service_token(token), timeout=timeout, on_step=None if as_json else _line)
    if as_json:
        print_json(report.as_dict())
    elif report.left:
        err.print("kept as history, closed: " + "; ".join(report.left), markup=False, highlight=False)
    failed = report.first_failure
    if failed is None:
        if not as_json:
            total = sum(step.seconds for step in report.steps)
            out.print(f"smoke {report.run_id} passed: {len(report.steps)} steps in {total:.1f} s", markup=False)
        return
    if as_json:
        raise typer.Exit(int(_exit_code(failed.failure)))
    fail(
        f"smoke {report.run_id} failed at step {failed.step!r}: {failed.detail}"
        + (f"; check: {failed.check}" if failed.check else ""),
        _exit_code(failed.failure),
    )
