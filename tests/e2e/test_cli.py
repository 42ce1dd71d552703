"""The command line as an operator runs it: real processes, real files, real exit statuses."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.embedded import derbridge, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def utility(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("utility")
    result = derbridge("generate", "--customers", "2000", "--seed", "7", "--out", str(out), "--json", cwd=out)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["customers"] == 2000
    return out


def test_generate_then_import_loads_both_systems_and_a_second_import_changes_nothing(
    utility: Path, tmp_path: Path
) -> None:
    extract = str(utility / "cis_extract.csv")
    first = derbridge("--data-dir", "V", "cis", "import", extract, "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    counts = json.loads(first.stdout)
    rows = len((utility / "cis_extract.csv").read_text().splitlines()) - 1
    for system in ("assethub", "derms"):
        assert counts[system] == {"read": rows, "inserted": rows, "updated": 0, "unchanged": 0, "rejected": 0}

    again = derbridge("--data-dir", "V", "cis", "import", extract, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for system in ("assethub", "derms"):
        assert json.loads(again.stdout)[system] == {
            "read": rows,
            "inserted": 0,
            "updated": 0,
            "unchanged": rows,
            "rejected": 0,
        }


def test_a_corrupted_row_is_named_by_line_the_rest_loads_and_the_exit_status_says_so(
    utility: Path, tmp_path: Path
) -> None:
    lines = (utility / "cis_extract.csv").read_text().splitlines()
    lines[41] = lines[41].replace(",ACTIVE,", ",GONE,", 1)  # line 42 of the file
    corrupted = tmp_path / "corrupted.csv"
    corrupted.write_text("\n".join(lines) + "\n")

    result = derbridge("--data-dir", "V", "cis", "import", str(corrupted), "--json", cwd=tmp_path)

    assert result.returncode == 1
    assert "42" in result.stderr
    assert "account_status" in result.stderr
    counts = json.loads(result.stdout)
    rows = len(lines) - 1
    assert counts["assethub"]["rejected"] == 1
    assert counts["assethub"]["inserted"] == rows - 1
    assert counts["derms"]["inserted"] == rows - 1


def test_a_file_that_is_not_a_cis_extract_is_refused_with_status_2(utility: Path, tmp_path: Path) -> None:
    inventory = utility / "aggregators" / "ECOBEE.csv"
    result = derbridge("--data-dir", "V", "cis", "import", str(inventory), "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a CIS extract" in result.stderr
    assert "Nothing was loaded" in result.stderr
    assert result.stdout == ""


def test_config_show_masks_the_database_password(tmp_path: Path) -> None:
    env_url = "postgresql://derbridge:s3cret@db.example/assethub"
    result = subprocess.run(
        [sys.executable, "-m", "derbridge", "config", "show"],
        cwd=tmp_path,
        env={**os.environ, "DERBRIDGE_ASSETHUB__DATABASE_URL": env_url, "DERBRIDGE_API_TOKEN": "hush"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "s3cret" not in result.stdout
    assert "hush" not in result.stdout
    assert shown["assethub"]["database_url"] == "postgresql://derbridge:***@db.example/assethub"
    assert shown["derms"]["database_url"].startswith("sqlite:///")


def test_demo_runs_the_whole_loop_and_writes_its_summary(tmp_path: Path) -> None:
    result = derbridge(
        "--data-dir", "V", "demo", "--customers", "300", "--seed", "3", "--summary", "S.json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "S.json").read_text())
    assert set(summary["flows"]) == {
        "enrollment-request",
        "device-status-check",
        "enrollment-sync",
        "device-score-transfer",
        "event-reservation",
        "event-cancellation",
        "event-outcome",
        "program-sync",
    }
    for flow, counts in summary["flows"].items():
        assert counts["delivered"] > 0, flow
        assert counts["pending"] == counts["retrying"] == counts["parked"] == counts["dead"] == 0, flow
    assert summary["enrollments"]["ACTIVE"] > 0
    assert summary["enrollments"]["REJECTED"] > 0  # the generator plants ~3 % of requests to be refused
    assert summary["scores"]["rows"] > 0
    completed, cancelled = summary["events"]
    assert completed["status"] == "COMPLETED"
    assert sum(completed["outcomes"].values()) == completed["reserved"]
    assert cancelled["status"] == "CANCELLED"
    assert all(summary["consistency"].values())
    assert summary["consistency"]["programs_match"]
    assert "the two systems agree" in result.stdout
    # Whole ids in the narration (UUIDv7 made in the same second share their first characters), and no
    # Python warning or log line on either stream.
    for event in (completed, cancelled):
        assert f"event {event['event_id']} reserved" in result.stdout
    assert "…" not in result.stdout
    assert "Warning" not in result.stdout + result.stderr
    assert result.stderr == ""
    # The closing hint runs as typed: this test runs `python -m derbridge`, so it names this interpreter.
    hint = result.stdout.strip().splitlines()[-1].split("Explore: ", 1)[1]
    assert shlex.split(hint) == [sys.executable, "-m", "derbridge", "--data-dir", "V/demo", "up"]


def test_up_serves_both_apis_health_and_metrics_on_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "derbridge", "--data-dir", "V", "up", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").json()["checks"] == {
            "assethub": "ok",
            "derms": "ok",
            "bridge": "ok",
            "bridge worker": "ok",
        }
        token = (tmp_path / "V" / "api-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/assethub/v1/programs", headers=auth).status_code == 200
        assert httpx.get(f"{base}/derms/v1/programs", headers=auth).status_code == 200
        refused = httpx.get(f"{base}/derms/v1/programs")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert "derbridge_http_request_seconds" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/assethub/v1/openapi.json").json()["info"]["title"] == "derbridge Asset Hub API"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_operator_commands_on_the_demo_systems(tmp_path: Path) -> None:
    demo = derbridge("--data-dir", "V", "demo", "--customers", "200", "--seed", "5", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    systems = ["--data-dir", "V/demo"]

    created = derbridge(
        *systems, "derms", "event", "create", "--program", "SUMMER-BYOT", "--start", "2030-07-01T18:00:00",
        "--end", "2030-07-01T20:00:00", "--devices", "10", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    event = json.loads(created.stdout)
    assert (event["status"], event["reserved_count"]) == ("SCHEDULED", 10)

    cancelled = derbridge(*systems, "derms", "event", "cancel", event["event_id"], cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "CANCELLED" in cancelled.stdout
    again = derbridge(*systems, "derms", "event", "cancel", event["event_id"], cwd=tmp_path)
    assert again.returncode == 6  # refused by the event's state
    assert "cannot be cancelled" in again.stderr

    # Logs, even at DEBUG, go to stderr only: stdout stays the command's JSON.
    scores = derbridge(*systems, "--log-level", "DEBUG", "score", "transfer", "--json", cwd=tmp_path)
    assert scores.returncode == 0, scores.stderr
    assert json.loads(scores.stdout)["status"] == "transferred"
    assert "score transfer sent" in scores.stderr
    quiet = derbridge(*systems, "score", "transfer", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""  # a command logs at WARNING unless asked: its output says what it did
    assert quiet.stdout.count("\n") == 1

    stats = derbridge(*systems, "messages", "stats", "--json", cwd=tmp_path)
    counts = json.loads(stats.stdout)
    assert len(counts) == 8  # every flow, program sync (the demo's program) included
    assert counts["event-reservation"]["delivered"] >= 2  # the demo's two events (the CLI's waits for a bridge)
    dead = derbridge(*systems, "messages", "list", "--state", "dead", "--json", cwd=tmp_path)
    assert json.loads(dead.stdout) == []


def test_programs_are_managed_from_the_command_line(tmp_path: Path) -> None:
    systems = ["--data-dir", "V"]

    created = derbridge(
        *systems, "program", "create", "SUMMER-BYOT", "--name", "Summer BYOT", "--status", "ACTIVE",
        "--opens", "2027-03-01T00:00:00", "--expected-shed-kw", "1.5", "--rule", "fatigue_cap=0.3", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    program = json.loads(created.stdout)
    assert (program["status"], program["version"], program["sync_state"]) == ("ACTIVE", 1, "SENT")
    assert program["enrollment_opens_at"] == "2027-03-01T00:00:00Z"
    assert (program["rules"]["expected_shed_kw"], program["rules"]["fatigue_cap"]) == (1.5, 0.3)

    # Refusals are one clear line each, with a non-zero exit status; nothing changes.
    again = derbridge(*systems, "program", "create", "SUMMER-BYOT", "--name", "Again", cwd=tmp_path)
    assert again.returncode == 6  # refused by the state things are in
    assert "exists" in again.stderr
    assert "derbridge program update" in again.stderr
    bad = derbridge(*systems, "program", "create", "lower", "--name", "x", "--rule", "fatigue_cap=2", cwd=tmp_path)
    assert bad.returncode == 2
    assert "PROGRAM_CODE" in bad.stderr
    assert "rules.fatigue_cap" in bad.stderr
    backwards = derbridge(*systems, "program", "update", "SUMMER-BYOT", "--status", "DRAFT", cwd=tmp_path)
    assert backwards.returncode == 6  # refused by the state the program is in, as the README's exit codes say
    assert backwards.stderr.count("\n") == 1  # one line, naming the option
    assert "--status: a ACTIVE program cannot become DRAFT" in backwards.stderr
    missing = derbridge(*systems, "program", "update", "NOPE", "--name", "x", cwd=tmp_path)
    assert missing.returncode == 3
    assert "NOPE" in missing.stderr

    updated = derbridge(
        *systems, "program", "update", "SUMMER-BYOT", "--outcome-grace-hours", "12", "--json", cwd=tmp_path
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert (json.loads(updated.stdout)["version"], json.loads(updated.stdout)["rules"]["fatigue_cap"]) == (2, 0.3)
    closed = derbridge(*systems, "program", "close", "SUMMER-BYOT", cwd=tmp_path)
    assert closed.returncode == 0, closed.stderr
    assert "CLOSED, version 3" in closed.stdout
    # Sent again unchanged (after an upgrade from a release without program sync): the next version.
    resent = derbridge(*systems, "program", "sync", "SUMMER-BYOT", cwd=tmp_path)
    assert resent.returncode == 0, resent.stderr
    assert "SUMMER-BYOT sent again: CLOSED, version 4" in resent.stdout
    assert derbridge(*systems, "program", "sync", "NOPE", cwd=tmp_path).returncode == 3

    listed = derbridge(*systems, "program", "list", "--status", "CLOSED", "--json", cwd=tmp_path)
    assert [(p["program_code"], p["version"]) for p in json.loads(listed.stdout)] == [("SUMMER-BYOT", 4)]
    shown = derbridge(*systems, "program", "show", "SUMMER-BYOT", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "CLOSED" in shown.stdout
    assert "rules.outcome_grace_hours" in shown.stdout
    # Each version waits in Asset Hub's outbox for the bridge (derbridge up) to carry it to the DERMS.
    stats = json.loads(derbridge(*systems, "messages", "stats", "--json", cwd=tmp_path).stdout)
    assert "program-sync" in stats
