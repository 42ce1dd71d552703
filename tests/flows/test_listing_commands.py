"""The listing commands' reads on each database: ``derbridge events|devices|enrollments`` run in-process
against the databases an embedded system filled, on SQLite and on PostgreSQL (the demo-based CLI tests in
tests/e2e/test_cli_listing.py cover the commands as an operator runs them, on SQLite)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from derbridge.cli import app
from derbridge.runtime import Runtime
from tests.support.events import DEVICES, PROGRAM, RANKED, create_event, prepare

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command would point the process's logging at the runner's captured output, closed after each
    command, while this process's bridge worker goes on logging."""
    monkeypatch.setattr("derbridge.infra.logging.configure_logging", lambda *args, **kwargs: None)


async def cli(runtime: Runtime, *args: str) -> Any:
    """Run ``derbridge ARGS`` on the runtime's databases (in a thread: the command runs its own event loop)."""
    settings = runtime.settings
    env = {
        "DERBRIDGE_ASSETHUB__DATABASE_URL": settings.assethub.database_url,
        "DERBRIDGE_DERMS__DATABASE_URL": settings.derms.database_url,
    }
    command = ["--data-dir", str(settings.data_dir), *args]
    return await asyncio.to_thread(CliRunner().invoke, app, command, env=env)


async def cli_json(runtime: Runtime, *args: str) -> Any:
    result = await cli(runtime, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_events_devices_and_enrollments_read_on_each_database(system: System, tmp_path: Path) -> None:
    await prepare(system, tmp_path)
    event = await create_event(system, target_devices=3)
    await system.settle()
    runtime = system.runtime

    listed = await cli_json(runtime, "events", "list", "--status", "SCHEDULED", "--program", PROGRAM)
    assert [e["event_id"] for e in listed["items"]] == [event["event_id"]]
    assert (await cli_json(runtime, "events", "list", "--status", "CANCELLED"))["items"] == []
    assert (await cli_json(runtime, "events", "list", "--since", event["end_at"]))["items"] == []

    shown = await cli_json(runtime, "events", "show", event["event_id"])
    assert shown["derms"]["counts"] == {"reservations": {"RESERVED": 3}, "outcomes": {}}
    assert shown["assethub"]["participations"] == {"by_status": {"RESERVED": 3}, "by_outcome": {}}

    at_derms = await cli_json(runtime, "devices", "list", "--availability", "AVAILABLE", "--program", PROGRAM)
    assert sorted((d["head_end_system"], d["nic_id"]) for d in at_derms["items"]) == sorted(d.key for d in DEVICES)
    assert (await cli_json(runtime, "devices", "list", "--communication", "ONLINE"))["items"] == []

    head_end, nic_id = RANKED[0]
    device = await cli_json(runtime, "devices", "show", f"{head_end}:{nic_id}")
    assert device["assethub"]["device"]["nic_id"] == nic_id
    assert device["assethub"]["enrollments"] == []
    assert device["assethub"]["score_snapshot"] is None
    assert device["derms"]["device"]["availability"][0]["availability"] == "AVAILABLE"

    paged = await cli_json(runtime, "devices", "list", "--head-end", "ECOBEE", "--limit", "1")
    assert paged["next_after"] == str(paged["items"][0]["device_id"])
    assert (await cli_json(runtime, "enrollments", "list", "--state", "ACTIVE")) == {"items": [], "next_after": None}

    missing = await cli(runtime, "events", "show", "no-such-event")
    assert missing.exit_code == 3
    assert "no event no-such-event; `derbridge events list` shows them" in missing.output
