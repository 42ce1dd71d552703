"""The DERMS database's side of score snapshots (F4): read a score file's CSV, and load its rows set-based.

Every row goes into ``device_scores`` resolving ``device_id`` by ``(head_end_system, nic_id)`` —
PostgreSQL: staged with ``COPY``, then one ``INSERT … SELECT … LEFT JOIN devices``; SQLite: one
``INSERT … SELECT … FROM json_each(?)`` per :data:`WRITE_PARTITION` rows (encoded as JSON in Arrow), looking
the device up in the same statement (``executemany`` when a text holds a control character). Rows for
devices the DERMS does not know are kept with no ``device_id``. :mod:`derbridge.derms.services.score_snapshots`
runs these in the inbox transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts.common import DeviceIdentity
from derbridge.contracts.device_score_transfer import Compression
from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.score_file import InvalidScoreFile
from derbridge.infra.bulk import arrow_rows, copy_arrow_table

UNKNOWN_DEVICES_LISTED = 1000
"""At most this many unknown devices are named in an acknowledgement; the count is always complete."""

WRITE_PARTITION = 100_000
"""Rows turned into tuples and written per ``executemany`` (SQLite)."""
STAGE = "score_stage"
"""The temporary staging table's name (qualified per database by :func:`_stage_table`)."""

_COLUMN_TYPES: dict[str, pa.DataType] = {
    "program_code": pa.string(),
    "head_end_system": pa.string(),
    "nic_id": pa.string(),
    "device_id": pa.int64(),
    "score": pa.float64(),
    "eligible": pa.bool_(),
    "ineligibility_reason": pa.string(),
    "computed_at": pa.string(),
}


def read_score_csv(path: Path, compression: Compression) -> pa.Table:
    """Every column of a score file's rows, typed; :class:`InvalidScoreFile` when it is not readable CSV."""
    try:
        with pa.input_stream(str(path), compression="gzip" if compression is Compression.GZIP else None) as stream:
            return pa_csv.read_csv(
                stream,
                convert_options=pa_csv.ConvertOptions(column_types=_COLUMN_TYPES, strings_can_be_null=True),
            )
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidScoreFile(f"not a readable score file: {error}") from None


async def lock_snapshots(connection: AsyncConnection) -> None:
    """Serialise score loads (PostgreSQL; SQLite serialises writers already)."""
    # Two files loaded at once must not both become current, nor both pass the staleness check against the
    # same old snapshot.
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('derms.score-snapshots'))"))


async def snapshot(connection: AsyncConnection, file_id: str) -> Row[Any] | None:
    """The snapshot loaded from ``file_id``, if any."""
    snapshots = t.score_snapshots
    return (await connection.execute(select(snapshots).where(snapshots.c.file_id == file_id))).first()


async def current_snapshot(connection: AsyncConnection) -> Row[Any] | None:
    """The current snapshot, if any."""
    snapshots = t.score_snapshots
    return (await connection.execute(select(snapshots).where(snapshots.c.is_current.is_(True)))).first()


async def insert_snapshot(
    connection: AsyncConnection,
    file_id: str,
    generated_at: datetime,
    scoring_model_version: str,
    row_count: int,
    loaded_at: datetime,
) -> None:
    """Record a snapshot being loaded (not current yet, no unknown devices counted yet)."""
    await connection.execute(
        insert(t.score_snapshots).values(
            file_id=file_id,
            generated_at=generated_at,
            scoring_model_version=scoring_model_version,
            row_count=row_count,
            unknown_devices=0,
            loaded_at=loaded_at,
            is_current=False,
        )
    )


async def make_current(connection: AsyncConnection, file_id: str, unknown_devices: int) -> None:
    """Record the snapshot's unknown device count and make it the only current one."""
    snapshots = t.score_snapshots
    await connection.execute(
        update(snapshots).where(snapshots.c.file_id == file_id).values(unknown_devices=unknown_devices)
    )
    await connection.execute(
        update(snapshots)
        .where((snapshots.c.is_current.is_(True)) | (snapshots.c.file_id == file_id))
        .values(is_current=snapshots.c.file_id == file_id)
    )


