"""A score snapshot's rows with their components, kept as columnar parts (Asset Hub, F4).

Asset Hub records every scored device's score and the components that explain it (reliability,
connectivity, fatigue). A million rows written one by one through the database's row interface cost 2.5 s
(PostgreSQL ``COPY``) to 4 s (SQLite ``executemany``) of every transfer, for rows read only by an operator
paging through ``GET /assethub/v1/score-snapshots/{file_id}/scores``. They are kept instead as **parts**:
the rows of one program, sorted by ``device_id``, cut every :data:`PART_ROWS` rows, each part one Parquet
file (zstd) in a ``score_parts`` row with the part's first and last device id. A million rows are about
twenty inserts of a few hundred kilobytes, in the transaction that records the snapshot (so the record stays
all or nothing), and a page of a listing reads the one or two parts that hold it.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t

PART_ROWS = 50_000
"""Rows per part: a page of a listing decodes at most two parts (a few milliseconds each)."""

PART_COLUMNS: dict[str, pa.DataType] = {
    "device_id": pa.int64(),
    "score": pa.float64(),
    "eligible": pa.bool_(),
    "ineligibility_reason": pa.string(),
    "reliability": pa.float64(),
    "connectivity": pa.float64(),
    "fatigue": pa.float64(),
}
"""The columns a part holds, in order; ``file_id`` and ``program_code`` are the part row's own."""


def encode_parts(
    file_id: str, program_codes: list[str], program_index: NDArray[np.intp], rows: pa.Table
) -> list[dict[str, Any]]:
    """The ``score_parts`` rows of ``rows`` (columns :data:`PART_COLUMNS`); row ``i``'s program is
    ``program_codes[program_index[i]]``.

    The rows are cut by program and by ``device_id`` (sorted here unless they already are, as the transfer
    gives them). No device may appear twice in a program (the scoring read keeps one row per device and
    program).
    """
    table = rows.select(list(PART_COLUMNS)).cast(pa.schema(list(PART_COLUMNS.items())))
    index = np.asarray(program_index, dtype=np.int64)
    key = (index << 44) | table.column("device_id").to_numpy()
    if len(key) > 1 and not bool(np.all(key[1:] > key[:-1])):
        order = np.argsort(key, kind="stable")
        table, index = table.take(pa.array(order)), index[order]
    # Where one program's rows end and the next one's begin.
    bounds = [0, *(np.flatnonzero(np.diff(index)) + 1).tolist(), table.num_rows]
    parts: list[dict[str, Any]] = []
    for first, end in itertools.pairwise(bounds):
        if first == end:
            continue
        for start in range(first, end, PART_ROWS):
            part = table.slice(start, min(PART_ROWS, end - start))
            sink = pa.BufferOutputStream()
            # Dictionary encoding only where values repeat (a million distinct doubles would try it and
            # give up, at four times the cost); no statistics: a part is always read whole.
            pq.write_table(
                part,
                sink,
                compression="zstd",
                use_dictionary=["ineligibility_reason"],
                write_statistics=False,
                row_group_size=PART_ROWS,
            )
            device_ids = part.column("device_id")
            parts.append(
                {
                    "file_id": file_id,
                    "part": len(parts),
                    "program_code": program_codes[int(index[first])],
                    "first_device_id": device_ids[0].as_py(),
                    "last_device_id": device_ids[-1].as_py(),
                    "row_count": part.num_rows,
                    "data": sink.getvalue().to_pybytes(),
                }
            )
    return parts


def decode_part(data: bytes) -> pa.Table:
    """One part's rows (columns :data:`PART_COLUMNS`), sorted by ``device_id``."""
    return pq.read_table(pa.BufferReader(data))


async def insert_parts(connection: AsyncConnection, parts: list[dict[str, Any]]) -> None:
    """Insert the parts inside the open transaction (one statement, a row per part)."""
    if parts:
        await connection.execute(insert(t.score_parts), parts)


async def read_scores(
    connection: AsyncConnection, file_id: str, program_code: str, *, after: int | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows of ``program_code`` in snapshot ``file_id`` with ``device_id`` above ``after``,
    by ``device_id``, each with ``file_id`` and ``program_code``. Decodes only the parts that hold them."""
    p = t.score_parts
    query = (
        select(p.c.data).where(p.c.file_id == file_id, p.c.program_code == program_code).order_by(p.c.first_device_id)
    )
    if after is not None:
        query = query.where(p.c.last_device_id > after)
    found: list[dict[str, Any]] = []
    result = await connection.stream(query)
    try:
        async for (data,) in result:
            part = decode_part(data)
            if after is not None:
                part = part.filter(pc.greater(part.column("device_id"), after))
            found.extend(part.slice(0, limit - len(found)).to_pylist())
            if len(found) >= limit:
                break
    finally:
        await result.close()
    return [{"file_id": file_id, "program_code": program_code, **row} for row in found]
