"""What every command group shares: the consoles, the global options' state, settings, and the two ways a
command reaches the systems (their databases, or the bridge's database and transport).

Progress bars, tables of rejections and notices go to stderr, so that ``--json`` output on stdout stays
machine-readable.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.progress import Progress

    from derbridge.errors import DomainError
    from derbridge.infra.problems import ProblemError
    from derbridge.runtime import Runtime
    from derbridge.settings import Settings

# soft_wrap: a message is one line in a log or a pipe, not cut at 80 columns.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

MAX_REJECTIONS_SHOWN = 50


class ExitCode(IntEnum):
    """Every command's exit status: the one list of them (the README's "Exit codes" repeats it)."""

    OK = 0
    """Done."""
    FAILED = 1
    """Done, with failures or rejections (e.g. some rows of an import were rejected, the others loaded)."""
    USAGE = 2
    """Bad input: an unknown option or value, a file that is not what it should be. Nothing was done."""
    NOT_FOUND = 3
    """What was named (an event, a message, a client) does not exist."""
    WAITING = 4
    """Still waiting: an answer did not come in time, or a result is not ready yet."""
    UNREACHABLE = 5
    """A server, database or broker cannot be reached."""
    CONFLICT = 6
    """Refused by a rule or by the state things are in (e.g. cancelling an event that started, a port another
    server holds), or refused credentials."""


def fail(message: str, code: ExitCode) -> NoReturn:
    """End the command: one line on stderr saying what went wrong and what to do, and ``code``.

    ``message`` is printed as is (no Rich markup), so ids and values with brackets stay intact.
    """
    from rich.text import Text

    err.print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(int(code))


def exit_code_for_status(status: int) -> ExitCode:
    """The exit status of a command whose work ended in an HTTP problem of ``status``."""
    if status in (400, 422):
        return ExitCode.USAGE
    if status == 404:
        return ExitCode.NOT_FOUND
    if status in (401, 403, 409, 412):
        return ExitCode.CONFLICT
    if status == 503:
        return ExitCode.WAITING
    return ExitCode.FAILED


# Options with fixed values are choices: Typer lists them in the help and refuses anything else. These copy
# the domain's enums (a test keeps them equal) so that building the command tree imports no system.


class FlowChoice(StrEnum):
    """The flows between the systems (``derbridge.contracts.envelope.Flow``)."""

    ENROLLMENT_REQUEST = "enrollment-request"
    DEVICE_STATUS_CHECK = "device-status-check"
    ENROLLMENT_SYNC = "enrollment-sync"
    DEVICE_SCORE_TRANSFER = "device-score-transfer"
    EVENT_RESERVATION = "event-reservation"
    EVENT_CANCELLATION = "event-cancellation"
    EVENT_OUTCOME = "event-outcome"
    PROGRAM_SYNC = "program-sync"


class MessageStateChoice(StrEnum):
    """Where a message is on its way (``derbridge.bridge.tracking.MessageState``)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    PARKED = "parked"
    DEAD = "dead"


class ComponentChoice(StrEnum):
    """What ``derbridge serve`` can run (``derbridge.api.app.ALL_COMPONENTS``)."""

    ASSETHUB = "assethub"
    DERMS = "derms"
    BRIDGE = "bridge"


class EventTypeChoice(StrEnum):
    """Why a program event is called (``derbridge.derms.domain.event.EventType``)."""

    ECONOMIC = "ECONOMIC"
    EMERGENCY = "EMERGENCY"
    DEVICE_TEST = "DEVICE_TEST"


class DeviceTypeChoice(StrEnum):
    """Kinds of controllable device (``derbridge.assethub.domain.program.DeviceType``)."""

    THERMOSTAT = "THERMOSTAT"
    BATTERY = "BATTERY"
    EV_CHARGER = "EV_CHARGER"
    WATER_HEATER = "WATER_HEATER"


class ProgramStatusChoice(StrEnum):
    """Where a program is in its life (``derbridge.assethub.domain.program.ProgramStatus``)."""

    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"


