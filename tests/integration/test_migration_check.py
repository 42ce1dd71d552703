"""The cheap check at a command's start: a database at head costs one query and no Alembic; one that is new
or behind is migrated; the heads it compares with are Alembic's own."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import text

from derbridge.infra.db import create_sync_engine
from derbridge.migrations import runner
from derbridge.migrations.runner import (
    SYSTEMS,
    alembic_config,
    current_revisions,
    head_revisions,
    upgrade,
    upgrade_if_behind,
)
from derbridge.runtime import ensure_migrated, migrate_all
from derbridge.settings import Settings


def test_the_heads_read_from_the_version_files_are_alembics_heads() -> None:
    for system in SYSTEMS:
        script = ScriptDirectory.from_config(alembic_config(system, "sqlite://"))
        assert head_revisions(system) == frozenset(script.get_heads()), system


def _history(tmp_path: Path, files: dict[str, str]) -> Path:
    versions = tmp_path / "demo" / "versions"
    versions.mkdir(parents=True)
    for name, body in files.items():
        (versions / name).write_text(body)
    return tmp_path


def test_heads_follow_merges_and_branches_and_skip_what_alembic_skips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    histories = _history(
        tmp_path,
        {
            "a.py": 'revision: str = "a"\ndown_revision: str | None = None\n',
            "b.py": 'revision = "b"\ndown_revision = "a"\n',
            "c.py": "revision: str = 'c'\ndown_revision: str | None = 'a'  # a branch\n",
            # A merge of b and c, its parents over several lines as Alembic's template writes a tuple.
            "d.py": 'revision: str = "d"\ndown_revision: str | tuple[str, ...] | None = (\n    "b",\n    "c",\n)\n',
            "e.py": 'revision: str = "e"\ndown_revision: str | None = "a"\n',  # a second head
            "__init__.py": 'revision = "not-a-revision"\n',
            "notes.txt": 'revision = "not-python"\n',
        },
    )
    monkeypatch.setattr(runner, "HISTORIES", histories)
    head_revisions.cache_clear()
    try:
        assert head_revisions("demo") == {"d", "e"}  # type: ignore[arg-type]
    finally:
        head_revisions.cache_clear()


def test_a_version_file_without_a_revision_is_an_error_not_a_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "HISTORIES", _history(tmp_path, {"x.py": "down_revision = None\n"}))
    head_revisions.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"x\.py"):
            head_revisions("demo")  # type: ignore[arg-type]
    finally:
        head_revisions.cache_clear()


def _no_alembic(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every call of the real migration instead of running it."""
    calls: list[str] = []
    monkeypatch.setattr(runner, "upgrade", lambda system, url, revision="head": calls.append(system))
    return calls


def test_databases_at_head_are_left_to_one_query_each(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate_all(settings)
    calls = _no_alembic(monkeypatch)

    assert ensure_migrated(settings) == []

    assert calls == []
    for system in SYSTEMS:
        assert current_revisions(settings.database_url(system)) == head_revisions(system)


def test_new_databases_are_migrated_and_a_second_start_leaves_them(settings: Settings) -> None:
    for system in SYSTEMS:
        assert current_revisions(settings.database_url(system)) is None

    assert ensure_migrated(settings) == list(SYSTEMS)

    for system in SYSTEMS:
        assert current_revisions(settings.database_url(system)) == head_revisions(system)
    assert ensure_migrated(settings) == []


def test_only_the_database_behind_is_migrated(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    migrate_all(settings)
    runner.downgrade("assethub", settings.database_url("assethub"), "-1")
    assert current_revisions(settings.database_url("assethub")) != head_revisions("assethub")

    assert ensure_migrated(settings) == ["assethub"]

    assert current_revisions(settings.database_url("assethub")) == head_revisions("assethub")


def test_only_the_systems_asked_for_are_looked_at(settings: Settings) -> None:
    assert ensure_migrated(settings, ["bridge"]) == ["bridge"]

    assert current_revisions(settings.database_url("bridge")) == head_revisions("bridge")
    assert current_revisions(settings.database_url("derms")) is None


def test_a_database_ahead_of_this_derbridge_is_refused_by_alembic(settings: Settings) -> None:
    url = settings.database_url("bridge")
    upgrade("bridge", url)
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'bridge_9999'"))
    finally:
        engine.dispose()

    with pytest.raises(CommandError, match="bridge_9999"):
        upgrade_if_behind("bridge", url)
