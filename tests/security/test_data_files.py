"""Issue 15, finding 8: the data directory and the files in it are the owner's alone.

Before: SQLite files 0644 in a 0755 directory (personal data, secret hashes, webhook bearer tokens)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from derbridge.edge.auth import token_secret
from derbridge.filestore.local import LocalDirectoryStore
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def _usual_umask() -> object:
    # The usual umask of a login shell: without the fix every file was then readable by all.
    previous = os.umask(0o022)
    yield None
    os.umask(previous)


def test_a_new_data_dir_is_0700_and_every_file_in_it_0600(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")  # no api token configured: one is generated
    migrate_all(settings)
    runtime = Runtime(settings)
    try:
        with runtime.sync_engine("derms").connect() as connection:
            connection.execute(text("SELECT 1"))
        settings.resolved_api_token()
        token_secret(settings)
        files = list((tmp_path / "var").iterdir())
        names = {p.name for p in files}
        assert {"assethub.db", "derms.db", "bridge.db", "api-token", "edge-token-secret"} <= names
        assert "derms.db-wal" in names  # SQLite's journal holds the same data: it must be as private
        assert mode(tmp_path / "var") == 0o700
        assert {p.name: mode(p) for p in files if p.is_file()} == {p.name: 0o600 for p in files if p.is_file()}
    finally:
        runtime.close_sync()


async def test_the_local_file_store_keeps_its_files_private(tmp_path: Path) -> None:
    source = tmp_path / "scores.csv"
    source.write_text("nic,score\n1,2\n")
    store = LocalDirectoryStore(tmp_path / "var" / "files")
    await store.put(source, "scores/2026/scores.csv")
    stored = tmp_path / "var" / "files" / "scores" / "2026" / "scores.csv"
    assert mode(stored) == 0o600
    for directory in (tmp_path / "var", tmp_path / "var" / "files", stored.parent):
        assert mode(directory) == 0o700, directory


def test_an_existing_data_dir_open_to_others_is_tightened_with_a_warning(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    old = data_dir / "derms.db"
    old.write_bytes(b"")
    old.chmod(0o644)
    settings = Settings(data_dir=data_dir, api_token="t")
    with capture_logs() as logs:
        migrate_all(settings)
    assert mode(data_dir) == 0o700
    assert mode(old) == 0o600
    tightened = {e["path"] for e in logs if e["log_level"] == "warning" and "tightened" in e["event"]}
    assert {str(data_dir), str(old)} <= tightened
