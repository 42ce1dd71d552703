"""The DERMS's rules about programs, which it holds as copies of Asset Hub's (program sync)."""

from __future__ import annotations

from enum import StrEnum


class DermsProgramStatus(StrEnum):
    """A program's status, as Asset Hub (its system of record) sent it by program sync: whether the DERMS may
    create events in it."""

    DRAFT = "DRAFT"
    """Being set up in Asset Hub: no events yet."""
    ACTIVE = "ACTIVE"
    """Events may be created."""
    SUSPENDED = "SUSPENDED"
    """Paused: no new events; existing ones run their course."""
    CLOSED = "CLOSED"
    """Over for good: no new events (409 ``program-closed``); existing ones run their course."""


def is_stale(applied_version: int | None, version: int) -> bool:
    """True when ``version`` of a program is not newer than the version already applied (``None``: the
    program is new here). Each version is the whole program, so only a newer one may replace it."""
    return applied_version is not None and version <= applied_version
