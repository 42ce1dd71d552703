"""The DERMS's rules about programs, which it holds as copies of Asset Hub's (program sync)."""

from __future__ import annotations


def is_stale(applied_version: int | None, version: int) -> bool:
    """True when ``version`` of a program is not newer than the version already applied (``None``: the
    program is new here). Each version is the whole program, so only a newer one may replace it."""
    return applied_version is not None and version <= applied_version