def _stage_table(connection: AsyncConnection) -> str:
    # Qualified with the temporary schema, so that no statement below can ever reach a permanent table.
    return f"pg_temp.{STAGE}" if connection.dialect.name == "postgresql" else f"temp.{STAGE}"


async def _stage(connection: AsyncConnection, rows: pa.Table) -> str:
    """Put the rows in a temporary table of this connection with ``COPY`` (PostgreSQL); returns its name.

    The table is dropped again by :func:`insert_scores` in the same transaction: the inbox may apply several
    messages in one transaction (one savepoint each), and the next load must find no table of that name. A
    table left by a load that was rolled back is dropped first.
    """
    columns = ", ".join(rows.column_names)
    stage = _stage_table(connection)
    await connection.execute(text(f"DROP TABLE IF EXISTS {stage}"))
    await connection.execute(
        text(
            f"CREATE TEMP TABLE {stage} (program_code text, head_end_system text, nic_id text, "
            "score double precision, eligible boolean, ineligibility_reason text) ON COMMIT DROP"
        )
    )
    await copy_arrow_table(connection, stage, columns, rows)
    # The planner must know the stage holds a million rows, not the default guess: else it plans the join
    # with the devices for a tenth of that and spills the hash to disk in batches.
    await connection.execute(text(f"ANALYZE {stage}"))
    return stage


async def insert_scores(connection: AsyncConnection, file_id: str, rows: pa.Table) -> None:
    """Insert the rows as ``file_id``'s scores, each with the DERMS's ``device_id`` of its (head end, nic).

    PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT … SELECT … LEFT JOIN devices``. SQLite:
    straight into ``device_scores``, the device id looked up by a subquery on the devices' unique (head end,
    nic) index in the same statement — no staging table written and read back; a slice of rows goes in as one
    JSON document read by ``json_each`` (:func:`json_document`), or bound row by row with ``executemany``
    when the JSON encoder cannot take it (a control character in a text, or an SQLite before 3.38).
    """
    d, s = t.devices, t.device_scores
    if connection.dialect.name == "postgresql":
        stage = await _stage(connection, rows)
        await connection.execute(
            text(
                f"INSERT INTO {s.name} (file_id, program_code, head_end_system, nic_id, device_id, score, eligible, "  # noqa: S608
                "ineligibility_reason) "
                "SELECT :file_id, st.program_code, st.head_end_system, st.nic_id, d.device_id, st.score, st.eligible, "
                f"st.ineligibility_reason FROM {stage} st LEFT JOIN {d.name} d "
                "ON d.head_end_system = st.head_end_system AND d.nic_id = st.nic_id"
            ),
            {"file_id": file_id},
        )
        await connection.execute(text(f"DROP TABLE {stage}"))
        return
    if rows.num_rows == 0:
        return  # an empty executemany would run the statement once, without parameters
    # ?1 file, ?2 program, ?3 head end, ?4 nic, ?5 score, ?6 eligible, ?7 reason (numbered: ?3 and ?4 twice).
    bound = (
        f"INSERT INTO {s.name} (file_id, program_code, head_end_system, nic_id, device_id, score, eligible, "  # noqa: S608
        "ineligibility_reason) VALUES (?1, ?2, ?3, ?4, "
        f"(SELECT device_id FROM {d.name} WHERE head_end_system = ?3 AND nic_id = ?4), ?5, ?6, ?7)"
    )
    # The same, for a slice of rows as one JSON document: [[program, head end, nic, score, eligible, reason], …].
    from_json = (
        f"INSERT INTO {s.name} (file_id, program_code, head_end_system, nic_id, device_id, score, "  # noqa: S608
        "eligible, ineligibility_reason) SELECT ?1, j.value ->> 0, j.value ->> 1, j.value ->> 2, "
        f"(SELECT device_id FROM {d.name} WHERE head_end_system = j.value ->> 1 AND nic_id = j.value ->> 2), "
        "j.value ->> 3, j.value ->> 4, j.value ->> 5 FROM json_each(?2) AS j"
    )
    with_json = sqlite3.sqlite_version_info >= JSON_ARROW_SQLITE
    # A slice at a time, in the one transaction: memory holds one slice's document (or tuples), not all rows.
    for start in range(0, rows.num_rows, WRITE_PARTITION):
        part = rows.slice(start, WRITE_PARTITION)
        document = await asyncio.to_thread(json_document, part) if with_json else None
        if document is not None:
            # The slice crosses into SQLite as one string parsed in C, instead of bound tuples (a fifth faster).
            await connection.exec_driver_sql(from_json, (file_id, document))
            continue
        with_file = part.add_column(0, "file_id", pa.repeat(pa.scalar(file_id), part.num_rows))
        await connection.exec_driver_sql(bound, await asyncio.to_thread(arrow_rows, with_file))


