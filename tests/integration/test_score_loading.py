"""The DERMS's score loader writes the same rows whichever way they reach the database.

On SQLite each slice of rows goes in as one JSON document parsed by ``json_each``, unless one of its texts
holds a control character, which that encoder does not escape: that slice goes through ``executemany``. Both must
store exactly the file's values, resolve device ids alike and leave unknown devices without one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.derms.adapters import score_snapshots
from derbridge.derms.adapters import tables as dm
from derbridge.runtime import Runtime

AT = datetime(2027, 6, 1, 12, tzinfo=UTC)
# Awkward but legal texts: quotes, backslashes, non-ASCII, a JSON-looking value.
ROWS = [
    ("P1", "ECOBEE", 'n"1', 77.5, True, None),
    ("P1", "ECOBEE", "n\\2", 100.0, False, "DEVICE_OFFLINE"),
    ("P1", "NÉST", "n3", 0.0, False, "CHRONIC_OPT_OUT"),
    ("P\\2", "ECOBEE", '["x"]', 0.1, True, None),
    ("P\\2", "ECOBEE", "unknown", 55.5, True, None),
]
KNOWN = {("ECOBEE", 'n"1'): 11, ("ECOBEE", "n\\2"): 12, ("NÉST", "n3"): 13, ("ECOBEE", '["x"]'): 14}


def table(rows: list[tuple[object, ...]]) -> pa.Table:
    names = ["program_code", "head_end_system", "nic_id", "score", "eligible", "ineligibility_reason"]
    return pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})


async def load(engine: AsyncEngine, file_id: str, rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    async with engine.begin() as connection:
        await connection.execute(
            insert(dm.score_snapshots).values(
                file_id=file_id,
                generated_at=AT,
                scoring_model_version="v1",
                row_count=len(rows),
                unknown_devices=0,
                loaded_at=AT,
                is_current=False,
            )
        )
        await score_snapshots.insert_scores(connection, file_id, table(rows))
    s = dm.device_scores
    async with engine.connect() as connection:
        result = await connection.execute(
            select(s.c.program_code, s.c.head_end_system, s.c.nic_id, s.c.device_id, s.c.score, s.c.eligible)
            .add_columns(s.c.ineligibility_reason)
            .where(s.c.file_id == file_id)
            .order_by(s.c.program_code, s.c.head_end_system, s.c.nic_id)
        )
        return [tuple(row) for row in result]


def expected(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return sorted((p, h, n, KNOWN.get((h, n)), score, eligible, reason) for p, h, n, score, eligible, reason in rows)


@pytest.mark.parametrize("slice_rows", [2, 100_000])
async def test_both_encodings_store_the_files_values(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, slice_rows: int
) -> None:
    monkeypatch.setattr(score_snapshots, "WRITE_PARTITION", slice_rows)
    engine = runtime.async_engine("derms")
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(dm.devices),
                [
                    {
                        "device_id": device_id,
                        "head_end_system": hes,
                        "nic_id": nic,
                        "device_type": "THERMOSTAT",
                        "manufacturer": "Acme",
                        "model": "T1",
                        "created_at": AT,
                    }
                    for (hes, nic), device_id in KNOWN.items()
                ],
            )
        assert score_snapshots.json_document(table(ROWS)) is not None  # SQLite takes the JSON path
        assert await load(engine, "file-json", ROWS) == expected(ROWS)

        # A tab in a nic id: not escaped by the JSON encoder, so its slice is bound row by row instead (with
        # slices of two rows, the other slices still go as JSON).
        with_tab = [*ROWS, ("P1", "ECOBEE", "tab\there", 12.5, True, None)]
        assert score_snapshots.json_document(table(with_tab)) is None
        assert await load(engine, "file-rows", with_tab) == expected(with_tab)
    finally:
        await runtime.aclose()