class AvailabilityChoice(StrEnum):
    """Whether a device may be reserved in a program (``derbridge.derms.domain.availability.Availability``)."""

    AVAILABLE = "AVAILABLE"
    UNAVAILABLE = "UNAVAILABLE"


class CommunicationStatusChoice(StrEnum):
    """A device's latest communication status (``derbridge.contracts.device_status_check.CommunicationStatus``:
    a contract, so a pydantic module the command tree must not load)."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"


class LogLevel(StrEnum):
    """The global ``--log-level``."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class State:
    """What the global options set for the subcommands."""

    data_dir: Path | None = None


state = State()


def load_settings() -> Settings:
    """Settings from the environment and config file, with the global ``--data-dir`` on top. A value that is
    not valid ends the command with one line per setting (:attr:`ExitCode.USAGE`)."""
    from pydantic import ValidationError

    from derbridge.settings import Settings

    try:
        if state.data_dir is not None:
            return Settings(data_dir=state.data_dir)
        return Settings()
    except ValidationError as error:
        for problem in error.errors():
            name = "__".join(str(part) for part in problem["loc"])
            err.print(f"setting {name} (DERBRIDGE_{name.upper()}): {problem['msg']}", markup=False, highlight=False)
        fail("the configuration is not valid: fix the settings above (environment or --config file)", ExitCode.USAGE)


SERVERS = frozenset({"up", "serve"})
"""The commands that run until stopped: their logs are their output, so they log at INFO by default."""


def log_level_for(command: str | None, option: LogLevel | None, settings: Settings) -> str:
    """The log level: ``--log-level``, else the setting, else INFO for a server and WARNING for a command
    (a command's result is its output; its services' INFO lines would only come between)."""
    if option is not None:
        return option.value
    if settings.log_level is not None:
        return settings.log_level
    return "INFO" if command in SERVERS else "WARNING"


@contextmanager
def working(description: str) -> Iterator[None]:
    """A transient spinner with the time elapsed on stderr, for work of unknown length (a score transfer, a
    reservation): a person sees that something is happening; stdout and pipes see nothing of it."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as progress:
        progress.add_task(description, total=None)
        yield


def progress_bar() -> Progress:
    """A transient progress bar on stderr; none when stderr is not a terminal (a log file or a pipe would
    only get a stray blank line)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@contextmanager
def reaching_servers() -> Iterator[None]:
    """Turn a database or broker that cannot be reached into one line and :attr:`ExitCode.UNREACHABLE`."""
    try:
        yield
    except Exception as error:
        what = unreachable(error)
        if what is None:
            raise
        fail(f"cannot reach {what}: is it running, and is its URL right (derbridge config show)?", ExitCode.UNREACHABLE)


def unreachable(error: BaseException) -> str | None:
    """What ``error`` says cannot be reached (a database, the broker), or None for any other error."""
    from sqlalchemy.exc import OperationalError

    from derbridge.bridge.transport.base import TransportError

    if isinstance(error, OperationalError):
        # Only a connection that failed: SQLite's "no such table" or "database is locked" are operational
        # errors too, and are not "cannot reach".
        text = str(error.orig or error).strip()
        if not _CANNOT_CONNECT.search(text):
            return None
        return f"a database ({text.splitlines()[0]})"
    if isinstance(error, TransportError):
        return f"the message broker ({error})"
    if isinstance(error, OSError) and error.errno is not None and error.errno in _CONNECTION_ERRNOS:
        return f"a server ({error.strerror})"
    return None


_CANNOT_CONNECT = re.compile(
    r"connect|unable to open database file|could not translate host name|timeout expired|name resolution",
    re.IGNORECASE,
)
_CONNECTION_ERRNOS = {111, 113, 110, 101, 104}  # refused, no route, timed out, network unreachable, reset


