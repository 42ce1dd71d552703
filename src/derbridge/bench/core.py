"""What every benchmark shares: the result it prints, the backends it runs on, baselines and memory.

A result is one JSON object per scenario and backend (:class:`Result`). The machines are shared and noisy,
so a scenario's baseline — the same work (the same rows, requests or messages) done the barest way — is
measured in the same process right after it, and ``ratio`` compares the two: ``ratio`` is always *the
baseline's seconds / our seconds* (1.0 = as fast as the baseline, 0.25 = four times slower).
"""

# Identifiers in the SQL below are our own tables' names; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import cProfile
import ctypes
import gc
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import psycopg
import pyarrow as pa
from sqlalchemy.engine import make_url

from derbridge.migrations.runner import SYSTEMS
from derbridge.settings import Settings

Backend = Literal["sqlite", "postgres", "amqp"]
"""Where a scenario runs: the embedded default (SQLite files, ``sql`` transport), every database on
PostgreSQL (``sql`` transport in the bridge's PostgreSQL database), or the ``amqp`` transport (RabbitMQ)
with SQLite databases."""

BACKENDS: tuple[Backend, ...] = ("sqlite", "postgres", "amqp")
POSTGRES_ENV = ("DERBRIDGE_BENCH_POSTGRES_URL", "DERBRIDGE_TEST_POSTGRES_URL")
AMQP_ENV = ("DERBRIDGE_BENCH_AMQP_URL", "DERBRIDGE_TEST_AMQP_URL")
API_TOKEN = "bench-token"  # noqa: S105 - the throw-away systems' service credential, not a secret
QUICK_FACTOR = 10
"""``--quick`` divides every size by this."""


class BackendUnavailable(RuntimeError):
    """The backend a scenario asks for is not configured or does not answer (the scenario is skipped)."""


@dataclass
class Baseline:
    """The same amount of work done the barest way, measured in the same run."""

    what: str
    seconds: float
    rate: float


