"""Alembic, driven from code: one migration history per system database.

Each system's history lives in ``derbridge/migrations/<system>/`` inside the package, so an installed
derbridge can migrate its databases without the source tree. ``upgrade`` is idempotent; ``derbridge db
upgrade`` runs it for every system.

A command that opens a database calls :func:`upgrade_if_behind` instead: loading Alembic, its script
directory and its migration context costs most of a second, spent for nothing on a database already at the
newest schema — the usual case. That check reads the ``alembic_version`` row(s) with one query and compares
them with the heads of the history, read from the version files without Alembic (:func:`head_revisions`);
only a database that is new or behind runs Alembic. Alembic is imported only by the functions that run it.

Every migration runs under :func:`migration_lock`, one lock per system's database: replicas or migration
jobs that start together take turns, and the later ones find the database at head and do nothing (without
it, two upgrades of a new PostgreSQL database both began with ``CREATE TABLE alembic_version`` and one
failed). On PostgreSQL it is a session advisory lock on :data:`MIGRATION_LOCK_KEYS` (released by the server
if the process dies); on SQLite an exclusive ``flock`` of a file beside the database (``assethub.db.migrate-lock``),
not of the database file itself, whose POSIX locks SQLite owns.
"""

from __future__ import annotations

import re
from ast import literal_eval
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from alembic.config import Config

System = Literal["assethub", "derms", "bridge"]
SYSTEMS: tuple[System, ...] = ("assethub", "derms", "bridge")

HISTORIES = Path(__file__).parent
"""``<system>/versions/*.py`` under here: each system's migration history."""

MIGRATION_LOCK_KEYS: dict[System, int] = {
    "assethub": 0x64657262_00000001,
    "derms": 0x64657262_00000002,
    "bridge": 0x64657262_00000003,
}
"""PostgreSQL advisory lock key held while a system's database migrates (``derb`` and the system's number):
fixed, so every derbridge process and release agrees on it, and an operator can find a waiting migration in
``pg_locks`` (``objid`` is the low 32 bits). Advisory locks are per database, and the keys differ so that
systems sharing one database still migrate independently."""

# ``revision: str = "x"`` / ``down_revision: str | None = ("a", "b")`` at the start of a line, as Alembic's
# template (our script.py.mako) writes them; a tuple or list may span lines.
_IDENTIFIER = re.compile(
    r"^(revision|down_revision)\b[^=\n]*=\s*(\([^)]*\)|\[[^\]]*\]|[^\n#]+)",
    re.MULTILINE,
)


def alembic_config(system: System, url: str, attributes: Mapping[str, Any] | None = None) -> Config:
    """An Alembic configuration for ``system``'s history pointed at ``url``; ``attributes`` reach the
    migrations as ``op.get_context().config.attributes`` (secrets a data migration needs, such as
    ``webhook_token_keys``: a callable returning the keys that encrypt webhook bearer tokens)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", f"derbridge:migrations/{system}")
    config.attributes.update(attributes or {})
    config.attributes["database_url"] = url
    return config


def upgrade(system: System, url: str, revision: str = "head", attributes: Mapping[str, Any] | None = None) -> None:
    """Bring ``system``'s database at ``url`` up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(system, url, attributes), revision)


def downgrade(system: System, url: str, revision: str = "base", attributes: Mapping[str, Any] | None = None) -> None:
    """Take ``system``'s database at ``url`` down to ``revision``."""
    from alembic import command

    command.downgrade(alembic_config(system, url, attributes), revision)


@cache
def head_revisions(system: System) -> frozenset[str]:
    """The head revision(s) of ``system``'s history — what ``alembic_version`` holds once a database is
    upgraded to ``head`` — read from the version files as Alembic reads them (every ``*.py`` but
    ``__init__``): the revisions no other revision names as its ``down_revision``."""
    revisions, parents = _history(system)
    return revisions - parents


def known_revisions(system: System) -> frozenset[str]:
    """Every revision of ``system``'s history (read from the version files each time: for an error's
    message): a database at a revision not among them was migrated by a newer derbridge."""
    return _history(system)[0]


