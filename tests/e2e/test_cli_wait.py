"""``derbridge wait``: each condition's failure path as a script meets it (one line, exit status 4 when it
does not come true in time, 3 for an event that does not exist), and its success on a settled system.
Their success against a live system is exercised by the README walkthrough (test_readme_walkthrough.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def derbridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "derbridge", "--data-dir", "V", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0].removeprefix("error: ")


def test_a_system_with_nothing_sent_is_idle_at_once(tmp_path: Path) -> None:
    result = derbridge("wait", "idle", "--timeout", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the bridge is idle: 0 messages carried" in result.stderr
    assert result.stdout == ""


def test_a_message_nobody_relays_keeps_the_bridge_busy_until_the_timeout(tmp_path: Path) -> None:
    # A program made in Asset Hub sends its sync to the DERMS; with no `derbridge up`, nothing relays it.
    created = derbridge(
        "program", "create", "WAIT-TEST", "--name", "Wait test", "--status", "ACTIVE", "--json", cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    result = derbridge("wait", "idle", "--timeout", "1", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    line = error_line(result)
    assert "1 not yet relayed" in line
    assert "is derbridge up (or serve bridge) running?" in line


def test_too_few_active_enrollments_ends_with_exit_status_4_and_says_where_to_look(tmp_path: Path) -> None:
    result = derbridge("wait", "enrollments", "--at-least", "3", "--timeout", "1", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    assert error_line(result).startswith("0 of the 3 enrollments waited for are ACTIVE after 1 s")


def test_a_bad_state_lists_the_states(tmp_path: Path) -> None:
    result = derbridge("wait", "enrollments", "--state", "DONE", cwd=tmp_path)
    assert result.returncode == 2
    assert "PENDING" in result.stderr
    assert "ACTIVE" in result.stderr


def test_outcomes_of_an_unknown_event_exit_3(tmp_path: Path) -> None:
    result = derbridge("wait", "outcomes", "no-such-event", "--timeout", "1", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "no-such-event" in result.stderr


def test_a_server_that_is_not_there_is_not_ready(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe is closed.
    result = derbridge("wait", "ready", "--url", f"http://127.0.0.1:{port}", "--timeout", "1", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    line = error_line(result)
    assert f"http://127.0.0.1:{port} was not ready after 1 s" in line
    assert "is it running?" in line


def test_sim_aggregator_refuses_a_credentials_file_that_is_not_a_client(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.csv"
    inventory.write_text("head_end_system,nic_id\n")
    bad = tmp_path / "client.json"
    bad.write_text(json.dumps({"id": "x"}))
    result = derbridge(
        "sim", "aggregator", "--vtn", "http://127.0.0.1:9", "--inventory", str(inventory),
        "--credentials", str(bad), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "is not what `derbridge edge client add --json` writes" in error_line(result)
    neither = derbridge("sim", "aggregator", "--vtn", "http://127.0.0.1:9", "--inventory", str(inventory), cwd=tmp_path)
    assert neither.returncode == 2, neither.stderr
    assert error_line(neither) == "give --credentials FILE, or both --client-id and --client-secret"
