"""Columnar reads and writes for the bulk paths: query results as Arrow tables, rows in without an ORM.

- :func:`read_arrow` — a query's result as a ``pyarrow.Table``: on PostgreSQL an unordered query of
  bounded-width columns comes as one ``array_agg`` per column in the binary protocol, any other streams
  ``COPY (query) TO STDOUT`` into pyarrow's CSV reader; SQLite's cursor rows become one Arrow struct
  array per partition, in C.
- :func:`id_list` (from :mod:`derbridge.infra.idlists`) — a list of ids or keys as **one** parameter of a
  set-based statement: an array on PostgreSQL (``= ANY(:ids)``), a JSON array on SQLite (``IN (SELECT value
  FROM json_each(:ids))``).
- :func:`insert_arrow` — rows of an Arrow table into a table: ``COPY`` on PostgreSQL, one ``executemany`` of
  tuples built column by column on SQLite, in the caller's transaction.
"""

# Identifiers in the SQL below come from Table metadata; values are bound or are COPY data.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Select
from sqlalchemy.types import TypeEngine

from derbridge.infra.bulk import arrow_rows, copy_arrow_table
from derbridge.infra.idlists import id_list as id_list  # re-exported: one of the set-based helpers

READ_PARTITION: Final[int] = 100_000
"""Rows fetched from SQLite per partition (one Arrow struct array each)."""

READ_BLOCK_BYTES: Final[int] = 16 * 1024 * 1024
"""pyarrow's CSV block size for a ``COPY … TO STDOUT`` result."""


async def read_arrow(connection: AsyncConnection, query: Select[Any], types: dict[str, pa.DataType]) -> pa.Table:
    """The result of ``query`` as a table whose columns are named and typed by ``types`` (in query order)."""
    sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    names = list(types)
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if connection.dialect.name == "postgresql":
        if not query._order_by_clauses and all(_bounded(c.type) for c in query.selected_columns):
            return await _read_arrays(driver, sql, types)
        received = bytearray()
        async with driver.cursor() as cursor, cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
            async for block in copy:
                received += block
        if not received:
            return pa.table({name: pa.array([], type=kind) for name, kind in types.items()})
        return pa_csv.read_csv(
            pa.BufferReader(received),
            read_options=pa_csv.ReadOptions(column_names=names, block_size=READ_BLOCK_BYTES),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
    parts: list[pa.RecordBatch] = []
    # The SQLite driver connection answers the aiosqlite calls (infra/sqlite_inline.py).
    cursor = await driver.execute(sql)
    try:
        row_type = pa.struct(list(types.items()))
        while rows := await cursor.fetchmany(READ_PARTITION):
            parts.append(pa.RecordBatch.from_struct_array(pa.array(rows, type=row_type)))
    finally:
        await cursor.close()
    return pa.Table.from_batches(parts, schema=pa.schema(list(types.items())))


ARRAY_TEXT_BYTES: Final[int] = 256
"""The longest text column :func:`read_arrow` reads as one array: a value of PostgreSQL holds at most 1 GB,
so a column of bounded width (``String(n)``, n ≤ this) fits for four million rows even at full width."""


def _bounded(kind: TypeEngine[Any]) -> bool:
    """Whether a column of this type fits in one array value for any result of the sizes derbridge reads:
    numbers, booleans and times do, short strings do; ``Text``, JSON and long strings go by ``COPY``."""
    if isinstance(kind, TypeDecorator):
        kind = kind.impl_instance
    if isinstance(kind, String):
        return kind.length is not None and kind.length <= ARRAY_TEXT_BYTES
    return isinstance(kind, Integer | Float | Numeric | Boolean | DateTime)


async def _read_arrays(driver: Any, sql: str, types: dict[str, pa.DataType]) -> pa.Table:
    """PostgreSQL, for an unordered query of bounded columns (:func:`_bounded`): each column as one
    ``array_agg`` in the binary protocol.

    ``COPY … TO STDOUT`` hands the client one row per read, and psycopg's asynchronous copy costs about a
    microsecond of Python per row (a million rows of three columns: 1.1 s, against 0.43 s as three arrays).
    The aggregates of one ``SELECT`` consume the same rows in the same order, so the columns stay aligned;
    their order among rows is the query's, which had none. A column asked for as text is cast to text in
    the query, so that it reads as ``COPY`` would write it."""
    names = list(types)
    aliases = [f"c{i}" for i in range(len(names))]
    aggregated = ", ".join(
        f"array_agg({alias}::text)" if pa.types.is_string(kind) else f"array_agg({alias})"
        for alias, kind in zip(aliases, types.values(), strict=True)
    )
    async with driver.cursor(binary=True) as cursor:
        await cursor.execute(f"SELECT {aggregated} FROM ({sql}) AS q({', '.join(aliases)})")
        values = await cursor.fetchone()
    columns = {}
    for name, kind, column in zip(names, types.values(), values, strict=True):
        if column is None:  # no rows: array_agg of nothing is NULL
            columns[name] = pa.array([], type=kind)
            continue
        array = pa.array(column)
        columns[name] = array if array.type == kind else array.cast(kind)
    return pa.table(columns)


async def insert_arrow(
    connection: AsyncConnection, table: Table, data: pa.Table, *, skip_conflicts: bool = False
) -> None:
    """Insert every row of ``data`` (columns named as ``table``'s) into ``table``, in the open transaction.

    ``skip_conflicts``: a row that would break a unique key is left out (``ON CONFLICT DO NOTHING``); on
    PostgreSQL the rows are then copied into a temporary table first and inserted from it in one statement.
    """
    if data.num_rows == 0:
        return
    names = data.column_names
    if connection.dialect.name == "postgresql":
        quote = connection.dialect.identifier_preparer.quote
        columns = ", ".join(quote(n) for n in names)
        if not skip_conflicts:
            await copy_arrow_table(connection, quote(table.name), columns, data)
            return
        staging = quote(f"staging_{table.name}")
        await connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {staging} (LIKE {quote(table.name)} INCLUDING DEFAULTS) ON COMMIT DROP"
        )
        await copy_arrow_table(connection, staging, columns, data)
        await connection.exec_driver_sql(
            f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} FROM {staging} ON CONFLICT DO NOTHING"
        )
        await connection.exec_driver_sql(f"DROP TABLE {staging}")
        return
    conflicts = " ON CONFLICT DO NOTHING" if skip_conflicts else ""
    statement = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}){conflicts}"
    await connection.exec_driver_sql(statement, arrow_rows(data))


def db_time(connection: AsyncConnection, value: datetime) -> str:
    """``value`` as text a bulk write gives a :class:`~derbridge.infra.db.UTCDateTime` column: SQLite keeps
    naive UTC text (what the column type writes there); PostgreSQL's ``COPY`` reads ISO 8601 with the offset."""
    utc = value.astimezone(UTC)
    if connection.dialect.name == "sqlite":
        return utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    return utc.isoformat(timespec="microseconds")


def db_times(connection: AsyncConnection) -> Callable[[datetime | None], str | None]:
    """:func:`db_time` for a bulk write through the driver: ``None`` stays ``None``, and each distinct time is
    converted once (a batch of 10,000 rows usually carries a handful of distinct times)."""
    converted: dict[datetime, str] = {}

    def convert(value: datetime | None) -> str | None:
        if value is None:
            return None
        found = converted.get(value)
        if found is None:
            found = converted[value] = db_time(connection, value)
        return found

    return convert
