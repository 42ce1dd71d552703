"""``derbridge smoke`` against a real ``derbridge up`` in its own process (SQLite in a temporary data dir,
a free loopback port): it passes, passes again (nothing of the first run collides with the second), and
what it says it cleaned up is clean — read back through the public APIs, as an operator would, with a
business-logic client of the VTN for what only the VTN holds. And it fails with the step and the option
to check when a URL is wrong or nothing listens."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.embedded import clean_env, embedded_up, free_port

pytestmark = pytest.mark.slow


LOOP = [
    "reach",
    "customer",
    "program",
    "aggregator",
    "enrollment request",
    "enrollment active",
    "status check",
    "scores",
    "event",
    "cancellation",
]
CLEAN_UP = ["event cancelled", "unenrolled", "VEN deleted", "client revoked", "program closed", "customer closed"]


def smoke(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "derbridge", "--data-dir", "V", "smoke", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@dataclass
class Server:
    base: str
    auth: dict[str, str]
    log: Path
    home: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``derbridge up`` on a loopback port over ``tmp_path/V`` (SQLite), once it is ready."""
    with embedded_up(tmp_path) as up:
        yield Server(up.base, up.auth, up.log, tmp_path)


def _get(server: Server, path: str, **params: Any) -> Any:
    response = httpx.get(f"{server.base}{path}", params=params, headers=server.auth, timeout=30)
    assert response.status_code == 200, (path, response.text)
    return response.json()


def _passing_run(server: Server, *urls: str) -> dict[str, Any]:
    assethub, derms, vtn = urls
    done = smoke(server.home, "--assethub", assethub, "--derms", derms, "--vtn", vtn, "--timeout", "90", "--json")
    assert done.returncode == 0, done.stdout + done.stderr + server.log.read_text()[-4000:]
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["ok"] is True
    assert [s["step"] for s in report["steps"]] == LOOP + CLEAN_UP
    assert all(s["ok"] and s["failure"] is None for s in report["steps"]), report["steps"]
    assert [s["cleanup"] for s in report["steps"]] == [False] * len(LOOP) + [True] * len(CLEAN_UP)
    return report


def assert_cleaned_up(server: Server, report: dict[str, Any], bl_token: str) -> None:
    """Everything the run made is closed (history) or gone (the VTN's VEN and resource), read back through
    the APIs."""
    made = report["made"]
    code = made["program_code"]
    assert code == report["run_id"]
    assert code.startswith("SMOKE-")
    assert _get(server, f"/assethub/v1/programs/{code}")["status"] == "CLOSED"
    assert _get(server, f"/derms/v1/programs/{code}")["status"] == "CLOSED"
    assert _get(server, f"/assethub/v1/accounts/{made['cis_account_id']}")["status"] == "CLOSED"
    assert _get(server, f"/derms/v1/customers/{made['cis_account_id']}")["status"] == "CLOSED"
    enrollments = _get(server, "/assethub/v1/enrollments", program_code=code)["items"]
    assert [(e["enrollment_id"], e["state"]) for e in enrollments] == [(made["enrollment_id"], "UNENROLLED")]
    request = _get(server, f"/derms/v1/enrollment-requests/{made['head_end_system']}/{made['resource_id']}")
    assert request["state"] == "UNENROLLED"
    events = _get(server, "/derms/v1/events", program_code=code)["items"]
    assert [(e["event_id"], e["status"]) for e in events] == [(made["event_id"], "CANCELLED")]
    assert _get(server, f"/assethub/v1/events/{made['event_id']}")["status"] == "CANCELLED"
    # The device was released: no reservation is left holding it.
    reservations = _get(server, f"/derms/v1/events/{made['event_id']}/reservations")["items"]
    assert reservations, "the event reserved the test device"
    assert all(r["status"] != "RESERVED" for r in reservations), reservations
    client = _get(server, f"/derms/v1/edge-clients/{made['client_id']}")
    assert client["revoked_at"] is not None
    # What only the VTN holds, as the utility's business logic sees it: no VEN, no resource of the run.
    vtn = f"{server.base}/openadr3/3.1.0"
    as_bl = {"Authorization": f"Bearer {bl_token}"}
    assert httpx.get(f"{vtn}/vens", params={"venName": code}, headers=as_bl, timeout=30).json() == []
    assert httpx.get(f"{vtn}/vens/{made['ven_id']}", headers=as_bl, timeout=30).status_code == 404
    assert httpx.get(f"{vtn}/resources/{made['resource_id']}", headers=as_bl, timeout=30).status_code == 404
    assert all(code not in (e.get("targets") or []) for e in httpx.get(f"{vtn}/events", headers=as_bl).json())