def _history(system: System) -> tuple[frozenset[str], frozenset[str]]:
    """The revisions of ``system``'s version files, and those named as a ``down_revision``."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((HISTORIES / system / "versions").glob("*.py")):
        if path.name.startswith(("__init__", ".#")):
            continue
        found = {name: literal_eval(value.strip()) for name, value in _IDENTIFIER.findall(path.read_text("utf-8"))}
        if not isinstance(found.get("revision"), str):
            raise ValueError(f'{path}: no `revision = "…"` line')
        revisions.add(found["revision"])
        down = found.get("down_revision")
        parents.update([down] if isinstance(down, str) else down or ())
    return frozenset(revisions), frozenset(parents)


def current_revisions(url: str) -> frozenset[str] | None:
    """The revision(s) the database at ``url`` is at (its ``alembic_version`` rows), or None when it has
    no ``alembic_version`` table (a new database). One query."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from derbridge.infra.db import create_sync_engine

    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            try:
                rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
            except DBAPIError:
                # No such table (the connection itself worked): nothing was ever migrated here.
                return None
            return frozenset(rows)
    finally:
        engine.dispose()


def is_at_head(system: System, url: str) -> bool:
    """True when ``system``'s database at ``url`` is at the newest schema of this derbridge."""
    return current_revisions(url) == head_revisions(system)


@contextmanager
def migration_lock(system: System, url: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold ``system``'s migration lock on the database at ``url`` for the body: one migration at a time per
    database, whatever process runs it. Blocks until the lock is free, calling ``on_wait`` once first when
    another process holds it (a caller says "waiting for another migration")."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        with _advisory_lock(MIGRATION_LOCK_KEYS[system], url, on_wait):
            yield
    elif backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        with _file_lock(Path(f"{parsed.database}.migrate-lock"), on_wait):
            yield
    else:
        yield  # an in-memory database belongs to one connection: nothing else can migrate it


@contextmanager
def _advisory_lock(key: int, url: str, on_wait: Callable[[], None] | None) -> Iterator[None]:
    from sqlalchemy import text

    from derbridge.infra.db import create_sync_engine

    # Its own connection, outside the migration's transaction: a session lock, so it spans Alembic's
    # transaction and ends with this connection if the process dies.
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            if not connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}):
                if on_wait is not None:
                    on_wait()
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


@contextmanager
def _file_lock(path: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    import fcntl

    from derbridge.infra.private import private_dir, private_file

    private_dir(path.parent)  # beside the database: the data directory, the service's user's only
    with private_file(path).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Migration:
    """What an upgrade of one system's database did: its revision(s) before and after (None: new)."""

    system: System
    before: frozenset[str] | None
    after: frozenset[str] | None

    @property
    def changed(self) -> bool:
        """True when the upgrade moved the database (a later process found it done: False)."""
        return self.before != self.after


def upgrade_locked(
    system: System,
    url: str,
    on_wait: Callable[[], None] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Migration:
    """Bring ``system``'s database at ``url`` to head under its migration lock (``derbridge db upgrade``).
    The revision is read again once the lock is held, so a process that waited for another's migration
    reports "nothing to do"; Alembic runs whatever the state (it refuses a database ahead of this
    derbridge with its own message)."""
    with migration_lock(system, url, on_wait):
        before = current_revisions(url)
        upgrade(system, url, attributes=attributes)
        return Migration(system, before, current_revisions(url))


def upgrade_if_behind(system: System, url: str, attributes: Mapping[str, Any] | None = None) -> bool:
    """Bring ``system``'s database at ``url`` to the newest schema unless it is there already (one query,
    no Alembic); True when Alembic ran. A database behind is migrated under its migration lock, and looked
    at again once the lock is held (another process may have just migrated it). A database *ahead* of this
    derbridge goes to Alembic too, which refuses it with its own message."""
    if is_at_head(system, url):
        return False
    with migration_lock(system, url):
        if is_at_head(system, url):
            return False
        upgrade(system, url, attributes=attributes)
        return True