@dataclass
class Result:
    """One scenario on one backend: the JSON object ``derbridge bench`` prints."""

    scenario: str
    database: str
    transport: str
    sizes: dict[str, int]
    seconds: float
    rate: float
    unit: str
    """What ``rate`` counts per second (devices, rows, requests, messages, checks)."""
    target: str
    baseline: Baseline | None = None
    peak_rss_mb: float = 0.0
    """Peak resident memory of the measured flow (set-up excluded where the kernel allows: see
    :func:`reset_peak_rss`); ``process_peak_rss_mb`` is the whole process's."""
    process_peak_rss_mb: float = 0.0
    quick: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    """What else the scenario knows: phase times, latency percentiles, counts."""

    @property
    def ratio(self) -> float | None:
        """The baseline's seconds over ours, for the same work (None without a baseline)."""
        if self.baseline is None or not self.seconds:
            return None
        return round(self.baseline.seconds / self.seconds, 4)

    def as_json(self) -> dict[str, Any]:
        """The printed object, keys in a stable order."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["rate"] = round(self.rate, 1)
        if self.baseline is not None:
            data["baseline"] = {
                "what": self.baseline.what,
                "seconds": round(self.baseline.seconds, 3),
                "rate": round(self.baseline.rate, 1),
            }
        data["ratio"] = self.ratio
        return data


def scaled(size: int, quick: bool) -> int:
    """``size``, divided by :data:`QUICK_FACTOR` in quick mode."""
    return max(1, size // QUICK_FACTOR) if quick else size


PROFILE_ENV = "DERBRIDGE_BENCH_PROFILE"
"""A directory: when set, each scenario's clock also runs :mod:`cProfile` on this process's event-loop
thread and writes one ``.pstats`` file per lap there (read with ``python -m pstats``)."""


class Stopwatch:
    """``with Stopwatch() as watch: …`` then ``watch.seconds``; ``lap(name)`` keeps phase times.

    ``profile_as`` names the profiles written under :data:`PROFILE_ENV`, when it is set."""

    def __init__(self, profile_as: str | None = None) -> None:
        self.seconds = 0.0
        self.cpu_seconds = 0.0
        """This process's CPU time over the same span (all threads; a database server's is not in it): on a
        shared machine, wall time includes waiting for a core, CPU time does not."""
        self.laps: dict[str, float] = {}
        self._started = 0.0
        self._cpu = 0.0
        self._lap = 0.0
        directory = os.environ.get(PROFILE_ENV)
        self._profile_to = Path(directory) / profile_as if directory and profile_as else None
        self._profile: cProfile.Profile | None = None

    def __enter__(self) -> Stopwatch:
        # The set-up's objects (a world's columns, a million resource dicts) move to the permanent
        # generation: otherwise every full collection during the flow walks them, and the flow pays for the
        # benchmark's own heap (a third of F7's quick run) — a server carries no such heap.
        gc.collect()
        gc.freeze()
        self._start_profile()
        self._started = self._lap = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self._started
        self.cpu_seconds = time.process_time() - self._cpu
        self._save_profile("rest" if self.laps else "all")
        gc.unfreeze()

    def lap(self, name: str) -> None:
        """Record the time since the previous lap under ``name``."""
        now = time.perf_counter()
        self.laps[name] = round(now - self._lap, 3)
        self._save_profile(name)
        self._start_profile()
        self._lap = time.perf_counter()

    def _start_profile(self) -> None:
        if self._profile_to is not None:
            self._profile = cProfile.Profile()
            self._profile.enable()

    def _save_profile(self, lap: str) -> None:
        if self._profile is None or self._profile_to is None:
            return
        self._profile.disable()
        self._profile_to.parent.mkdir(parents=True, exist_ok=True)
        self._profile.dump_stats(f"{self._profile_to}.{lap.replace(' ', '-')}.pstats")
        self._profile = None


PROBE_ADDITIONS = 5_000_000


def cpu_probe_ms() -> float:
    """CPU milliseconds this process takes for a fixed pure-Python loop (:data:`PROBE_ADDITIONS` integer
    additions): how fast a core of the machine is right now. The shared machine's cores run at different
    speeds on different days (the same scenarios ran two to three times slower on one day than on another);
    figures of two runs compare only next to their probes. CPU time, so that waiting for a core does not count."""
    started = time.process_time()
    total = 0
    for i in range(PROBE_ADDITIONS):
        total += i
    return round((time.process_time() - started) * 1000, 1)


_STARTED = time.monotonic()


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the JSON), with the seconds since this module was
    imported (about when its process began): where a run spends its set-up shows without a profiler."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


# --- memory ------------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5) so that what follows is measured on its
    own; False where the kernel does not allow it (then the peak includes the set-up).

    Memory the set-up freed goes back to the system first (Arrow's pool, then glibc's ``malloc_trim``):
    otherwise the allocators keep it resident, and a flow that never touched it would be charged for it."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (``VmHWM``), else since the process started."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return process_peak_rss_mb()


def process_peak_rss_mb() -> float:
    """Peak RSS of the whole process (``ru_maxrss``, KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# --- backends ----------------------------------------------------------------------------------------


def _first_env(names: Sequence[str]) -> str | None:
    for name in names:
        if value := os.environ.get(name):
            return value
    return None


def _postgres_admin() -> str:
    url = _first_env(POSTGRES_ENV)
    if not url:
        raise BackendUnavailable(f"set {POSTGRES_ENV[0]} (a PostgreSQL URL allowed to create databases)")
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        raise BackendUnavailable(f"PostgreSQL does not answer: {error}") from error
    return conninfo


def _rabbitmqctl(*args: str) -> str:
    completed = subprocess.run(  # noqa: S603 - fixed program, arguments built here
        ["rabbitmqctl", "-q", *args],  # noqa: S607 - found on PATH like the operator would
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return completed.stdout


@contextlib.contextmanager
def backend_settings(backend: Backend, workdir: Path, label: str) -> Iterator[Settings]:
    """Settings of a system of its own on ``backend``: SQLite files under ``workdir``, and for
    ``postgres`` three fresh databases, for ``amqp`` a fresh virtual host — dropped on the way out."""
    base: dict[str, Any] = {"data_dir": workdir / "var", "api_token": API_TOKEN, "log_level": "WARNING"}
    if backend == "sqlite":
        yield Settings.model_validate(base)
        return
    if backend == "postgres":
        admin = _postgres_admin()
        names = {system: f"derbridge_bench_{label}_{system}_{uuid.uuid4().hex[:8]}" for system in SYSTEMS}
        with psycopg.connect(admin, autocommit=True) as connection:
            for name in names.values():
                connection.execute(f'CREATE DATABASE "{name}"')
        try:
            urls = {s: make_url(admin).set(database=n).render_as_string(hide_password=False) for s, n in names.items()}
            yield Settings.model_validate(base | {s: {"database_url": u} for s, u in urls.items()})
        finally:
            with psycopg.connect(admin, autocommit=True) as connection:
                for name in names.values():
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    url = _first_env(AMQP_ENV)
    if not url:
        raise BackendUnavailable(f"set {AMQP_ENV[0]} (a RabbitMQ URL whose user may use a new virtual host)")
    if shutil.which("rabbitmqctl") is None:
        raise BackendUnavailable("rabbitmqctl is not on PATH: cannot create a virtual host")
    from yarl import URL

    server = URL(url)
    vhost = f"derbridge_bench_{label}_{uuid.uuid4().hex[:8]}"
    try:
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, server.user or "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as error:
        raise BackendUnavailable(f"could not create a RabbitMQ virtual host: {error}") from error
    try:
        amqp_url = str(server.with_path("/" + vhost).with_query(server.query))
        yield Settings.model_validate(base | {"bridge": {"transport": "amqp", "amqp_url": amqp_url}})
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def backend_names(settings: Settings) -> tuple[str, str]:
    """``(database, transport)`` as printed: e.g. ``("sqlite", "sql")``."""
    database = "postgresql" if settings.database_url("assethub").startswith("postgresql") else "sqlite"
    return database, settings.bridge.transport


# --- bare-insert baselines ---------------------------------------------------------------------------


def _sqlite_path(url: str) -> str:
    database = make_url(url).database
    assert database, url
    return database


def _pg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def bare_insert_baseline(settings: Settings, tables: dict[str, Sequence[str]]) -> Baseline:
    """Write the rows the flow stored (``{system: [table, …]}``) again, the barest way, into empty tables
    of the same columns without keys or indexes: one ``executemany`` per table on SQLite, one ``COPY`` per
    table on PostgreSQL. Reading the rows is not timed; the copies are dropped afterwards."""
    seconds = 0.0
    rows = 0
    for system, names in tables.items():
        url = settings.database_url(system)
        if url.startswith("sqlite"):
            took, count = _sqlite_bare(_sqlite_path(url), names)
        else:
            took, count = _pg_bare(_pg_conninfo(url), names)
        seconds += took
        rows += count
    how = "executemany" if settings.database_url("assethub").startswith("sqlite") else "COPY"
    listed = ", ".join(f"{s}.{n}" for s, names in tables.items() for n in names)
    return Baseline(
        what=f"bare {how} of the same {rows:,} rows into empty tables ({listed})",
        seconds=seconds,
        rate=rows / seconds if seconds else 0.0,
    )


def _sqlite_bare(path: str, names: Sequence[str]) -> tuple[float, int]:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        seconds, count = 0.0, 0
        for name in names:
            copy = f"bench_bare_{name}"
            connection.execute(f'DROP TABLE IF EXISTS "{copy}"')
            connection.execute(f'CREATE TABLE "{copy}" AS SELECT * FROM "{name}" WHERE 0')
            data = connection.execute(f'SELECT * FROM "{name}"').fetchall()
            if not data:
                continue
            marks = ", ".join("?" * len(data[0]))
            gc.collect()
            started = time.perf_counter()
            connection.execute("BEGIN")
            connection.executemany(f'INSERT INTO "{copy}" VALUES ({marks})', data)
            connection.execute("COMMIT")
            seconds += time.perf_counter() - started
            count += len(data)
            del data
            connection.execute(f'DROP TABLE "{copy}"')
        return seconds, count
    finally:
        connection.close()


def _pg_bare(conninfo: str, names: Sequence[str]) -> tuple[float, int]:
    seconds, count = 0.0, 0
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for name in names:
            copy = f"bench_bare_{name}"
            connection.execute(f'DROP TABLE IF EXISTS "{copy}"')
            connection.execute(f'CREATE TABLE "{copy}" (LIKE "{name}")')
            payload = bytearray()
            with connection.cursor() as cursor, cursor.copy(f'COPY "{name}" TO STDOUT') as out:
                for chunk in out:
                    payload += chunk
            rows = int(connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])  # type: ignore[index]
            started = time.perf_counter()
            with (
                connection.transaction(),
                connection.cursor() as cursor,
                cursor.copy(f'COPY "{copy}" FROM STDIN') as into,
            ):
                view = memoryview(payload)
                for start in range(0, len(view), 1 << 20):
                    into.write(view[start : start + (1 << 20)])
            seconds += time.perf_counter() - started
            count += rows
            connection.execute(f'DROP TABLE "{copy}"')
    return seconds, count
