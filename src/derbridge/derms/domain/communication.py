"""A device's communication status, as the edge records it from an aggregator and the DERMS keeps it."""

from __future__ import annotations

from enum import StrEnum


class CommunicationStatus(StrEnum):
    """A device's last known communication status."""

    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"