JSON_ARROW_SQLITE = (3, 38, 0)
"""The first SQLite with the ``->>`` operator (the JSON load's extraction)."""


def _json_string(values: pa.Array) -> pa.Array:
    """Each value as a JSON string literal (backslash and quote escaped; nulls stay null)."""
    escaped = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    return pc.binary_join_element_wise('"', escaped, '"', "")


def json_document(rows: pa.Table) -> str | None:
    """The rows as one JSON array of arrays ``[program, head end, nic, score, eligible, reason]``, built in
    Arrow; None when a text holds a control character, which this encoder does not escape (such a slice is
    bound row by row instead)."""
    texts = [rows.column(name) for name in ("program_code", "head_end_system", "nic_id", "ineligibility_reason")]
    if any(pc.any(pc.match_substring_regex(column, "[\\x00-\\x1f]")).as_py() for column in texts):
        return None
    reason = rows.column("ineligibility_reason")
    # Each row's text ends with a comma, so that the array's character data is the rows joined by commas.
    row_texts = pc.binary_join_element_wise(
        "[",
        _json_string(rows.column("program_code")),
        ",",
        _json_string(rows.column("head_end_system")),
        ",",
        _json_string(rows.column("nic_id")),
        ",",
        pc.cast(rows.column("score"), pa.string()),
        ",",
        pc.cast(rows.column("eligible"), pa.string()),
        ",",
        pc.if_else(pc.is_null(reason), pa.scalar("null"), _json_string(reason.fill_null(""))),
        "],",
        "",
    ).combine_chunks()
    if row_texts.null_count:
        return None  # a value missing that the file's checks require: leave it to the row-by-row insert
    offsets_buffer, data = row_texts.buffers()[1:3]
    assert offsets_buffer is not None
    assert data is not None
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)
    first, end = int(offsets[row_texts.offset]), int(offsets[row_texts.offset + len(row_texts)])
    return f"[{data.slice(first, end - first - 1).to_pybytes().decode()}]"


async def load_scores(connection: AsyncConnection, file_id: str, rows: pa.Table) -> tuple[int, list[DeviceIdentity]]:
    """Load the rows as ``file_id``'s scores; returns the unknown devices' row count and a sample."""
    await insert_scores(connection, file_id, rows)
    s = t.device_scores
    unknown = s.c.device_id.is_(None)
    count = await connection.scalar(select(func.count()).select_from(s).where(s.c.file_id == file_id, unknown))
    sample = await connection.execute(
        select(s.c.head_end_system, s.c.nic_id)
        .where(s.c.file_id == file_id, unknown)
        .distinct()
        .order_by(s.c.head_end_system, s.c.nic_id)
        .limit(UNKNOWN_DEVICES_LISTED)
    )
    return int(count or 0), [DeviceIdentity(head_end_system=h, nic_id=n) for h, n in sample.tuples()]
