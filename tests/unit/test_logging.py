"""Logs: JSON or readable lines on stderr (never stdout), one renderer for structlog and the stdlib."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from derbridge.cli.common import LogLevel, log_level_for
from derbridge.infra.logging import configure_logging, wants_json
from derbridge.settings import Settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    configure_logging("WARNING", json=True)


def test_json_unless_stderr_is_a_terminal_and_a_setting_forces_either() -> None:
    assert wants_json(None, io.StringIO()) is True
    assert wants_json(None, Terminal()) is False
    assert wants_json(True, Terminal()) is True
    assert wants_json(False, io.StringIO()) is False


def test_structlog_and_stdlib_logs_are_json_lines_on_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=True)
    structlog.get_logger("t").info("batch settled", settled={"enrollment-sync": {"delivered": 3}})
    logging.getLogger("uvicorn.error").warning("port in use")
    structlog.get_logger("t").debug("not at INFO")
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [json.loads(line) for line in captured.err.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [("batch settled", "info"), ("port in use", "warning")]
    assert lines[0]["settled"] == {"enrollment-sync": {"delivered": 3}}


def test_readable_lines_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=False)
    structlog.get_logger("t").info("batch settled", duplicates=0)
    logging.getLogger("uvicorn.error").error("boom")
    captured = capsys.readouterr()
    assert captured.out == ""
    first, second = captured.err.splitlines()
    assert "batch settled" in first
    assert "duplicates=0" in first
    assert not first.startswith("{")
    assert "boom" in second
    assert not second.startswith("{")


def test_the_level_is_the_option_then_the_setting_then_info_for_servers_and_warning_for_commands() -> None:
    unset = Settings()
    assert log_level_for("up", None, unset) == "INFO"
    assert log_level_for("serve", None, unset) == "INFO"
    assert log_level_for("score", None, unset) == "WARNING"
    assert log_level_for("score", None, Settings(log_level="debug")) == "DEBUG"
    assert log_level_for("up", LogLevel.ERROR, Settings(log_level="DEBUG")) == "ERROR"
