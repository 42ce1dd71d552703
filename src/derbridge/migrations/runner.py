"""Alembic, driven from code: one migration history per system database.

Each system's history lives in ``derbridge/migrations/<system>/`` inside the package, so an installed
derbridge can migrate its databases without the source tree. ``upgrade`` is idempotent and runs at every
start of a command that opens a database.
"""

from __future__ import annotations

from typing import Literal

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData

System = Literal["assethub", "derms", "bridge"]
SYSTEMS: tuple[System, ...] = ("assethub", "derms", "bridge")


def alembic_config(system: System, url: str) -> Config:
    """An Alembic configuration for ``system``'s history pointed at ``url``."""
    config = Config()
    config.set_main_option("script_location", f"derbridge:migrations/{system}")
    config.attributes["database_url"] = url
    return config


def upgrade(system: System, url: str, revision: str = "head") -> None:
    """Bring ``system``'s database at ``url`` up to ``revision``."""
    command.upgrade(alembic_config(system, url), revision)


def downgrade(system: System, url: str, revision: str = "base") -> None:
    """Take ``system``'s database at ``url`` down to ``revision``."""
    command.downgrade(alembic_config(system, url), revision)


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
