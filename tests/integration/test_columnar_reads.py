"""``infra.columnar.read_arrow`` on both databases: the same table whichever way the rows travel (on
PostgreSQL an unordered query as one ``array_agg`` per column, an ordered one by ``COPY``), with NULLs,
text that needs quoting, types cast to the ones asked for, and no rows at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pyarrow as pa
import pytest
from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

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
)

ROWS = [
    {"id": 1, "device_id": 30, "name": 'comma, "quote"', "score": 77.5},
    {"id": 2, "device_id": 10, "name": None, "score": None},
    {"id": 3, "device_id": 20, "name": "line\nbreak", "score": 0.0},
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
