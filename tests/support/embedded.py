"""The embedded ``derbridge up`` as a separate process, for the end-to-end tests that drive it as a user would:
on a free loopback port, over a data dir of SQLite files, the environment's ``DERBRIDGE_*`` left out."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

WAIT = 120.0
"""A bound on the wait for the server (a hang fails the test; nothing is timed)."""


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without ``DERBRIDGE_*``: a command uses its data dir's databases and token,
    whatever the shell running the tests says; ``extra`` added."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")} | extra


def derbridge(*args: str, cwd: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """A ``derbridge`` command run in ``cwd``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "derbridge", *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Embedded:
    """A running ``derbridge up``: where it answers, its service credential, its log (stderr)."""

    port: int
    base: str
    auth: dict[str, str]
    log: Path


@contextmanager
def embedded_up(home: Path, data_dir: str = "V", *, ready: str = "/readyz") -> Iterator[Embedded]:
    """``derbridge --data-dir DATA_DIR up`` in ``home``, once ``ready`` answers 200; stopped at the end."""
    port = free_port()
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "derbridge", "--data-dir", data_dir, "up", "--port", str(port)],
            cwd=home,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + WAIT
            while True:
                try:
                    if httpx.get(f"{base}{ready}", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
            token = (home / data_dir / "api-token").read_text().strip()
            yield Embedded(port, base, {"Authorization": f"Bearer {token}"}, log_path)
        finally:
            process.terminate()
            process.wait(timeout=30)
