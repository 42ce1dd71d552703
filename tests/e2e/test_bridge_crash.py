"""Exactly once through kills: SIGKILL the bridge worker at random moments while 10,000 messages flow,
restart it, and prove with a ledger kept outside the processes that every message took effect exactly once
and none is missing — on ``sql`` with SQLite, on ``sql`` with PostgreSQL, and on ``amqp``.

The bridge process relays Asset Hub's outbox, consumes the queue and delivers over real HTTP to a ledger
target (``tests/support/ledger_app.py``), which fails 3 % of calls to add retries to the crashes. The test
process keeps writing to the outbox while the worker is killed and restarted.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import func, select

from derbridge.assethub.adapters.tables import outbox
from derbridge.bridge.tables import queue_messages, tracked_messages
from derbridge.infra.db import create_sync_engine
from derbridge.infra.outbox import outbox_rows
from derbridge.migrations.runner import upgrade
from tests.support.embedded import free_port
from tests.support.ledger_app import create_ledger_tables, effects
from tests.support.messages import enrollment_sync

if TYPE_CHECKING:
    from tests.support.services import PostgresServer
    from tests.support.transport import AmqpVhost

pytest_plugins = ["tests.support.transport"]
pytestmark = pytest.mark.slow

MESSAGES = int(os.environ.get("DERBRIDGE_CRASH_MESSAGES", "10000"))
BATCH = 500
KILLS = int(os.environ.get("DERBRIDGE_CRASH_KILLS", "8"))
DEADLINE_SECONDS = 600
ROOT = Path(__file__).resolve().parents[2]


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer: {log.read_text()}")


class Processes:
    """The ledger target and the (repeatedly killed) bridge worker, as real processes."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.worker: subprocess.Popen[bytes] | None = None
        self.ledger: subprocess.Popen[bytes] | None = None
        self.logs: list[object] = []
        self.starts = 0

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / log_name).open("ab")
        self.logs.append(log)
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def start_ledger(self, port: int, ledger_url: str) -> None:
        env = self.env | {"LEDGER_URL": ledger_url, "LEDGER_FAILURE_RATE": "0.03"}
        self.ledger = self._spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "tests.support.ledger_app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            "ledger.log",
            env,
        )
        _wait_http(f"http://127.0.0.1:{port}/docs", self.ledger, self.tmp / "ledger.log")

    def start_worker(self) -> None:
        self.starts += 1
        self.worker = self._spawn(
            [sys.executable, "-m", "derbridge", "serve", "bridge", "--port", self.env["CRASH_WORKER_PORT"]],
            "worker.log",
            self.env,
        )

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(timeout=30)

    def stop(self) -> None:
        for process in (self.worker, self.ledger):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        for log in self.logs:
            log.close()  # type: ignore[attr-defined]


@pytest.fixture(
    params=[
        "sql-sqlite",
        pytest.param("sql-postgres", marks=pytest.mark.postgres),
        "amqp",
    ]
)
def bridge_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment of a bridge whose databases and queues belong to this test alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_") or k.startswith("DERBRIDGE_TEST_")}
    env |= {
        "DERBRIDGE_DATA_DIR": str(tmp_path / "var"),
        "DERBRIDGE_API_TOKEN": "test-token",
        "DERBRIDGE_LOG_LEVEL": "WARNING",
        "DERBRIDGE_BRIDGE__RELAY_SYSTEMS": '["assethub"]',
        "DERBRIDGE_BRIDGE__LEASE_SECONDS": "3",
        "DERBRIDGE_BRIDGE__BATCH_SIZE": "200",
        "DERBRIDGE_BRIDGE__CONCURRENCY": "32",
        "DERBRIDGE_BRIDGE__POLL_SECONDS": "0.05",
        "DERBRIDGE_BRIDGE__RETRY__BASE_SECONDS": "0.05",
        "DERBRIDGE_BRIDGE__RETRY__CAP_SECONDS": "0.5",
        "DERBRIDGE_BRIDGE__RETRY__MAX_ATTEMPTS": "1000",
        "PYTHONPATH": str(ROOT),
    }
    if request.param == "sql-postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        env["DERBRIDGE_ASSETHUB__DATABASE_URL"] = server.create_database("crash_assethub")
        env["DERBRIDGE_BRIDGE__DATABASE_URL"] = server.create_database("crash_bridge")
        env["CRASH_LEDGER_URL"] = server.create_database("crash_ledger")
    else:
        env["CRASH_LEDGER_URL"] = f"sqlite:///{tmp_path / 'ledger.db'}"
    if request.param == "amqp":
        vhost: AmqpVhost = request.getfixturevalue("amqp_vhost")
        env["DERBRIDGE_BRIDGE__TRANSPORT"] = "amqp"
        env["DERBRIDGE_BRIDGE__AMQP_URL"] = vhost.url
    return env


