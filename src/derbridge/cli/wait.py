"""``derbridge wait``: block until something is true, for scripts and walkthroughs.

A person at a terminal can look again; a script (a deployment step, CI, the README's walkthrough, which a
test runs as written) needs a command that returns when the server is ready, when the bridge has carried
everything, when enough enrollments are ACTIVE, or when an event's outcomes are in — and fails with a clear
line and exit code 4 when that does not happen in time. Each condition is read from the systems' databases
(or, for ``ready``, the server's ``/readyz``), the same way the listing commands read them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from derbridge.assethub.domain.enrollment import EnrollmentState
from derbridge.cli.common import ExitCode, err, fail, load_settings, system_call, working

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

T = TypeVar("T")

wait_app = typer.Typer(
    help="Wait until the server is ready, the bridge is idle, enrollments are active or outcomes are in.",
    no_args_is_help=True,
)

Timeout = Annotated[float, typer.Option("--timeout", min=0.1, help="Give up after this many seconds (exit status 4).")]
POLL_SECONDS = 0.5
"""How often a condition is read again: often enough to return promptly, rare enough to cost nothing."""


@wait_app.command("ready")
def wait_ready(
    url: Annotated[
        str | None,
        typer.Option(help="The server's base URL. Default: the configured host and port, e.g. http://127.0.0.1:8080."),
    ] = None,
    timeout: Timeout = 60.0,
) -> None:
    """Wait until a running server (derbridge up or serve) answers that it is ready: every database it serves
    answers."""
    import httpx

    base = url.rstrip("/") if url else _configured_url()
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with working(f"waiting for {base} to be ready"):
        while True:
            try:
                answer = httpx.get(f"{base}/readyz", timeout=min(5.0, timeout))
                if answer.status_code == 200:
                    break
                last = f"it answered {answer.status_code}"
            except httpx.HTTPError as error:
                last = f"{type(error).__name__}: is it running?"
            if time.monotonic() >= deadline:
                fail(f"{base} was not ready after {timeout:g} s ({last})", ExitCode.WAITING)
            time.sleep(POLL_SECONDS)
    err.print(f"{base} is ready", markup=False, highlight=False)


def _configured_url() -> str:
    server = load_settings().server
    # A server bound to every address is reached on loopback from here.
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host  # noqa: S104 - compared, not bound
    return f"http://{host}:{server.port}"


@wait_app.command("idle")
def wait_idle(timeout: Timeout = 120.0) -> None:
    """Wait until the bridge has carried every message the systems have sent so far. Parked and dead messages
    count as settled: they wait for a prerequisite or a person, not for the bridge."""
    from derbridge.bridge.operations import InFlight
    from derbridge.usecases.bridge import messages_in_flight

    async def work(runtime: Runtime) -> InFlight:
        return await _poll(
            lambda: messages_in_flight(runtime),
            lambda state: state.idle,
            timeout,
            lambda state: (
                f"the bridge still has messages in flight after {timeout:g} s ({state.unpublished} not yet "
                f"relayed, {state.unsettled} being delivered): is derbridge up (or serve bridge) running? "
                "`derbridge messages list --state retrying` shows the ones being retried"
            ),
        )

    with working("waiting for the bridge to carry every message"):
        state = system_call(work, systems=("assethub", "derms", "bridge"))
    note = (
        f"; {state.parked} parked and {state.dead} dead (derbridge messages list --state parked)"
        if (state.parked or state.dead)
        else ""
    )
    err.print(f"the bridge is idle: {state.tracked:,} messages carried{note}", markup=False, highlight=False)


@wait_app.command("enrollments")
def wait_enrollments(
    state: Annotated[EnrollmentState, typer.Option(help="The state to wait for.")] = EnrollmentState.ACTIVE,
    at_least: Annotated[int, typer.Option("--at-least", min=1, help="How many enrollments must be in it.")] = 1,
    program: Annotated[str | None, typer.Option(help="Count only this program's (program code).")] = None,
    head_end: Annotated[str | None, typer.Option("--head-end", help="Count only this head-end's, e.g. ECOBEE.")] = None,
    timeout: Timeout = 120.0,
) -> None:
    """Wait until at least --at-least enrollments are in --state (ACTIVE by default)."""
    from derbridge.assethub import queries

    async def count(runtime: Runtime) -> int:
        async with runtime.async_engine("assethub").connect() as connection:
            return await queries.count_enrollments(
                connection, state=state.value, program_code=program, head_end_system=head_end
            )

    async def work(runtime: Runtime) -> int:
        return await _poll(
            lambda: count(runtime),
            lambda n: n >= at_least,
            timeout,
            lambda n: (
                f"{n:,} of the {at_least:,} enrollments waited for are {state.value} after {timeout:g} s: "
                "`derbridge enrollments list` shows where the others are"
            ),
        )

    with working(f"waiting for {at_least:,} enrollments to be {state.value}"):
        reached = system_call(work)
    err.print(f"{reached:,} enrollments are {state.value}", markup=False, highlight=False)


@wait_app.command("outcomes")
def wait_outcomes(
    event_id: Annotated[str, typer.Argument(help="The event (derbridge events list shows them).")],
    at_least: Annotated[
        int, typer.Option("--at-least", min=1, help="How many devices' outcomes Asset Hub must have recorded.")
    ] = 1,
    timeout: Timeout = 300.0,
) -> None:
    """Wait until Asset Hub has recorded the outcomes of at least --at-least of an event's devices, as the
    aggregators reported them after the event ended."""
    from derbridge.assethub import queries
    from derbridge.derms import queries as derms_queries

    async def recorded(runtime: Runtime) -> int:
        async with runtime.async_engine("assethub").connect() as connection:
            counts = await queries.participation_counts(connection, event_id)
        return sum(counts.by_outcome.values())

    async def work(runtime: Runtime) -> int:
        async with runtime.async_engine("derms").connect() as connection:
            await derms_queries.get_event(connection, event_id)  # an unknown event ends here: exit status 3
        return await _poll(
            lambda: recorded(runtime),
            lambda n: n >= at_least,
            timeout,
            lambda n: (
                f"Asset Hub has {n:,} of the {at_least:,} outcomes waited for after {timeout:g} s: outcomes come "
                "after the event ends, when the aggregators report them (`derbridge events show` tells the "
                "event's status)"
            ),
        )

    with working(f"waiting for the outcomes of event {event_id}"):
        reached = system_call(work)
    err.print(f"{reached:,} outcomes recorded for event {event_id}", markup=False, highlight=False)


async def _poll(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float, why_not: Callable[[T], str]
) -> T:
    """Read a condition every :data:`POLL_SECONDS` until ``done(value)``; at the deadline, end the command
    with ``why_not(value)`` and :attr:`ExitCode.WAITING`."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            fail(why_not(value), ExitCode.WAITING)
        await asyncio.sleep(POLL_SECONDS)
