"""Alembic, driven from code: one migration history per system database.

Each system's history lives in ``derbridge/migrations/<system>/`` inside the package, so an installed
derbridge can migrate its databases without the source tree. ``upgrade`` is idempotent; ``derbridge db
upgrade`` runs it for every system.

A command that opens a database calls :func:`upgrade_if_behind` instead: loading Alembic, its script
directory and its migration context costs most of a second, spent for nothing on a database already at the
newest schema — the usual case. That check reads the ``alembic_version`` row(s) with one query and compares
them with the heads of the history, read from the version files without Alembic (:func:`head_revisions`);
only a database that is new or behind runs Alembic. Alembic is imported only by the functions that run it.
"""

from __future__ import annotations

import re
from ast import literal_eval
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import MetaData

System = Literal["assethub", "derms", "bridge"]
SYSTEMS: tuple[System, ...] = ("assethub", "derms", "bridge")

HISTORIES = Path(__file__).parent
"""``<system>/versions/*.py`` under here: each system's migration history."""

# ``revision: str = "x"`` / ``down_revision: str | None = ("a", "b")`` at the start of a line, as Alembic's
# template (our script.py.mako) writes them; a tuple or list may span lines.
_IDENTIFIER = re.compile(
    r"^(revision|down_revision)\b[^=\n]*=\s*(\([^)]*\)|\[[^\]]*\]|[^\n#]+)",
    re.MULTILINE,
)


def alembic_config(system: System, url: str) -> Config:
    """An Alembic configuration for ``system``'s history pointed at ``url``."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", f"derbridge:migrations/{system}")
    config.attributes["database_url"] = url
    return config


def upgrade(system: System, url: str, revision: str = "head") -> None:
    """Bring ``system``'s database at ``url`` up to ``revision``."""
    from alembic import command

    command.upgrade(alembic_config(system, url), revision)


def downgrade(system: System, url: str, revision: str = "base") -> None:
    """Take ``system``'s database at ``url`` down to ``revision``."""
    from alembic import command

    command.downgrade(alembic_config(system, url), revision)


@cache
def head_revisions(system: System) -> frozenset[str]:
    """The head revision(s) of ``system``'s history — what ``alembic_version`` holds once a database is
    upgraded to ``head`` — read from the version files as Alembic reads them (every ``*.py`` but
    ``__init__``): the revisions no other revision names as its ``down_revision``."""
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
    return frozenset(revisions - parents)


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


def upgrade_if_behind(system: System, url: str) -> bool:
    """Bring ``system``'s database at ``url`` to the newest schema unless it is there already (one query,
    no Alembic); True when Alembic ran. A database *ahead* of this derbridge goes to Alembic too, which
    refuses it with its own message."""
    if is_at_head(system, url):
        return False
    upgrade(system, url)
    return True


def metadata_of(system: System) -> MetaData:
    """The table descriptions a system's migrations must produce."""
    if system == "assethub":
        from derbridge.assethub.adapters.tables import metadata as assethub_metadata

        return assethub_metadata
    if system == "derms":
        from derbridge.derms.adapters.tables import metadata as derms_metadata
        from derbridge.edge import tables as _edge_tables  # noqa: F401 - the edge's tables live in the DERMS database

        return derms_metadata
    from derbridge.bridge.tables import metadata as bridge_metadata

    return bridge_metadata
