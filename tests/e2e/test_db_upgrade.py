"""``derbridge db upgrade`` as the one migration step of a deployment, and ``serve`` that only checks.

Migrations started together take turns on a lock per database: the test holds that lock itself while two
upgrades start, so both are certainly waiting at once (no timing luck), then lets go and checks that both
succeed, that exactly one migrated, and that the schema is there once. A served process opens only its
own databases and refuses one that is behind rather than racing to migrate it.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect, text

from derbridge.infra.db import create_sync_engine
from derbridge.migrations.runner import MIGRATION_LOCK_KEYS, current_revisions, downgrade, head_revisions
from tests.support.embedded import free_port
from tests.support.services import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 120.0


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_") or k.startswith("DERBRIDGE_TEST_")}
    env |= {"DERBRIDGE_DATA_DIR": str(tmp_path / "var"), "PYTHONPATH": str(ROOT / "src")}
    return env | {f"DERBRIDGE_{k.upper()}": v for k, v in settings.items()}


def _start(tmp_path: Path, name: str, env: dict[str, str], *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.err"
    with (tmp_path / f"{name}.out").open("wb") as out, log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "derbridge", *args], cwd=tmp_path, env=env, stdout=out, stderr=err
        )
    return process, log


def _run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "derbridge", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {DEADLINE:.0f} s for {what}")
        time.sleep(0.05)


def _finish(tmp_path: Path, name: str, process: subprocess.Popen[bytes]) -> tuple[int, list[dict[str, object]]]:
    code = process.wait(timeout=DEADLINE)
    stdout = (tmp_path / f"{name}.out").read_text()
    assert code == 0, (tmp_path / f"{name}.err").read_text()
    return code, json.loads(stdout)


@contextmanager
def _held_advisory_lock(url: str, key: int) -> Iterator[None]:
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_two_upgrades_at_once_on_a_new_postgresql_database_both_succeed_and_migrate_it_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database("upgrade_race")
    env = _env(tmp_path, assethub__database_url=url)

    with _held_advisory_lock(url, MIGRATION_LOCK_KEYS["assethub"]):
        first, first_log = _start(tmp_path, "first", env, "db", "upgrade", "--system", "assethub", "--json")
        second, second_log = _start(tmp_path, "second", env, "db", "upgrade", "--system", "assethub", "--json")
        # Both said they wait for the lock this test holds: they are blocked on it together.
        for log in (first_log, second_log):
            _wait_for(lambda log=log: "waiting for it" in log.read_text(), f"{log.name} to wait for the lock")
        assert current_revisions(url) is None  # nothing ran while the lock was held
    results = [_finish(tmp_path, "first", first)[1], _finish(tmp_path, "second", second)[1]]

    reports = sorted((r[0] for r in results), key=lambda r: not r["changed"])
    assert [r["system"] for r in reports] == ["assethub", "assethub"]
    head = sorted(head_revisions("assethub"))
    assert reports[0] == {"system": "assethub", "before": None, "after": head, "changed": True}
    assert reports[1]["before"] == reports[1]["after"] == head
    assert reports[1]["changed"] is False
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert {"outbox", "inbox", "enrollments"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    # The other systems were not named, so not touched: their databases were never even created.
    assert not (tmp_path / "var" / "derms.db").exists()
    assert not (tmp_path / "var" / "bridge.db").exists()


def test_an_upgrade_waits_for_the_lock_beside_a_sqlite_database(tmp_path: Path) -> None:
    env = _env(tmp_path)
    database = tmp_path / "var" / "derms.db"
    database.parent.mkdir(parents=True)
    with (tmp_path / "var" / "derms.db.migrate-lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        upgrading, log = _start(tmp_path, "upgrade", env, "db", "upgrade", "--system", "derms", "--json")
        _wait_for(lambda: "waiting for it" in log.read_text(), "the upgrade to wait for the lock")
        assert upgrading.poll() is None
        assert not database.exists()  # it waits before it opens the database at all
        fcntl.flock(lock, fcntl.LOCK_UN)
    _, report = _finish(tmp_path, "upgrade", upgrading)

    assert report == [{"system": "derms", "before": None, "after": sorted(head_revisions("derms")), "changed": True}]
    assert current_revisions(f"sqlite:///{database}") == head_revisions("derms")


def test_db_upgrade_says_what_it_did_and_db_status_what_is_left(tmp_path: Path) -> None:
    env = _env(tmp_path)

    status = _run(tmp_path, env, "db", "status")
    assert status.returncode == 1, status.stderr
    assert "assethub: (new) (head is" in status.stdout
    assert not (tmp_path / "var" / "assethub.db").exists()  # status changes nothing

    first = _run(tmp_path, env, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    head = ", ".join(sorted(head_revisions("bridge")))
    assert f"bridge: (new) -> {head}" in first.stdout.splitlines()
    again = _run(tmp_path, env, "db", "upgrade")
    assert again.returncode == 0, again.stderr
    assert f"bridge: at {head}, nothing to do" in again.stdout.splitlines()

    status = _run(tmp_path, env, "db", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert [(s["system"], s["at_head"]) for s in json.loads(status.stdout)] == [
        ("assethub", True),
        ("derms", True),
        ("bridge", True),
    ]

    downgrade("derms", f"sqlite:///{tmp_path / 'var' / 'derms.db'}", "-1")
    status = _run(tmp_path, env, "db", "status", "--system", "derms")
    assert status.returncode == 1
    assert "run derbridge db upgrade" in status.stdout


def test_serve_refuses_a_database_that_is_new_or_behind_and_names_the_step(tmp_path: Path) -> None:
    env = _env(tmp_path, api_token="test-token")

    new = _run(tmp_path, env, "serve", "derms", "--port", "0")
    assert new.returncode == 6
    assert "derms database" in new.stderr
    assert "run `derbridge db upgrade` first" in new.stderr

    assert _run(tmp_path, env, "db", "upgrade", "--system", "derms").returncode == 0
    downgrade("derms", f"sqlite:///{tmp_path / 'var' / 'derms.db'}", "-1")
    behind = _run(tmp_path, env, "serve", "derms", "--port", "0")
    assert behind.returncode == 6
    assert "behind" in behind.stderr
    assert "run `derbridge db upgrade` first" in behind.stderr
    assert current_revisions(f"sqlite:///{tmp_path / 'var' / 'derms.db'}") != head_revisions("derms")  # untouched


def test_serve_assethub_opens_only_its_own_database(tmp_path: Path) -> None:
    env = _env(tmp_path, api_token="test-token")
    assert _run(tmp_path, env, "db", "upgrade", "--system", "assethub").returncode == 0
    port = free_port()
    server, log = _start(tmp_path, "serve", env, "serve", "assethub", "--port", str(port))
    try:

        def ready() -> bool:
            assert server.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(ready, "serve assethub to be ready")
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["checks"] == {"assethub": "ok"}
    finally:
        server.terminate()
        server.wait(timeout=DEADLINE)
    # The DERMS's and the bridge's databases were neither needed nor opened.
    assert sorted(p.name for p in (tmp_path / "var").glob("*.db")) == ["assethub.db"]


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (
            # The issue: a bridge on PostgreSQL relaying from an empty SQLite file it made itself.
            {
                "bridge__database_url": "postgresql://derbridge@db.invalid/bridge",
                "assethub__database_url": "postgresql://derbridge@db.invalid/assethub",
                "bridge__targets": '{"assethub": "http://assethub:8080", "derms": "http://derms:8080"}',
            },
            "DERBRIDGE_DERMS__DATABASE_URL is not set",
        ),
        ({"bridge__targets": '{"assethub": "http://assethub:8080"}'}, "has no URL for derms"),
    ],
)
def test_serve_bridge_refuses_settings_that_cannot_work(tmp_path: Path, settings: dict[str, str], said: str) -> None:
    refused = _run(tmp_path, _env(tmp_path, api_token="test-token", **settings), "serve", "bridge", "--port", "0")

    assert refused.returncode == 2
    assert said in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "var").exists() or not list((tmp_path / "var").glob("*.db"))
