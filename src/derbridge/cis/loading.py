"""What every system's CIS loader shares: telling new, updated and unchanged rows apart, set-based.

Each system stores, with its copy of a service point, the digest of the extract row it came from. A
loader reads those digests once, compares each incoming row's digest with them, and writes only the rows
that are new or changed — so a re-import of the same file writes nothing and reports every row unchanged.
The subclass says which tables a changed row goes to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Engine, select

from derbridge.cis.extract import CisRecord
from derbridge.infra.bulk import db_timestamp
from derbridge.infra.db import utcnow


@dataclass
class LoadCounts:
    """How the rows one system received compare with what it held."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


class CisLoader(ABC):
    """Loads chunks of CIS records into one system's database, idempotently."""

    system: str
    """The system's name in reports ("assethub", "derms")."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: dict[str, str] | None = None
        self.counts = LoadCounts()
        self.loaded_account_ids: set[str] = set()
        """Accounts that arrived or changed in this import: what parked work waiting for them needs."""

    @property
    @abstractmethod
    def digest_columns(self) -> tuple[Column[Any], Column[Any]]:
        """The (service point id, row digest) columns where this system keeps each row's digest."""

    @abstractmethod
    def write(self, connection: Connection, records: Sequence[CisRecord], now: Any) -> None:
        """Upsert the entities of ``records`` (new or changed rows only) into this system's tables."""

    def load(self, records: Sequence[CisRecord]) -> None:
        """Load one chunk in one transaction, counting each row as inserted, updated or unchanged."""
        with self._engine.begin() as connection:
            if self._known is None:
                key, digest = self.digest_columns
                self._known = dict(connection.execute(select(key, digest)).tuples().all())
            known = self._known
            changed: list[CisRecord] = []
            for record in records:
                previous = known.get(record.cis_service_point_id)
                if previous is None:
                    self.counts.inserted += 1
                elif previous != record.row_hash:
                    self.counts.updated += 1
                else:
                    self.counts.unchanged += 1
                    continue
                changed.append(record)
            if changed:
                self.write(connection, changed, db_timestamp(connection, utcnow()))
        # Only after the commit: a failed chunk must not be remembered as loaded.
        for record in changed:
            known[record.cis_service_point_id] = record.row_hash
            self.loaded_account_ids.add(record.cis_account_id)
