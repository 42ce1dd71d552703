"""P0 · cis-customer-sync: read a CIS extract once and load it into every system, chunk by chunk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derbridge.cis.extract import RejectedRow
from derbridge.cis.loading import CisLoader
from derbridge.cis.reader import DEFAULT_CHUNK_ROWS, ReadTally, read_extract


@dataclass(frozen=True)
class SystemImportCounts:
    """One system's view of an import (the ``--json`` shape)."""

    read: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int

    def as_dict(self) -> dict[str, int]:
        """The counts as the JSON report prints them."""
        return {
            "read": self.read,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class ImportReport:
    """The result of one import: counts per system, and every rejected row."""

    systems: dict[str, SystemImportCounts]
    rejected: list[RejectedRow]
    loaded_account_ids: dict[str, set[str]]

    def as_dict(self) -> dict[str, Any]:
        """``{"assethub": {...counts}, "derms": {...counts}}``."""
        return {name: counts.as_dict() for name, counts in self.systems.items()}


def import_extract(
    path: Path,
    loaders: Sequence[CisLoader],
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Load the extract at ``path`` into each loader's system.

    Raises :class:`~derbridge.cis.extract.ExtractHeaderError` (and loads nothing) when the file is not a
    CIS extract. Rejected rows are reported, never loaded; every good row is loaded.
    """
    tally = ReadTally()
    for chunk in read_extract(path, tally, chunk_rows=chunk_rows, on_progress=on_progress):
        for loader in loaders:
            loader.load(chunk)
    systems = {
        loader.system: SystemImportCounts(
            read=tally.read,
            inserted=loader.counts.inserted,
            updated=loader.counts.updated,
            unchanged=loader.counts.unchanged,
            rejected=len(tally.rejected),
        )
        for loader in loaders
    }
    return ImportReport(
        systems=systems,
        rejected=sorted(tally.rejected, key=lambda r: r.line),
        loaded_account_ids={loader.system: loader.loaded_account_ids for loader in loaders},
    )
