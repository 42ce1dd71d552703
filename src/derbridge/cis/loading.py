"""What every system's CIS loader shares: telling new, updated and unchanged rows apart, set-based.

Each system stores, with its copy of a service point, the digest of the extract row it came from. A
loader reads those digests once (into sorted numpy byte arrays, not a dict of a million Python strings),
compares each incoming row's digest with them, and writes only the rows that are new or changed — so a
re-import of the same file writes nothing and reports every row unchanged. When the table is empty (a
first import) there is nothing to compare. The subclass says which tables a changed row goes to.

A loader serves one import: it reads the digests at its first chunk and its counts add up over the
import's chunks.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Column, Connection, Engine, select

from derbridge.infra.bulk import db_timestamp
from derbridge.infra.db import utcnow

SQLITE_LOAD_CACHE_KIB = 64 * 1024
"""SQLite page cache while a loader writes (KiB; the default is 2 MiB). The keys arrive in random order,
so each chunk touches index pages all over the file; measured at 1,000,000 rows, 32 MiB and 128 MiB load
equally fast, 2 MiB much slower."""


@dataclass
class LoadCounts:
    """How the rows one system received compare with what it held."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def entity_rows(rows: Any, columns: tuple[str, ...], now: Any, *, last_per_key: bool = True) -> Any:
    """``columns`` of ``rows`` (the first is the entity's key) as the table names them, one row per key —
    the chunk's last row wins for a person, account or premise — ordered by key so that the index pages
    fill in order, plus ``updated_at`` = ``now``. With ``last_per_key=False`` the keys are already
    distinct (service points) and the rows are only ordered."""
    key = columns[0]
    picked = rows.select(list(columns))
    if last_per_key:
        last = (
            picked.select([key])
            .append_column("__row", pa.array(np.arange(picked.num_rows, dtype=np.int64)))
            .group_by(key, use_threads=False)
            .aggregate([("__row", "max")])
        )
        picked = picked.take(last["__row_max"])
    picked = picked.take(pc.sort_indices(picked[key]))
    picked = picked.rename_columns([_RENAMED.get(c, c) for c in columns])
    stamp = pa.scalar(now) if isinstance(now, str) else pa.scalar(now, pa.timestamp("us", tz="UTC"))
    return picked.append_column("updated_at", pa.repeat(stamp, picked.num_rows))


_RENAMED = {"account_status": "status", "row_hash": "cis_row_hash"}
"""Extract columns whose table column has another name."""


