"""The data directory and the files in it are readable by their owner only.

The data directory holds personal data (the SQLite databases), secret hashes, generated credentials and
webhook bearer tokens: every local user could read them when files were created with the usual umask
(0644 files in a 0755 directory, issue 15). Directories we create are 0700 and files 0600, whatever the
umask; an existing directory or database open to others is tightened at start, with a warning, since
nothing in it is meant for anyone but the service's own user.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog

log = structlog.get_logger("derbridge.infra.private")

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database, holding the same data (it creates them with the database's mode)."""


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parent as 0700; tighten ``path`` itself if it lets others in."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it at the same moment
            pass
        else:
            directory.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists as 0600 (created empty if absent), tightening it if others may read it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        _tighten(path, FILE_MODE)
    else:
        os.fchmod(fd, FILE_MODE)  # os.open's mode is masked by the umask
        os.close(fd)
    return path


def private_sqlite_file(path: Path) -> None:
    """A SQLite database and its companions, 0600 in a private directory, before SQLite opens it (SQLite
    gives its -wal and -shm files the database's mode)."""
    private_dir(path.parent)
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists():
            _tighten(companion, FILE_MODE)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """``os.open`` of a new file that only its owner may read, whatever the umask."""
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def _tighten(path: Path, wanted: int) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    current = stat.S_IMODE(info.st_mode)
    if not current & 0o077:
        return
    if info.st_uid != os.geteuid():  # not ours to change (a volume mounted from another user): say so
        log.warning("readable by other users: make it private to the service's user", path=str(path), mode=oct(current))
        return
    path.chmod(current & ~0o077 | (wanted & 0o700))
    log.warning(
        "permissions tightened: the data directory is for the service's user only",
        path=str(path),
        was=oct(current),
        now=oct(stat.S_IMODE(path.stat().st_mode)),
    )