def migrated(settings: Settings, systems: Sequence[str]) -> None:
    """Bring ``systems``' databases to the newest schema (one query each when they are there already). A
    database whose revision this derbridge does not know (migrated by a newer release) ends the command with
    one line, not Alembic's traceback."""
    from derbridge.runtime import ensure_migrated

    with schema_unknown_is_one_line():
        ensure_migrated(settings, systems)  # type: ignore[arg-type]


@contextmanager
def schema_unknown_is_one_line() -> Iterator[None]:
    """Around a migration: a database at a revision this derbridge does not know (a newer release migrated
    it) ends the command with one line and :attr:`ExitCode.CONFLICT`, not Alembic's traceback."""
    try:
        yield
    except Exception as error:
        # Alembic is imported only when a database is behind; its errors are recognised without importing it.
        if not type(error).__module__.startswith("alembic."):
            raise
        fail(
            f"a database is at a schema this derbridge does not know ({error}): it was migrated by a newer "
            "derbridge; run that one, or restore the database from before",
            ExitCode.CONFLICT,
        )


SYSTEMS_OF_RECORD: tuple[str, ...] = ("assethub", "derms")
"""What :func:`system_call` opens unless told otherwise: the two systems, not the bridge's database."""


def system_call(
    work: Callable[[Runtime], Awaitable[Any]],
    *,
    fields: Mapping[str, str] | None = None,
    systems: Sequence[str] = SYSTEMS_OF_RECORD,
) -> Any:
    """Run ``work(runtime)`` against the configured systems; the databases of ``systems`` (those ``work``
    opens) are checked first and migrated if behind, and no other is touched. Problems become messages, their
    fields named by the command's options (``fields``: request field → option)."""
    with reaching_servers():
        return _system_call(work, fields, systems)


def _system_call(
    work: Callable[[Runtime], Awaitable[Any]], fields: Mapping[str, str] | None, systems: Sequence[str]
) -> Any:
    import asyncio

    from derbridge.errors import DomainError
    from derbridge.infra.problems import ProblemError
    from derbridge.runtime import Runtime

    settings = load_settings()
    migrated(settings, systems)

    async def run() -> Any:
        runtime = Runtime(settings)
        try:
            return await work(runtime)
        finally:
            await runtime.aclose()

    try:
        return asyncio.run(run())
    except (DomainError, ProblemError) as problem:
        report_problem(problem, fields)


def report_problem(problem: ProblemError | DomainError, fields: Mapping[str, str] | None = None) -> NoReturn:
    """End the command on a problem the systems answered (or a refusal a use case raised: the problem the API
    would answer for it): its title and detail, then each field that was wrong, named by the command's
    option (``fields`` maps a request field to it) rather than the API's name."""
    from derbridge.errors import DomainError
    from derbridge.infra.problems import as_problem

    if isinstance(problem, DomainError):
        problem = as_problem(problem)
    fields = fields or {}
    lines = [field_line(option_for_field(e.field, fields), e.message, fields) for e in problem.errors or []]
    detail = in_options(problem.detail or "", fields)
    if len(lines) == 1:
        # A detail that only repeats the field's message (a rule refused) is said once.
        said = lines[0].rstrip(".")
        tail = "" if detail.rstrip(".") and detail.rstrip(".") in said else f" {detail}"
        fail(f"{problem.title}: {said}.{tail}", exit_code_for_status(problem.status))
    for line in lines:
        err.print(f"  {line}", markup=False, highlight=False)
    fail(f"{problem.title}: {detail}", exit_code_for_status(problem.status))


def fail_validation(what: str, error: ValidationError, fields: Mapping[str, str]) -> NoReturn:
    """End the command on input its options gave that a model refused: each error named by its option
    (``fields`` maps the model's fields to them), never by the API's field name; :attr:`ExitCode.USAGE`."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(field_line(option_for_field(field, fields), message, fields))
    if len(lines) == 1:
        fail(f"{what}: {lines[0]}", ExitCode.USAGE)
    for line in lines:
        err.print(f"  {line}", markup=False, highlight=False)
    fail(f"{what}: fix the options above", ExitCode.USAGE)


def field_line(option: str, message: str, fields: Mapping[str, str]) -> str:
    """``--kw: Input should be greater than 0``, or the message alone when it already starts with its option."""
    message = in_options(message, fields)
    return message if message.startswith(option) or not option else f"{option}: {message}"


def in_options(text: str, fields: Mapping[str, str]) -> str:
    """``text`` with each request field's name replaced by its option (``end_at`` → ``--end``)."""
    if not fields:
        return text
    names = sorted(fields, key=len, reverse=True)
    return re.sub(r"\b(" + "|".join(map(re.escape, names)) + r")\b", lambda m: fields[m.group(1)], text)


