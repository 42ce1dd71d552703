"""Run benchmark scenarios.

``python -m derbridge.bench.run SCENARIO BACKEND [--quick]`` runs one scenario in this process and prints
its JSON object on stdout. :func:`run_all` (what ``derbridge bench`` calls) starts one such process per
scenario and backend, so that each starts clean and its peak memory is its own, and reads the child's
peak RSS from ``wait4``.
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

from derbridge.bench.core import BACKENDS, Backend, BackendUnavailable, Result, backend_settings
from derbridge.bench.scenarios import SCENARIOS
from derbridge.infra.logging import configure_logging


def plan(names: Sequence[str] | None = None) -> list[tuple[str, Backend]]:
    """The ``(scenario, backend)`` pairs to run: every backend quality.md asks of each named scenario."""
    chosen = list(names) if names else list(SCENARIOS)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise KeyError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [(name, backend) for name in chosen for backend in SCENARIOS[name].backends]


def run_one(name: str, backend: Backend, *, quick: bool) -> dict[str, Any]:
    """One scenario on one backend in this process: its JSON object (``skipped`` when the backend is not
    available)."""
    configure_logging("WARNING", json=True)
    spec = SCENARIOS[name]
    with tempfile.TemporaryDirectory(prefix=f"derbridge-bench-{name}-") as directory:
        workdir = Path(directory)
        try:
            with backend_settings(backend, workdir, name.split("-")[0]) as settings:
                result: Result = asyncio.run(spec.run(settings, workdir, quick))
        except BackendUnavailable as why:
            return {"scenario": name, "backend": backend, "skipped": str(why)}
    return result.as_json()


def _child_env() -> dict[str, str]:
    """The environment of a scenario process: the developer's DERBRIDGE_* settings stay out (a scenario
    makes its own), the service URLs for benchmarks and tests stay in."""
    keep = ("DERBRIDGE_BENCH_", "DERBRIDGE_TEST_")
    return {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_") or k.startswith(keep)}


def run_isolated(name: str, backend: Backend, *, quick: bool) -> dict[str, Any]:
    """One scenario in a fresh Python process; its object, with the child's peak RSS as ``wait4`` saw it
    (``child_peak_rss_mb``), or an ``error`` when it failed."""
    args = [sys.executable, "-m", "derbridge.bench.run", name, backend] + (["--quick"] if quick else [])
    started = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, env=_child_env())  # noqa: S603 - our own module
    assert child.stdout is not None
    with child.stdout:
        output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in output.decode().splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {
            "scenario": name,
            "backend": backend,
            "error": f"exit status {child.returncode} after {time.perf_counter() - started:.1f} s (see stderr)",
        }
    data: dict[str, Any] = json.loads(lines[-1])
    data["child_peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    data["wall_seconds"] = round(time.perf_counter() - started, 1)
    return data


def run_all(
    names: Sequence[str] | None, *, quick: bool, emit: Callable[[dict[str, Any]], None]
) -> list[dict[str, Any]]:
    """Every planned pair in its own process, in order; ``emit`` gets each object as soon as it is in."""
    results = []
    for name, backend in plan(names):
        data = run_isolated(name, backend, quick=quick)
        emit(data)
        results.append(data)
    return results


def failed(results: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The results that are errors (a skipped backend is not one)."""
    return (r for r in results if "error" in r)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m derbridge.bench.run SCENARIO BACKEND [--quick]``."""
    parser = argparse.ArgumentParser(prog="python -m derbridge.bench.run", description=__doc__)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("--quick", action="store_true", help="every size divided by ten")
    options = parser.parse_args(argv)
    data = run_one(options.scenario, options.backend, quick=options.quick)
    print(json.dumps(data, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