def _url(env: dict[str, str], system: str, tmp: Path) -> str:
    return env.get(f"DERBRIDGE_{system.upper()}__DATABASE_URL") or f"sqlite:///{tmp / 'var' / f'{system}.db'}"


def test_every_message_takes_effect_exactly_once_through_sigkills(bridge_env: dict[str, str], tmp_path: Path) -> None:
    rng = random.Random(20271)
    assethub_url = _url(bridge_env, "assethub", tmp_path)
    bridge_url = _url(bridge_env, "bridge", tmp_path)
    ledger_url = bridge_env["CRASH_LEDGER_URL"]
    upgrade("assethub", assethub_url)
    upgrade("bridge", bridge_url)
    create_ledger_tables(ledger_url)
    ledger_port, worker_port = free_port(), free_port()
    bridge_env["DERBRIDGE_BRIDGE__TARGETS"] = json.dumps({"derms": f"http://127.0.0.1:{ledger_port}"})
    bridge_env["CRASH_WORKER_PORT"] = str(worker_port)

    source = create_sync_engine(assethub_url)
    bridge_db = create_sync_engine(bridge_url)
    ledger_db = create_sync_engine(ledger_url)
    processes = Processes(tmp_path, bridge_env)
    sent: set[str] = set()
    try:
        processes.start_ledger(ledger_port, ledger_url)
        processes.start_worker()
        kills = 0
        deadline = time.monotonic() + DEADLINE_SECONDS
        next_kill = time.monotonic() + rng.uniform(0.5, 2.0)
        while True:
            assert time.monotonic() < deadline, f"not done in {DEADLINE_SECONDS}s: {processes.tmp / 'worker.log'}"
            if len(sent) < MESSAGES:  # keep messages flowing while the worker dies and comes back
                batch = [enrollment_sync(len(sent) + i) for i in range(min(BATCH, MESSAGES - len(sent)))]
                with source.begin() as connection:
                    connection.execute(outbox.insert(), outbox_rows(batch))
                sent.update(e.message_id for e in batch)
            if kills < KILLS and time.monotonic() >= next_kill:
                processes.kill_worker()
                kills += 1
                time.sleep(rng.uniform(0, 0.5))
                processes.start_worker()
                next_kill = time.monotonic() + rng.uniform(0.5, 3.0)
            if len(sent) == MESSAGES and kills == KILLS and _settled(source, bridge_db, bridge_env):
                break
            assert processes.worker is not None
            assert processes.worker.poll() is None, (tmp_path / "worker.log").read_text()[-5000:]
            time.sleep(0.2)
    finally:
        processes.stop()

    with ledger_db.connect() as connection:
        ledger = dict(connection.execute(select(effects.c.message_id, effects.c.applied)).tuples().all())
    with bridge_db.connect() as connection:
        states = dict(
            connection.execute(select(tracked_messages.c.state, func.count()).group_by(tracked_messages.c.state))
            .tuples()
            .all()
        )
    for engine in (source, bridge_db, ledger_db):
        engine.dispose()
    assert kills == KILLS
    assert processes.starts == KILLS + 1
    missing = sent - ledger.keys()
    twice = {m: n for m, n in ledger.items() if n != 1}
    unexpected = ledger.keys() - sent
    assert not missing, f"{len(missing)} messages never took effect"
    assert not twice, f"{len(twice)} messages took effect more than once"
    assert not unexpected
    assert states == {"delivered": MESSAGES}


def _settled(source: object, bridge_db: object, env: dict[str, str]) -> bool:
    """Everything published, nothing waiting on a queue, every tracked message delivered."""
    from sqlalchemy.engine import Engine

    assert isinstance(source, Engine)
    assert isinstance(bridge_db, Engine)
    with source.connect() as connection:
        if connection.scalar(select(func.count()).select_from(outbox).where(outbox.c.published_at.is_(None))):
            return False
    with bridge_db.connect() as connection:
        delivered = connection.scalar(
            select(func.count()).select_from(tracked_messages).where(tracked_messages.c.state == "delivered")
        )
        if delivered != MESSAGES:
            return False
        if env.get("DERBRIDGE_BRIDGE__TRANSPORT") != "amqp":
            return not connection.scalar(select(func.count()).select_from(queue_messages))
    return True