class CisLoader(ABC):
    """Loads chunks of CIS rows (Arrow tables of :data:`~derbridge.cis.extract.VALID_COLUMNS`) into one
    system's database, idempotently."""

    system: str
    """The system's name in reports ("assethub", "derms")."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: Any = None
        self._digests_read = False
        self.first_import = False
        """The system held no service point when the import began: the service points of this import
        (each one appears once in an extract) cannot exist yet and are inserted without a merge."""
        self._connection: Connection | None = None
        self.counts = LoadCounts()
        self._loaded_accounts: list[Any] = []
        self._loaded_account_ids: set[str] | None = None

    @property
    def loaded_account_ids(self) -> set[str]:
        """Accounts that arrived or changed in this import: what parked work waiting for them needs.

        Kept as Arrow arrays while the import runs, made a set of Python strings once, when asked."""
        if self._loaded_account_ids is None:
            ids: set[str] = set()
            if self._loaded_accounts:
                ids.update(pc.unique(pa.chunked_array(self._loaded_accounts, pa.string())).to_pylist())
            self._loaded_account_ids = ids
        return self._loaded_account_ids

    @property
    @abstractmethod
    def digest_columns(self) -> tuple[Column[Any], Column[Any]]:
        """The (service point id, row digest) columns where this system keeps each row's digest."""

    @abstractmethod
    def write(self, connection: Connection, rows: Any, now: Any) -> None:
        """Upsert the entities of ``rows`` (an Arrow table of new or changed rows only) into this system's
        tables."""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold one connection for the chunks loaded inside the block (one transaction per chunk still).

        On SQLite, while it writes, the connection gets a larger page cache and no foreign-key checks:
        every row the loaders write brings its parents in the same transaction, written first (a person
        with its account, an account with its premise), so a check cannot fail, and skipping the parent
        look-up per row cut the load by about a third (SQLite lets the setting change only outside a
        transaction, hence here). Both are put back at the end. ``synchronous`` stays NORMAL: in WAL mode
        a commit does not wait for the disk anyway, and OFF would risk the file, not just the last chunk,
        on a power loss.
        """
        with self._engine.connect() as connection:
            driver: Any = connection.connection.dbapi_connection if connection.dialect.name == "sqlite" else None
            if driver is not None:
                cache = driver.execute("PRAGMA cache_size").fetchone()[0]
                driver.execute(f"PRAGMA cache_size=-{SQLITE_LOAD_CACHE_KIB}")
                driver.execute("PRAGMA foreign_keys=OFF")
            self._connection = connection
            try:
                yield
            finally:
                self._connection = None
                if driver is not None:
                    driver.execute(f"PRAGMA cache_size={int(cache)}")
                    driver.execute("PRAGMA foreign_keys=ON")

    def load(self, rows: Any) -> None:
        """Load one chunk in one transaction, counting each row as inserted, updated or unchanged."""
        if self._connection is None:
            with self.session():
                self._load(self._connection_or_fail(), rows)
        else:
            self._load(self._connection, rows)

    def _connection_or_fail(self) -> Connection:
        assert self._connection is not None
        return self._connection

    def _load(self, connection: Connection, rows: Any) -> None:
        with connection.begin():
            if not self._digests_read:
                self._known = self._read_digests(connection)
                self._digests_read = True
                self.first_import = self._known is None
            changed = self._changed(rows)
            if changed.num_rows:
                self.write(connection, changed, db_timestamp(connection, utcnow()))
        # Only after the commit: a failed chunk must not be remembered as loaded.
        if changed.num_rows:
            self._loaded_accounts.append(pc.unique(changed["cis_account_id"]))
            self._loaded_account_ids = None

    def _read_digests(self, connection: Connection) -> _KnownDigests | None:
        key, digest = self.digest_columns
        cursor = connection.execute(select(key, digest))
        ids: list[Any] = []
        digests: list[Any] = []
        while batch := cursor.fetchmany(100_000):
            ids.append(pa.array([r[0] for r in batch], pa.string()))
            digests.append(pa.array([r[1] for r in batch], pa.string()))
        if not ids:
            return None
        return _KnownDigests(pa.concat_arrays(ids), pa.concat_arrays(digests))

    def _changed(self, rows: Any) -> Any:
        known: _KnownDigests | None = self._known
        if known is None:  # an empty table: every row is new
            self.counts.inserted += rows.num_rows
            return rows
        new, same = known.compare(rows["cis_service_point_id"], rows["row_hash"])
        inserted = int(new.sum())
        unchanged = int(same.sum())
        self.counts.inserted += inserted
        self.counts.unchanged += unchanged
        self.counts.updated += rows.num_rows - inserted - unchanged
        return rows.filter(pa.array(~same))


class _KnownDigests:
    """The digests a system holds, as sorted fixed-width byte arrays: a chunk is looked up with one
    binary search per row in numpy (no hash table of a million ids rebuilt per chunk, no dict of a
    million Python strings)."""

    def __init__(self, ids: Any, digests: Any) -> None:
        self._width = max(1, pc.max(pc.binary_length(ids)).as_py() or 1)
        keys = _fixed(ids, self._width)
        order = np.argsort(keys, kind="stable")
        self._ids = keys[order]
        self._digests = _fixed(digests, 32)[order]

    def compare(self, ids: Any, digests: Any) -> tuple[Any, Any]:
        """Per row: (unknown service point, same digest as held)."""
        fits = pc.less_equal(pc.binary_length(ids), self._width).to_numpy(zero_copy_only=False)
        keys = _fixed(pc.if_else(pa.array(fits), ids, ""), self._width)
        position = np.searchsorted(self._ids, keys).clip(0, len(self._ids) - 1)
        found = fits & (self._ids[position] == keys)
        same = found & (self._digests[position] == _fixed(digests, 32))
        return ~found, same


def _fixed(values: Any, width: int) -> Any:
    """A string array as numpy fixed-width bytes (``S{width}``; values are at most ``width`` bytes)."""
    return np.array(pc.cast(values, pa.binary()).to_numpy(zero_copy_only=False), dtype=f"S{width}")