def option_for_field(field: str, fields: Mapping[str, str]) -> str:
    """The option that set a request field: ``body.target_kw`` → ``--kw`` when ``fields`` says so."""
    path = field.split(".")
    for start in range(len(path)):
        name = ".".join(path[start:])
        if name in fields:
            return fields[name]
    return field


def check_port_free(host: str, port: int, option: str = "--port") -> None:
    """Bind ``host:port`` once and let it go, so that a server does not announce itself and then fail on a
    port another server holds (uvicorn would log errno 98 after our banner)."""
    import errno
    import socket

    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        fail(f"cannot use --host {host} ({error.strerror}): pass an address of this machine", ExitCode.USAGE)
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: SO_REUSEADDR, so a port left in TIME_WAIT by a stopped server is not "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                fail(f"port {port} on {host} is in use: stop the other server or pass {option}", ExitCode.CONFLICT)
            fail(f"cannot listen on {host}:{port} ({error.strerror}): pass another --host or {option}", ExitCode.USAGE)


_OFFSET = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(value: str) -> datetime:
    """A time as a person types it: ISO 8601 (UTC unless an offset is given), ``now``, or an offset from now
    such as ``+30s``, ``+15m``, ``+2h``, ``+1d`` (what a walkthrough or a test event needs: "in a minute")."""
    from datetime import UTC, timedelta

    text = value.strip()
    if text.lower() == "now":
        return datetime.now(UTC)
    offset = _OFFSET.match(text.lower())
    if offset:
        amount, unit = offset.groups()
        return datetime.now(UTC) + timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a time: give ISO 8601 (2027-07-15T18:00:00Z), now, or +30s / +15m / +2h / +1d"
        ) from None
    return aware(moment) or moment


WHEN_HELP = "ISO 8601 (UTC unless an offset is given), or from now: +30s, +15m, +2h, +1d."


def print_json(value: Any) -> None:
    """One JSON document on stdout, for scripts."""
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def bridge_call(work: Callable[[Runtime, Any], Awaitable[Any]], *, with_transport: bool = True) -> Any:
    """Run ``work(runtime, transport)`` against the bridge database and transport, then close them. Only the
    bridge's database is opened, so only it is checked (and migrated if behind). ``with_transport=False``
    (commands that only read or update the bridge's tables) passes ``None`` and connects to no broker."""
    with reaching_servers():
        return _bridge_call(work, with_transport)


def _bridge_call(work: Callable[[Runtime, Any], Awaitable[Any]], with_transport: bool) -> Any:
    import asyncio

    from derbridge.errors import DomainError
    from derbridge.infra.problems import ProblemError
    from derbridge.runtime import Runtime

    settings = load_settings()
    migrated(settings, ["bridge"])

    async def run() -> Any:
        runtime = Runtime(settings)
        if not with_transport:
            try:
                return await work(runtime, None)
            finally:
                await runtime.aclose()
        from derbridge.bridge.assembly import build_transport
        from derbridge.bridge.worker import flow_queues

        transport = build_transport(runtime)
        try:
            await transport.start(list(flow_queues(settings.bridge.queue_prefix)))
            return await work(runtime, transport)
        finally:
            await transport.close()
            await runtime.aclose()

    try:
        return asyncio.run(run())
    except (DomainError, ProblemError) as problem:
        report_problem(problem)


def aware(value: datetime | None) -> datetime | None:
    """A time typed without an offset is UTC."""
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
