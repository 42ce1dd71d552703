"""Asset Hub's score snapshot rows kept as columnar parts (adapters/score_parts.py), on both databases."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.assethub.adapters import score_parts
from derbridge.runtime import Runtime

FILE = "01SCOREPARTS"
# Program B (index 1) and A (index 0) interleaved, device ids shuffled.
DEVICES = [9, 3, 7, 1, 5, 2, 8, 4, 6, 10, 11]
PROGRAM = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0]


def scores(device_ids: list[int]) -> pa.Table:
    n = len(device_ids)
    return pa.table(
        {
            "device_id": pa.array(device_ids, pa.int64()),
            "score": [float(d) * 10 for d in device_ids],
            "eligible": [d % 3 != 0 for d in device_ids],
            "ineligibility_reason": [None if d % 3 else "DEVICE_OFFLINE" for d in device_ids],
            "reliability": [d / 100 for d in device_ids],
            "connectivity": [1.0] * n,
            "fatigue": [0.1] * n,
        }
    )


def encoded() -> list[dict[str, object]]:
    return score_parts.encode_parts(FILE, ["A", "B"], np.array(PROGRAM, dtype=np.intp), scores(DEVICES))


def test_rows_are_cut_by_program_then_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score_parts, "PART_ROWS", 4)
    parts = encoded()

    # A: 1 2 3 4 | 10 11; B: 5 6 7 8 | 9 (worked out by hand from DEVICES and PROGRAM).
    assert [
        (p["part"], p["program_code"], p["first_device_id"], p["last_device_id"], p["row_count"]) for p in parts
    ] == [
        (0, "A", 1, 4, 4),
        (1, "A", 10, 11, 2),
        (2, "B", 5, 8, 4),
        (3, "B", 9, 9, 1),
    ]
    first = score_parts.decode_part(parts[0]["data"])  # type: ignore[arg-type]
    assert first.column_names == list(score_parts.PART_COLUMNS)
    assert first.to_pylist()[2] == {
        "device_id": 3,
        "score": 30.0,
        "eligible": False,
        "ineligibility_reason": "DEVICE_OFFLINE",
        "reliability": 0.03,
        "connectivity": 1.0,
        "fatigue": 0.1,
    }


def test_no_rows_no_parts() -> None:
    assert score_parts.encode_parts(FILE, ["A"], np.array([], dtype=np.intp), scores([])) == []


async def test_pages_read_only_the_parts_that_hold_them(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(score_parts, "PART_ROWS", 4)
    engine = runtime.async_engine("assethub")
    try:
        await _pages(engine)
    finally:
        await runtime.aclose()  # the async engine's connections, closed on this event loop


async def _pages(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await score_parts.insert_parts(connection, encoded())
        await score_parts.insert_parts(connection, [])  # nothing to insert: no statement

    async def ids(program: str, after: int | None, limit: int) -> list[int]:
        async with engine.connect() as connection:
            rows = await score_parts.read_scores(connection, FILE, program, after=after, limit=limit)
        assert {(r["file_id"], r["program_code"]) for r in rows} <= {(FILE, program)}
        return [r["device_id"] for r in rows]

    assert await ids("A", None, 100) == [1, 2, 3, 4, 10, 11]
    assert await ids("A", None, 3) == [1, 2, 3]
    assert await ids("A", 3, 3) == [4, 10, 11]  # across two parts
    assert await ids("A", 4, 3) == [10, 11]  # the first part skipped
    assert await ids("A", 5, 1) == [10]  # a cursor between two parts
    assert await ids("A", 11, 3) == []
    assert await ids("B", 6, 10) == [7, 8, 9]
    assert await ids("C", None, 10) == []
    async with engine.connect() as connection:
        assert await score_parts.read_scores(connection, "other-file", "A", after=None, limit=10) == []
