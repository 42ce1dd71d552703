"""Each system's tables as its code describes them (its adapters' metadata): what its migrations must produce.

The migration test compares a migrated database with them, and Alembic's autogenerate compares against them
(pass ``{"target_metadata": metadata_of(system)}`` as the runner's ``attributes``). It lives outside
:mod:`derbridge.migrations`, which imports no application code: a revision describes the schema as it was
when it was written, whatever the adapters say today.
"""

from __future__ import annotations

from sqlalchemy import MetaData

from derbridge.migrations.runner import System


def metadata_of(system: System) -> MetaData:
    """The tables ``system``'s migrations must produce (the DERMS's include the edge's, in its database)."""
    if system == "assethub":
        from derbridge.assethub.adapters.tables import metadata as assethub_metadata

        return assethub_metadata
    if system == "derms":
        from derbridge.derms.adapters.tables import metadata as derms_metadata
        from derbridge.edge import tables as _edge_tables  # noqa: F401 - the edge's tables live in the DERMS database

        return derms_metadata
    from derbridge.bridge.tables import metadata as bridge_metadata

    return bridge_metadata
