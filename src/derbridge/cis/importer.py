"""P0 · cis-customer-sync: read a CIS extract once and load it into every system, chunk by chunk."""

from __future__ import annotations

import queue
import threading
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

    The file is read in this thread while each system loads the previous chunks in a thread of its own:
    the loaders spend most of their time in the database driver, which releases the GIL, so reading and
    both systems' writes overlap. At most two chunks wait per system (memory stays bounded).

    Raises :class:`~derbridge.cis.extract.ExtractHeaderError` (and loads nothing) when the file is not a
    CIS extract. Rejected rows are reported, never loaded; every good row is loaded. A database error in
    any system stops the import and is raised here (chunks already committed stay).
    """
    tally = ReadTally()
    workers = [_LoaderThread(loader) for loader in loaders]
    for worker in workers:
        worker.start()
    try:
        for chunk in read_extract(path, tally, chunk_rows=chunk_rows, on_progress=on_progress):
            for worker in workers:
                worker.put(chunk)
    finally:
        for worker in workers:
            worker.finish()
    for worker in workers:
        worker.raise_failure()
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


_DONE = object()


class _LoaderThread:
    """One system's loader fed through a short queue, in a thread of its own."""

    def __init__(self, loader: CisLoader) -> None:
        self._loader = loader
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"cis-{loader.system}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._loader.session():
                while (chunk := self._queue.get()) is not _DONE:
                    self._loader.load(chunk)
        except BaseException as error:  # handed to the importer's thread, which raises it
            self._failure = error
            # Keep draining so that the reader never blocks on a system that stopped.
            while self._queue.get() is not _DONE:
                pass

    def put(self, chunk: Any) -> None:
        """Queue a chunk; raises at once the error of a system that already failed."""
        self.raise_failure()
        self._queue.put(chunk)

    def finish(self) -> None:
        """No more chunks: wait for the ones queued to be loaded."""
        self._queue.put(_DONE)
        self._thread.join()

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
