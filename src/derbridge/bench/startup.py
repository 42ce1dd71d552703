"""The command line's start-up: ``derbridge --version``, and a read-only command on databases already at the
newest schema, each as a fresh process the way a person or a script starts it.

Both run in one process per backend (the ``cli`` world): the databases are migrated once (not timed), then
a small launcher process (:mod:`derbridge.bench.launcher`) starts each command ``runs`` times, interleaved
with the baseline — the bare interpreter's start-up (``python -c pass``) — so that the machine's noise falls
on all of them alike. The figure is the median wall time of a start; each start's CPU time and peak RSS
come from ``wait4``. Every start's exit status and output are checked: a time of a command that failed
would mean nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from derbridge import __version__
from derbridge.bench.core import Baseline, Result, backend_names, process_peak_rss_mb, progress
from derbridge.migrations.runner import SYSTEMS
from derbridge.runtime import migrate_all
from derbridge.settings import Settings

RUNS = 20
"""Starts of each command (``--quick``: :data:`QUICK_RUNS`): a median needs a handful, not a thousand."""
QUICK_RUNS = 7

READ_ONLY = ("messages", "stats", "--json")
"""The read-only command: counts of the bridge's messages (one database, one query)."""


class StartupFailure(RuntimeError):
    """A command did not do what it must (wrong exit status or output): its time would mean nothing."""


@dataclass
class Starts:
    """The timed starts of one command line (from :mod:`derbridge.bench.launcher`)."""

    argv: list[str]
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    """What each start printed on stdout."""

    @property
    def median(self) -> float:
        """The median wall time of a start."""
        return statistics.median(self.seconds)

    def details(self) -> dict[str, Any]:
        """Median, spread, CPU time and memory, for a result's ``details``."""
        return {
            "median_seconds": round(self.median, 4),
            "min_seconds": round(min(self.seconds), 4),
            "max_seconds": round(max(self.seconds), 4),
            "median_cpu_seconds": round(statistics.median(self.cpu_seconds), 4),
            "peak_rss_mb": max(self.peak_rss_mb),
        }


def derbridge_command() -> list[str]:
    """How a person starts derbridge: the console script beside this interpreter (a virtualenv's
    ``bin/derbridge``), else ``python -m derbridge``."""
    script = Path(sys.executable).with_name("derbridge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "derbridge"]


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of the started commands: the developer's DERBRIDGE_* settings out, these in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
    env["DERBRIDGE_DATA_DIR"] = str(settings.data_dir)
    env["DERBRIDGE_LOG_LEVEL"] = "WARNING"
    for system in SYSTEMS:
        configured = getattr(settings, system).database_url
        if configured:
            env[f"DERBRIDGE_{system.upper()}__DATABASE_URL"] = configured
    if settings.api_token is not None:
        env["DERBRIDGE_API_TOKEN"] = settings.api_token.get_secret_value()
    return env


def run_starts(lines: Sequence[Sequence[str]], runs: int, env: dict[str, str], cwd: Path) -> list[Starts]:
    """Start each of ``lines`` ``runs`` times (interleaved, after one untimed start each) from a launcher
    process (:mod:`derbridge.bench.launcher`): their figures and outputs. A start that exits non-zero is a
    :class:`StartupFailure`."""
    plan = {"lines": [list(line) for line in lines], "runs": runs, "env": env, "cwd": str(cwd)}
    launched = subprocess.run(
        [sys.executable, "-m", "derbridge.bench.launcher"],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if launched.returncode != 0:
        raise StartupFailure(f"the launcher failed: {launched.stderr[-1000:]}")
    results: list[Starts] = []
    for line, starts in zip(lines, json.loads(launched.stdout), strict=True):
        measured = Starts(list(line))
        for one in starts:
            if one["status"] != 0:
                raise StartupFailure(f"{' '.join(line)}: exit status {one['status']}: {one['stderr'][-500:]}")
            measured.seconds.append(one["seconds"])
            measured.cpu_seconds.append(one["cpu_seconds"])
            measured.peak_rss_mb.append(one["peak_rss_mb"])
            measured.outputs.append(one["stdout"])
        results.append(measured)
    return results


def _version_printed(stdout: str) -> None:
    if stdout.strip() != f"derbridge {__version__}":
        raise StartupFailure(f"--version printed {stdout.strip()!r}")


def _stats_printed(stdout: str) -> None:
    stats = json.loads(stdout)
    if not isinstance(stats, dict) or not stats:
        raise StartupFailure(f"messages stats --json printed {stdout.strip()[:200]!r}")


# The command lines each scenario starts (after the derbridge command), what each must print, and the target.
COMMANDS: dict[str, tuple[tuple[str, ...], Callable[[str], None], str]] = {
    "cli-version": (("--version",), _version_printed, "< 0.3 s (median start of derbridge --version)"),
    "cli-read-only": (READ_ONLY, _stats_printed, "< 1 s (median start of a read-only command, databases at head)"),
}


async def cli_startup(settings: Settings, workdir: Path, quick: bool, names: Sequence[str]) -> list[Result]:
    """Migrate the databases once (not timed), then start each chosen command and the bare interpreter
    ``runs`` times, interleaved; one result per chosen command, each against the same baseline."""
    runs = QUICK_RUNS if quick else RUNS
    migrate_all(settings)
    command = derbridge_command()
    progress(f"starting {len(names) + 1} command lines {runs} times each")
    baseline, *started = run_starts(
        [[sys.executable, "-c", "pass"], *([*command, *COMMANDS[name][0]] for name in names)],
        runs,
        child_env(settings),
        workdir,
    )
    measured = dict(zip(names, started, strict=True))
    for name, starts in measured.items():
        for output in starts.outputs:
            COMMANDS[name][1](output)
    database, transport = backend_names(settings)
    return [
        Result(
            scenario=name,
            database=database,
            transport=transport,
            sizes={"runs": runs},
            seconds=starts.median,
            rate=1 / starts.median,
            unit="starts",
            target=COMMANDS[name][2],
            baseline=Baseline(
                what="the bare interpreter's start-up (python -c pass), median",
                seconds=baseline.median,
                rate=1 / baseline.median,
            ),
            peak_rss_mb=max(starts.peak_rss_mb),
            process_peak_rss_mb=process_peak_rss_mb(),
            quick=quick,
            details={
                "command": " ".join(["derbridge", *COMMANDS[name][0]]),
                "started_as": " ".join(starts.argv[: len(command)]),
                **starts.details(),
                "baseline": baseline.details(),
            },
        )
        for name, starts in measured.items()
    ]


def scenario(name: str) -> Callable[[Settings, Path, bool], Coroutine[Any, Any, Result]]:
    """``name`` alone: :func:`cli_startup` with only it started."""

    async def run(settings: Settings, workdir: Path, quick: bool) -> Result:
        return (await cli_startup(settings, workdir, quick, [name]))[0]

    run.__doc__ = f"{name} alone: :func:`cli_startup` with only it started."
    return run
