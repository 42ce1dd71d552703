"""``python -m derbridge.bench.launcher``: start command lines as fresh processes and time each start.

It reads ``{"lines": [[argv…], …], "runs": N, "env": {…}, "cwd": "…"}`` on stdin, starts every line once
untimed (bytecode caches, page cache), then ``runs`` rounds of every line in turn (interleaved, so that the
machine's noise falls on all alike), and prints ``[[{seconds, cpu_seconds, peak_rss_mb, status, stdout,
stderr}, …], …]`` (one list per line) on stdout.

It imports only the standard library, and is a process of its own, because Linux's ``wait4`` reports a
child's peak RSS as at least that of the process it was forked from: started from a benchmark process of
200 MB, ``python -c pass`` would show 200 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any


def start(argv: list[str], env: dict[str, str], cwd: str) -> dict[str, Any]:
    """Run ``argv`` once: wall seconds, CPU seconds (user + system) and peak RSS (MB) as ``wait4`` saw them,
    exit status, stdout and the end of stderr."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, env=env, cwd=cwd)  # noqa: S603 - the benchmark's own command lines
        assert child.stdout is not None
        with child.stdout:
            stdout = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")[-2000:]
    return {
        "seconds": seconds,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "status": child.returncode,
        "stdout": stdout.decode(errors="replace"),
        "stderr": stderr,
    }


def main() -> int:
    """Read the plan on stdin, print the starts on stdout."""
    plan = json.load(sys.stdin)
    lines: list[list[str]] = plan["lines"]
    for argv in lines:
        start(argv, plan["env"], plan["cwd"])
    starts: list[list[dict[str, Any]]] = [[] for _ in lines]
    for _ in range(plan["runs"]):
        for index, argv in enumerate(lines):
            starts[index].append(start(argv, plan["env"], plan["cwd"]))
    json.dump(starts, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
