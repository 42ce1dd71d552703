"""Run benchmark scenarios.

``python -m derbridge.bench.run SCENARIO[,SCENARIO…] BACKEND [--quick]`` runs scenarios in this process and
prints one JSON object per scenario on stdout. :func:`run_all` (what ``derbridge bench`` calls) starts one
such process per scenario and backend, so that each starts clean and its peak memory is its own, and reads
the child's peak RSS from ``wait4`` — except that the scenarios of one world (F4, F5 and F7: one seeded
million-device state) share one process per backend: seeding that state is most of their wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from derbridge.bench.core import BACKENDS, Backend, BackendUnavailable, backend_settings, cpu_probe_ms
from derbridge.bench.scenarios.registry import SCENARIOS, WORLDS
from derbridge.infra.logging import configure_logging


def plan(names: Sequence[str] | None = None) -> list[tuple[str, Backend]]:
    """The ``(scenario, backend)`` pairs to run: every backend quality.md asks of each named scenario."""
    chosen = list(names) if names else list(SCENARIOS)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise KeyError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [(name, backend) for name in chosen for backend in SCENARIOS[name].backends]


def batches(pairs: Sequence[tuple[str, Backend]]) -> list[tuple[tuple[str, ...], Backend]]:
    """``pairs`` (from :func:`plan`) as the runs that do them: the scenarios of one world on one backend are
    one run, where the first of them stands in the plan; any other scenario is a run of its own."""
    runs: list[tuple[list[str], Backend]] = []
    shared: dict[tuple[str, Backend], list[str]] = {}
    for name, backend in pairs:
        world = SCENARIOS[name].world
        if world is None:
            runs.append(([name], backend))
        elif (world, backend) in shared:
            shared[world, backend].append(name)
        else:
            shared[world, backend] = [name]
            runs.append((shared[world, backend], backend))
    return [(tuple(names), backend) for names, backend in runs]


def run_one(name: str, backend: Backend, *, quick: bool) -> dict[str, Any]:
    """One scenario on one backend in this process: its JSON object (``skipped`` when the backend is not
    available)."""
    return run_here([name], backend, quick=quick)[0]


def run_here(names: Sequence[str], backend: Backend, *, quick: bool) -> list[dict[str, Any]]:
    """Scenarios on one backend in this process (several only when they share a world): their objects."""
    configure_logging("WARNING", json=True)
    probe = cpu_probe_ms()
    worlds = {SCENARIOS[name].world for name in names}
    if len(names) > 1 and (len(worlds) != 1 or None in worlds):
        raise ValueError(f"only scenarios of one world share a process, not {', '.join(names)}")
    with tempfile.TemporaryDirectory(prefix=f"derbridge-bench-{names[0]}-") as directory:
        workdir = Path(directory)
        try:
            with backend_settings(backend, workdir, names[0].split("-")[0]) as settings:
                world = SCENARIOS[names[0]].world
                if world is None:
                    results = [asyncio.run(SCENARIOS[names[0]].run(settings, workdir, quick))]
                else:
                    results = asyncio.run(WORLDS[world](settings, workdir, quick, names))
        except BackendUnavailable as why:
            return [{"scenario": name, "backend": backend, "skipped": str(why)} for name in names]
    return [{**result.as_json(), "cpu_probe_ms": probe} for result in results]


def _child_env() -> dict[str, str]:
    """The environment of a scenario process: the developer's DERBRIDGE_* settings stay out (a scenario
    makes its own), the service URLs for benchmarks and tests stay in."""
    keep = ("DERBRIDGE_BENCH_", "DERBRIDGE_TEST_")
    return {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_") or k.startswith(keep)}


def run_isolated(name: str, backend: Backend, *, quick: bool) -> dict[str, Any]:
    """One scenario in a fresh Python process; its object, with the child's peak RSS as ``wait4`` saw it
    (``child_peak_rss_mb``), or an ``error`` when it failed."""
    return run_isolated_many([name], backend, quick=quick)[0]


def run_isolated_many(names: Sequence[str], backend: Backend, *, quick: bool) -> list[dict[str, Any]]:
    """Scenarios of one world (or one scenario) in one fresh process: an object each. ``wall_seconds`` and
    ``child_peak_rss_mb`` are the process's, so shared by the scenarios of a world (``process`` names them)."""
    args = [sys.executable, "-m", "derbridge.bench.run", ",".join(names), backend] + (["--quick"] if quick else [])
    started = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, env=_child_env())  # noqa: S603 - our own module
    assert child.stdout is not None
    with child.stdout:
        output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    wall = round(time.perf_counter() - started, 1)
    if child.returncode != 0 or len(lines) != len(names):
        return [
            {
                "scenario": name,
                "backend": backend,
                "error": f"exit status {child.returncode} after {wall} s (see stderr)",
            }
            for name in names
        ]
    for data in lines:
        data["child_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
        data["wall_seconds"] = wall
        if len(names) > 1:
            data["process"] = list(names)
    return lines


def run_all(
    names: Sequence[str] | None, *, quick: bool, emit: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    """Every planned pair, each run (:func:`batches`) in its own process, in order; ``emit`` gets each object
    as soon as its process is done."""
    results = []
    for run_names, backend in batches(plan(names)):
        for data in run_isolated_many(run_names, backend, quick=quick):
            emit(data)
            results.append(data)
    return results


def failed(results: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The results that are errors (a skipped backend is not one)."""
    return (r for r in results if "error" in r)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m derbridge.bench.run SCENARIO[,SCENARIO…] BACKEND [--quick]``."""
    parser = argparse.ArgumentParser(prog="python -m derbridge.bench.run", description=__doc__)
    parser.add_argument("scenarios", help="a scenario, or scenarios of one world separated by commas")
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("--quick", action="store_true", help="every size divided by ten")
    options = parser.parse_args(argv)
    names = options.scenarios.split(",")
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    for data in run_here(names, options.backend, quick=options.quick):
        print(json.dumps(data, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
