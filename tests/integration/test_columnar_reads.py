"""``infra.columnar.read_arrow`` on both databases: the same table whichever way the rows travel (on
PostgreSQL an unordered query of bounded columns as one ``array_agg`` per column, any other by ``COPY``),
with NULLs, text that needs quoting, types cast to the ones asked for, and no rows at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import BigInteger, Column, DateTime, Float, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.infra import columnar
from derbridge.infra.columnar import read_arrow
from derbridge.runtime import Runtime

metadata = MetaData()
sample = Table(
    "columnar_sample",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", BigInteger, nullable=False),
    Column("name", String(64)),
    Column("score", Float),
    Column("note", Text),
    Column("seen_at", DateTime(timezone=True)),
)

SEEN = datetime(2027, 6, 2, 14, 30, tzinfo=UTC)
ROWS = [
    {"id": 1, "device_id": 30, "name": 'comma, "quote"', "score": 77.5, "note": "long " * 100, "seen_at": SEEN},
    {"id": 2, "device_id": 10, "name": None, "score": None, "note": None, "seen_at": None},
    {"id": 3, "device_id": 20, "name": "line\nbreak", "score": 0.0, "note": "", "seen_at": SEEN},
]
TYPES = {"device_id": pa.int64(), "name": pa.string(), "score": pa.float64()}


@pytest.fixture
async def connection(runtime: Runtime) -> AsyncIterator[AsyncConnection]:
    engine = runtime.async_engine("derms")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.execute(insert(sample), ROWS)
    async with engine.connect() as conn:
        yield conn
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await runtime.aclose()


def _rows(table: pa.Table) -> list[dict[str, object]]:
    return table.to_pylist()


async def test_unordered_query_reads_every_row_with_its_columns_aligned(connection: AsyncConnection) -> None:
    query = select(sample.c.device_id, sample.c.name, sample.c.score)
    table = await read_arrow(connection, query, TYPES)
    assert table.schema == pa.schema(list(TYPES.items()))
    got = sorted(_rows(table), key=lambda r: r["device_id"])  # type: ignore[arg-type, return-value]
    assert got == [
        {"device_id": 10, "name": None, "score": None},
        {"device_id": 20, "name": "line\nbreak", "score": 0.0},
        {"device_id": 30, "name": 'comma, "quote"', "score": 77.5},
    ]


async def test_ordered_query_keeps_its_order(connection: AsyncConnection) -> None:
    query = select(sample.c.device_id, sample.c.name, sample.c.score).order_by(sample.c.device_id.desc())
    table = await read_arrow(connection, query, TYPES)
    assert table.column("device_id").to_pylist() == [30, 20, 10]
    assert table.column("name").to_pylist() == ['comma, "quote"', "line\nbreak", None]


async def test_columns_are_cast_to_the_types_asked_for(connection: AsyncConnection) -> None:
    # An integer column read as floats; on PostgreSQL (text on the wire for COPY) also as text.
    postgres = connection.dialect.name == "postgresql"
    query = select(sample.c.id, sample.c.device_id).where(sample.c.id < 3)
    types = {"id": pa.string() if postgres else pa.int64(), "device_id": pa.float64()}
    for ordered in (query, query.order_by(sample.c.id)):
        table = await read_arrow(connection, ordered, types)
        assert table.schema == pa.schema(list(types.items()))
        assert sorted(table.column("device_id").to_pylist()) == [10.0, 30.0]
        assert sorted(table.column("id").to_pylist()) == (["1", "2"] if postgres else [1, 2])


@pytest.mark.parametrize("ordered", [False, True])
async def test_no_rows_is_an_empty_table_of_the_types_asked_for(connection: AsyncConnection, ordered: bool) -> None:
    query = select(sample.c.device_id, sample.c.name, sample.c.score).where(sample.c.id > 100)
    if ordered:
        query = query.order_by(sample.c.id)
    table = await read_arrow(connection, query, TYPES)
    assert table.num_rows == 0
    assert table.schema == pa.schema(list(TYPES.items()))


async def test_postgresql_reads_bounded_columns_as_arrays_and_text_by_copy(
    connection: AsyncConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    if connection.dialect.name != "postgresql":
        pytest.skip("the arrays are PostgreSQL's way")
    used: list[str] = []
    real = columnar._read_arrays

    async def spy(*args: Any) -> Any:
        used.append("arrays")
        return await real(*args)

    monkeypatch.setattr(columnar, "_read_arrays", spy)
    await read_arrow(
        connection, select(sample.c.device_id, sample.c.name), {"device_id": pa.int64(), "name": pa.string()}
    )
    assert used == ["arrays"]
    # A Text column may be long: a whole column in one array value could pass PostgreSQL's 1 GB per value.
    notes = await read_arrow(connection, select(sample.c.id, sample.c.note), {"id": pa.int64(), "note": pa.string()})
    assert used == ["arrays"]
    assert sorted(notes.to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "note": "long " * 100},
        {"id": 2, "note": None},
        {"id": 3, "note": ""},
    ]


async def test_a_time_read_as_text_is_the_same_text_either_way(connection: AsyncConnection) -> None:
    query = select(sample.c.id, sample.c.seen_at).where(sample.c.id != 2)
    types = {"id": pa.int64(), "seen_at": pa.string()}
    unordered = sorted(map(str, (await read_arrow(connection, query, types)).column("seen_at").to_pylist()))
    ordered = (await read_arrow(connection, query.order_by(sample.c.id), types)).column("seen_at").to_pylist()
    assert unordered == sorted(map(str, ordered))
    assert len(set(ordered)) == 1
