"""Errors as a person meets them: one line on stderr saying what to do, and a distinct exit status (the
README's "Exit codes"). Real processes against a real ``derbridge up`` on a loopback port."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.embedded import derbridge, embedded_up, free_port

pytestmark = pytest.mark.slow


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error a command printed: exactly one line, no traceback, nothing on stdout."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    assert lines[0].startswith("error: ")
    return lines[0].removeprefix("error: ")


@dataclass
class Server:
    port: int
    base: str
    home: Path
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``derbridge up`` on a loopback port over ``home/V`` (SQLite), once it is healthy, with a generated
    utility in ``home/U``."""
    home = tmp_path_factory.mktemp("errors")
    generated = derbridge("generate", "--customers", "20", "--seed", "3", "--out", "U", "--json", cwd=home)
    assert generated.returncode == 0, generated.stderr
    with embedded_up(home, ready="/healthz") as up:
        yield Server(up.port, up.base, home, up.log)


def sim(vtn: str, client_id: str, secret: str, home: Path) -> subprocess.CompletedProcess[str]:
    return derbridge(
        "sim", "aggregator", "--vtn", vtn, "--client-id", client_id, "--client-secret", secret,
        "--inventory", "U/aggregators/ECOBEE.csv", "--once", cwd=home,
    )  # fmt: skip


def test_a_wrong_secret_is_one_line_naming_the_client_and_the_options_exit_6(server: Server) -> None:
    added = derbridge(
        "--data-dir", "V", "edge", "client", "add", "--name", "ecobee", "--head-end", "ECOBEE", "--json",
        cwd=server.home,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    client_id = json.loads(added.stdout)["client_id"]

    refused = sim(server.base, client_id, "not-the-secret", server.home)

    assert refused.returncode == 6
    assert one_error_line(refused) == (
        f"the VTN refused client {client_id}'s credentials: check --client-id/--client-secret "
        "(derbridge edge client add makes one)"
    )


def test_a_vtn_that_is_down_is_one_line_asking_whether_up_runs_exit_5(tmp_path: Path, server: Server) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # bound once, then released: nothing listens there

    down = sim(closed, "any-client", "any-secret", server.home)

    assert down.returncode == 5
    assert one_error_line(down) == f"cannot reach the VTN at {closed}: is derbridge up running?"


def test_up_on_a_busy_port_says_so_before_any_banner_exit_6(server: Server, tmp_path: Path) -> None:
    busy = derbridge("--data-dir", "V", "up", "--port", str(server.port), cwd=tmp_path)

    assert busy.returncode == 6
    assert one_error_line(busy) == (f"port {server.port} on 127.0.0.1 is in use: stop the other server or pass --port")
    assert not (tmp_path / "V").exists()  # nothing was migrated or served


def test_a_bad_choice_lists_the_valid_values_exit_2(tmp_path: Path) -> None:
    bad = derbridge("--data-dir", "V", "messages", "list", "--state", "x", cwd=tmp_path)

    assert bad.returncode == 2
    for value in ("pending", "delivered", "retrying", "parked", "dead"):
        assert value in bad.stderr
    helped = derbridge("messages", "list", "--help", cwd=tmp_path, COLUMNS="120")
    assert "pending|delivered|retrying|parked|dead" in helped.stdout


def test_event_errors_name_the_options_not_the_api_fields_exit_2_and_3(tmp_path: Path) -> None:
    window = ["--start", "2030-07-01T18:00:00", "--end", "2030-07-01T17:00:00"]

    backwards = derbridge(
        "--data-dir", "V", "derms", "event", "create", "--program", "PROG", *window, "--kw", "5", cwd=tmp_path
    )
    both = derbridge(
        "--data-dir", "V", "derms", "event", "create", "--program", "PROG", "--start", "2030-07-01T18:00:00",
        "--end", "2030-07-01T19:00:00", "--kw", "5", "--devices", "3", cwd=tmp_path,
    )  # fmt: skip
    unknown = derbridge(
        "--data-dir", "V", "derms", "event", "create", "--program", "NOPE", "--start", "2030-07-01T18:00:00",
        "--end", "2030-07-01T19:00:00", "--kw", "5", cwd=tmp_path,
    )  # fmt: skip
    missing = derbridge("--data-dir", "V", "derms", "event", "cancel", "no-such-event", cwd=tmp_path)

    assert (backwards.returncode, one_error_line(backwards)) == (2, "bad event: --end must be after --start")
    assert (both.returncode, one_error_line(both)) == (2, "bad event: --kw: give exactly one of --devices or --kw")
    assert unknown.returncode == 2
    assert one_error_line(unknown).startswith("Unknown program: --program: unknown program. No program has the code")
    assert missing.returncode == 3
    assert "no-such-event" in one_error_line(missing)
    for result in (backwards, both, unknown):
        assert "target_kw" not in result.stderr
        assert "end_at" not in result.stderr


def test_a_database_that_cannot_be_reached_is_one_line_exit_5(tmp_path: Path) -> None:
    port = free_port()
    down = derbridge(
        "--data-dir", "V", "messages", "stats", cwd=tmp_path,
        DERBRIDGE_BRIDGE__DATABASE_URL=f"postgresql://nobody@127.0.0.1:{port}/none",
    )  # fmt: skip

    assert down.returncode == 5
    line = one_error_line(down)
    assert line.startswith("cannot reach a database")
    assert line.endswith("is it running, and is its URL right (derbridge config show)?")


def test_a_setting_that_is_not_valid_names_it_exit_2(tmp_path: Path) -> None:
    bad = derbridge("--data-dir", "V", "messages", "stats", cwd=tmp_path, DERBRIDGE_LOG_LEVEL="loud")

    assert bad.returncode == 2
    assert "DERBRIDGE_LOG_LEVEL" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_replaying_several_names_each_message_it_could_not_replay_exit_1(tmp_path: Path) -> None:
    several = derbridge("--data-dir", "V", "messages", "replay", "no-such-1", "no-such-2", cwd=tmp_path)
    one = derbridge("--data-dir", "V", "messages", "replay", "no-such-1", cwd=tmp_path)

    assert several.returncode == 1
    assert several.stdout == ""
    lines = several.stderr.strip().splitlines()
    assert lines[0] == "replayed 0 of 2 messages"
    assert [line.split(":")[1].strip() for line in lines[1:]] == ["no-such-1", "no-such-2"]
    assert one.returncode == 3
    assert "no-such-1" in one_error_line(one)
