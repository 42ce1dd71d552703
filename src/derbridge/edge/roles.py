"""The kinds of edge client, alone in a module of no imports: the CLI's ``edge client add --role`` needs the
type to build its command tree, and the rest of :mod:`derbridge.edge.domain` (pydantic, the contracts) has
no place in ``derbridge --help``."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What kind of client a credential belongs to."""

    VEN = "ven"
    """An aggregator's (a head-end system's) VEN: sees and changes only its own objects."""
    BL = "bl"
    """Business logic (the utility's tools): reads everything, writes programs and events."""
