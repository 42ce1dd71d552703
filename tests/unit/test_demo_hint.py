"""The demo's closing hint names a command that runs as typed in the shell that ran the demo."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from derbridge.demo.report import how_to_run


def _program(tmp_path: Path, relative: str) -> Path:
    path = tmp_path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_venv_program_under_the_current_directory_is_named_by_its_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = _program(tmp_path, ".venv/bin/derbridge")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(program)])
    assert how_to_run() == [".venv/bin/derbridge"]


def test_a_program_elsewhere_is_named_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = _program(tmp_path, "env/bin/derbridge")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(program)])
    assert how_to_run() == [str(program)]


def test_the_program_on_path_is_named_by_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = _program(tmp_path, "bin/derbridge")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin")
    monkeypatch.setattr(sys, "argv", [str(program)])
    assert how_to_run() == ["derbridge"]


def test_python_dash_m_is_named_with_this_interpreter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["/somewhere/derbridge/__main__.py"])
    assert how_to_run()[1:] == ["-m", "derbridge"]
    assert Path(how_to_run()[0]).absolute() == Path(sys.executable).absolute()
