"""Set-based writes: many rows in one statement, never one round trip per row.

On PostgreSQL rows are streamed with ``COPY`` into a temporary staging table and merged with one
``INSERT … SELECT … ON CONFLICT``; on SQLite one ``executemany`` of ``INSERT … ON CONFLICT`` runs inside
the caller's transaction. Rows are plain tuples in the table's column order, which is what both drivers
take without per-row conversion work in SQLAlchemy.
"""

# Identifiers in the SQL below come from Table metadata and are quoted by the dialect; values are bound.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.ext.asyncio import AsyncConnection

Row = tuple[Any, ...]


def db_timestamp(connection: Connection, value: datetime) -> Any:
    """``value`` as the driver should receive it for a :class:`~derbridge.infra.db.UTCDateTime` column.

    SQLite keeps naive UTC text (what SQLAlchemy's DateTime writes there); PostgreSQL takes the aware
    value. Raw driver statements bypass the column type, so bulk writers call this once per batch.
    """
    utc = value.astimezone(UTC)
    if connection.dialect.name == "sqlite":
        return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return utc


def _quote(connection: Connection, name: str) -> str:
    return str(connection.dialect.identifier_preparer.quote(name))


def bulk_upsert(
    connection: Connection,
    table: Table,
    rows: Sequence[Row],
    *,
    key: Sequence[str],
    columns: Sequence[str] | None = None,
) -> None:
    """Insert ``rows`` into ``table``, updating every non-key column of rows whose ``key`` exists.

    ``columns`` names the tuple positions (default: all of the table's columns in order). The rows must
    have distinct keys: callers deduplicate first, because PostgreSQL refuses to touch one row twice in a
    single ``ON CONFLICT`` statement.
    """
    if not rows:
        return
    names = list(columns) if columns is not None else [c.name for c in table.columns]
    quoted = [_quote(connection, n) for n in names]
    target = _quote(connection, table.name)
    key_sql = ", ".join(_quote(connection, k) for k in key)
    updates = [f"{q} = excluded.{q}" for n, q in zip(names, quoted, strict=True) if n not in key]
    on_conflict = f"ON CONFLICT ({key_sql}) DO " + ("UPDATE SET " + ", ".join(updates) if updates else "NOTHING")
    column_sql = ", ".join(quoted)

    if connection.dialect.name == "postgresql":
        stage = _quote(connection, f"stage_{table.name}")
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
        connection.exec_driver_sql(f"CREATE TEMP TABLE {stage} AS SELECT {column_sql} FROM {target} WITH NO DATA")
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {stage} ({column_sql}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        connection.exec_driver_sql(
            f"INSERT INTO {target} ({column_sql}) SELECT {column_sql} FROM {stage} {on_conflict}"
        )
        connection.exec_driver_sql(f"DROP TABLE {stage}")
        return

    placeholders = ", ".join("?" for _ in names)
    connection.exec_driver_sql(
        f"INSERT INTO {target} ({column_sql}) VALUES ({placeholders}) {on_conflict}",
        list(rows),
    )


COPY_CHUNK = 1024 * 1024
"""Bytes handed to ``COPY`` per write: large enough to amortise the call, small enough to bound memory."""


async def copy_arrow_table(connection: AsyncConnection, target: str, columns: str, data: Any) -> None:
    """Stream a ``pyarrow.Table`` into ``target (columns)`` on PostgreSQL with ``COPY … FROM STDIN (FORMAT
    csv)`` — the Arrow CSV writer formats the rows in C, no Python object per row. ``target`` and
    ``columns`` are already quoted SQL."""
    import io

    import pyarrow.csv as pa_csv

    buffer = io.BytesIO()
    pa_csv.write_csv(data, buffer, pa_csv.WriteOptions(include_header=False))
    payload = buffer.getbuffer()
    raw = await connection.get_raw_connection()
    async with (
        raw.driver_connection.cursor() as cursor,  # type: ignore[union-attr]
        cursor.copy(f"COPY {target} ({columns}) FROM STDIN (FORMAT csv)") as copy,
    ):
        for start in range(0, len(payload), COPY_CHUNK):
            await copy.write(payload[start : start + COPY_CHUNK])


def arrow_rows(data: Any) -> list[Row]:
    """The rows of a ``pyarrow.Table`` as tuples for ``executemany`` (SQLite), built column by column in C.

    Numbers and booleans go through numpy's ``tolist`` (several times faster than Arrow's ``to_pylist`` per
    value); a column with nulls, strings and anything else through ``to_pylist``. A column holding one value
    on every row is repeated, not copied a million times.
    """
    import itertools

    import pyarrow as pa
    import pyarrow.compute as pc

    columns: list[Any] = []
    for column in data.columns:
        kind = column.type
        if column.null_count == 0 and (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            columns.append(column.to_numpy().tolist())
        elif len(column) and column.null_count == 0 and pc.count_distinct(column).as_py() == 1:
            columns.append(itertools.repeat(column[0].as_py(), len(column)))
        else:
            columns.append(column.to_pylist())
    return list(zip(*columns, strict=True)) if columns else []


def bulk_upsert_arrow(
    connection: Connection, table: Table, data: Any, *, key: Sequence[str], new_keys_only: bool = False
) -> None:
    """:func:`bulk_upsert` of a ``pyarrow.Table`` whose columns are named as ``table``'s (a subset, in any
    order), inside the caller's transaction.

    On PostgreSQL the Arrow CSV writer formats the rows for ``COPY`` in C (no Python object per value);
    on SQLite the rows become tuples for one ``executemany``. The keys must be distinct (see
    :func:`bulk_upsert`). ``new_keys_only``: the caller knows that no key exists yet, so the rows are
    inserted without the merge (on PostgreSQL ``COPY`` straight into the table, no staging table); a key
    that does exist after all fails the statement.
    """
    import io

    import pyarrow.csv as pa_csv

    if data.num_rows == 0:
        return
    names = list(data.column_names)
    column_sql = ", ".join(_quote(connection, n) for n in names)
    target = _quote(connection, table.name)
    stage = _quote(connection, f"stage_{table.name}")
    key_sql = ", ".join(_quote(connection, k) for k in key)
    updates = ", ".join(f"{q} = excluded.{q}" for q in (_quote(connection, n) for n in names if n not in key))
    if connection.dialect.name != "postgresql":
        placeholders = ", ".join("?" for _ in names)
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        # Rows are made a slice at a time while SQLite consumes them: never the whole chunk as tuples.
        merge = "" if new_keys_only else f" ON CONFLICT ({key_sql}) DO UPDATE SET {updates}"
        cursor.executemany(f"INSERT INTO {target} ({column_sql}) VALUES ({placeholders}){merge}", _python_rows(data))
        cursor.close()
        return
    if not new_keys_only:
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {stage}")
        connection.exec_driver_sql(f"CREATE TEMP TABLE {stage} AS SELECT {column_sql} FROM {target} WITH NO DATA")
    buffer = io.BytesIO()
    pa_csv.write_csv(data, buffer, pa_csv.WriteOptions(include_header=False))
    payload = buffer.getbuffer()
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {target if new_keys_only else stage} ({column_sql}) FROM STDIN (FORMAT csv)") as copy:
        for start in range(0, len(payload), COPY_CHUNK):
            copy.write(payload[start : start + COPY_CHUNK])
    del payload
    if new_keys_only:
        return
    connection.exec_driver_sql(
        f"INSERT INTO {target} ({column_sql}) SELECT {column_sql} FROM {stage} "
        f"ON CONFLICT ({key_sql}) DO UPDATE SET {updates}"
    )
    connection.exec_driver_sql(f"DROP TABLE {stage}")


def _python_rows(data: Any, slice_rows: int = 10_000) -> Iterator[Row]:
    """Rows of a ``pyarrow.Table`` as tuples, a slice at a time, each column converted through numpy in C
    (``to_pylist`` builds a scalar object per value first and is several times slower); nulls become
    ``None``."""
    import numpy as np
    import pyarrow.compute as pc

    for start in range(0, data.num_rows, slice_rows):
        part = data.slice(start, slice_rows)
        columns: list[Any] = []
        for column in part.columns:
            values = column.to_numpy(zero_copy_only=False)
            if column.null_count and values.dtype.kind == "f":
                values = np.where(pc.is_null(column).to_numpy(zero_copy_only=False), None, values.astype(object))
            columns.append(values.tolist())
        yield from zip(*columns, strict=True)
