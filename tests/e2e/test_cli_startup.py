"""What a start of the command line loads: ``--version`` and ``--help`` no system, no database library, no
settings, no logging; a command on databases at head no Alembic; a command only the databases it opens.

Each command runs in a fresh interpreter through a small wrapper that writes the modules it loaded to a
file — what is checked is what was imported, never how long it took (speed is bench/'s: cli-version,
cli-read-only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from derbridge.cli import app, asks_for_help

HEAVY = {"sqlalchemy", "fastapi", "pyarrow", "numpy", "httpx", "alembic", "structlog", "derbridge.settings"}
"""What the command tree alone must not load."""

WRAPPER = """
import json, sys
record = sys.argv.pop(1)
sys.argv[0] = "derbridge"
code = 0
try:
    from derbridge.cli import main
    main()
except SystemExit as stop:
    code = stop.code or 0
structlog = sys.modules.get("structlog")
with open(record, "w") as handle:
    json.dump({
        "code": code,
        "modules": sorted(sys.modules),
        "logging_configured": structlog is not None and structlog.is_configured(),
    }, handle)
"""


def start(tmp_path: Path, *args: str) -> dict[str, Any]:
    """Run ``derbridge ARGS`` in a fresh interpreter in ``tmp_path``: its exit status, the modules it loaded
    and whether it configured logging."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
    record = tmp_path / "record.json"
    record.unlink(missing_ok=True)
    completed = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(record), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert record.exists(), completed.stderr[-3000:]
    data: dict[str, Any] = json.loads(record.read_text())
    data["stdout"], data["stderr"] = completed.stdout, completed.stderr
    return data


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["--help"],
        ["messages", "--help"],
        ["messages", "stats", "--help"],
        ["edge", "client", "add", "--help"],
        ["db", "--help"],
        ["--data-dir", "elsewhere", "config", "--help"],
    ],
)
def test_version_and_help_load_no_system_settings_or_logging(tmp_path: Path, args: list[str]) -> None:
    started = start(tmp_path, *args)

    assert started["code"] == 0, started["stderr"]
    assert started["stdout"].strip()
    loaded = set(started["modules"])
    assert HEAVY & loaded == set()
    assert not any(m.startswith(("derbridge.runtime", "derbridge.migrations")) for m in loaded)
    assert not started["logging_configured"]
    assert not (tmp_path / "var").exists()  # nothing made in the data dir either


def test_version_prints_the_version(tmp_path: Path) -> None:
    from derbridge import __version__

    assert start(tmp_path, "--version")["stdout"] == f"derbridge {__version__}\n"


def test_a_group_called_bare_shows_its_help_without_settings(tmp_path: Path) -> None:
    started = start(tmp_path, "messages")

    assert "stats" in started["stdout"] + started["stderr"]
    assert HEAVY & set(started["modules"]) == set()


def test_a_command_configures_logging_before_it_runs(tmp_path: Path) -> None:
    started = start(tmp_path, "config", "show")

    assert started["code"] == 0, started["stderr"]
    assert json.loads(started["stdout"])["log_level"] is None  # unset: INFO for up and serve, else WARNING
    assert started["logging_configured"]


def test_a_read_only_command_on_a_new_data_dir_migrates_only_the_database_it_opens(tmp_path: Path) -> None:
    started = start(tmp_path, "--data-dir", "V", "messages", "stats", "--json")

    assert started["code"] == 0, started["stderr"]
    assert "delivered" in json.loads(started["stdout"])["enrollment-request"]
    assert "alembic" in started["modules"]  # the bridge's new database was migrated…
    assert (tmp_path / "V" / "bridge.db").exists()
    assert not (tmp_path / "V" / "assethub.db").exists()  # …and the systems' were not even opened
    assert not (tmp_path / "V" / "derms.db").exists()


def test_commands_on_databases_at_head_do_not_load_alembic(tmp_path: Path) -> None:
    upgraded = start(tmp_path, "--data-dir", "V", "db", "upgrade")
    assert upgraded["code"] == 0, upgraded["stderr"]
    assert "alembic" in upgraded["modules"]  # db upgrade always runs the real migration

    for args in (["messages", "stats", "--json"], ["edge", "client", "list", "--json"]):
        started = start(tmp_path, "--data-dir", "V", *args)
        assert started["code"] == 0, started["stderr"]
        assert json.loads(started["stdout"]) is not None
        assert not any(m == "alembic" or m.startswith("alembic.") for m in started["modules"]), args
        # A read-only command loads neither the web framework nor Arrow.
        assert {"fastapi", "pyarrow"} & set(started["modules"]) == set(), args


def test_a_help_request_is_told_from_a_command() -> None:
    tree = typer.main.get_command(app)
    assert isinstance(tree, TyperGroup)
    messages = tree.commands["messages"]
    assert asks_for_help(["--help"], ["--help"], messages)
    assert asks_for_help(["stats", "--help"], ["--help"], messages)
    assert asks_for_help(["stats", "-h"], ["-h", "--help"], messages)
    assert asks_for_help([], ["--help"], messages)  # a group called bare shows its help
    assert not asks_for_help(["stats", "--json"], ["--help"], messages)
    assert not asks_for_help(["wake", "--", "--help"], ["--help"], messages)  # after --, an argument
    show = tree.commands["config"]
    assert isinstance(show, TyperGroup)
    assert not asks_for_help([], ["--help"], show.commands["show"])  # a command called bare runs