def _business_logic_token(server: Server) -> str:
    made = httpx.post(
        f"{server.base}/derms/v1/edge-clients",
        json={"name": "test BL", "head_end_system": "UTILITY", "role": "bl"},
        headers=server.auth,
        timeout=30,
    )
    assert made.status_code == 201, made.text
    client = made.json()
    token = httpx.post(
        f"{server.base}/openadr3/3.1.0/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
        timeout=30,
    )
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


def test_smoke_passes_twice_against_up_and_leaves_only_closed_history(server: Server) -> None:
    # The URLs as an operator may type them: the server's root, with or without the scheme or a slash, or
    # each API's own URL.
    first = _passing_run(server, server.base.removeprefix("http://"), server.base + "/", server.base)
    second = _passing_run(
        server, f"{server.base}/assethub/v1", f"{server.base}/derms/v1/", f"{server.base}/openadr3/3.1.0"
    )
    assert first["run_id"] != second["run_id"]
    assert (
        first["endpoints"]
        == second["endpoints"]
        == {
            "assethub": f"{server.base}/assethub/v1",
            "derms": f"{server.base}/derms/v1",
            "vtn": f"{server.base}/openadr3/3.1.0",
        }
    )
    bl_token = _business_logic_token(server)
    for report in (first, second):
        assert_cleaned_up(server, report, bl_token)
        assert len(report["left"]) == 5, report["left"]  # event, enrollment, client, program, account


def test_human_output_is_one_line_per_step_and_a_wrong_derms_url_names_the_option(server: Server) -> None:
    done = smoke(server.home, "--assethub", server.base, "--derms", server.base, "--vtn", server.base)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(LOOP) + len(CLEAN_UP) + 1, done.stdout
    assert all(line.startswith("✓ ") for line in lines[:-1]), done.stdout
    assert lines[-1].startswith("smoke SMOKE-")
    assert " passed: 16 steps in " in lines[-1]
    assert "kept as history, closed:" in done.stderr

    wrong = smoke(server.home, "--assethub", server.base, "--derms", server.base + "/dermz", "--vtn", server.base)
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr  # a usage error: the URL is not the DERMS's API
    assert wrong.stdout.startswith("✗ reach "), wrong.stdout
    assert "failed at step 'reach'" in wrong.stderr
    assert f"no DERMS API at {server.base}/dermz/derms/v1" in wrong.stderr
    assert "--derms must be the server's root" in wrong.stderr
    assert len(wrong.stdout.splitlines()) == 2  # the failed step and what to check: nothing was made, nothing undone

    refused = smoke(
        server.home, "--assethub", server.base, "--derms", server.base, "--vtn", server.base, "--token", "x"
    )
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "Asset Hub refused the credential" in refused.stderr
    assert "--token" in refused.stderr


def test_smoke_where_nothing_listens_fails_at_reach_as_unreachable(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = smoke(tmp_path, "--assethub", nowhere, "--derms", nowhere, "--vtn", nowhere, "--json")
    assert done.returncode == 5, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    [step] = report["steps"]
    assert step["step"] == "reach"
    assert step["failure"] == "unreachable"
    assert f"cannot reach Asset Hub at {nowhere}/assethub/v1" in step["detail"]
    assert "--assethub" in step["check"]
    assert report["made"] == {}
    assert report["left"] == []
    assert not (tmp_path / "V" / "api-token").exists(), "a check must not write a token file"
