"""F4 · device-score-transfer, the DERMS's side: load a score file as the new current score snapshot.

The handler of ``device-score-transfer.v1`` runs inside the inbox transaction (:mod:`derbridge.infra.inbound`),
so the snapshot, its rows, the switch of ``is_current``, the inbox row and the acknowledgement commit
together or not at all. In order:

1. **Already loaded** (a snapshot with this ``file_id`` exists): acknowledged APPLIED again, nothing loaded
   twice.
2. **Stale** (``generated_at`` older than the current snapshot's): acknowledged STALE, not loaded; the
   current snapshot stays.
3. **Fetch and verify** the file against its manifest (size, sha256, row count). A file that is missing,
   unreachable or does not match (corrupted or truncated in the store or on the way) is *not* loaded and the
   previous snapshot stays current: the handler answers ``503 score-file-not-ready`` with the reason, so
   the bridge retries the same message, from the same file, with backoff, and dead-letters it after its
   last attempt — visible all along in the bridge's tracking (``derbridge messages list --flow
   device-score-transfer``), replayable once the file is fixed.
4. **Read and check** the rows (pyarrow): the header must be ``SCORE_FILE_COLUMNS``, every program in the
   manifest, scores within 0 to 100, a reason exactly when not eligible, no device twice in a program. A file
   that matches its manifest but breaks these rules was written wrong by the sender: retrying cannot help,
   so it is acknowledged REJECTED with the first bad line, and nothing is loaded.
5. **Load** every row into ``device_scores`` set-based, resolving ``device_id`` by ``(head_end_system,
   nic_id)`` — PostgreSQL: staged with ``COPY``, then one ``INSERT … SELECT … LEFT JOIN devices``; SQLite:
   one ``INSERT … SELECT … FROM json_each(?)`` per 100,000 rows (encoded as JSON in Arrow), looking the
   device up in the same statement (``executemany`` when a text holds a control character). Rows for
   devices the DERMS does not know are kept with no ``device_id`` (they can never be reserved), counted in
   the snapshot's ``unknown_devices`` and listed in the acknowledgement; they are not an error.
6. **Switch**: the new snapshot becomes the only current one, in the same transaction.

The DERMS keeps loaded files' rows for every snapshot; the stored file itself stays in the file store.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import structlog
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.bridge.filestore.base import FileNotInStore, FileStoreError
from derbridge.bridge.filestore.factory import FileStoreOpener
from derbridge.bridge.filestore.manifest import ManifestMismatch, verify_file
from derbridge.contracts.common import Acknowledgement, AckStatus, DeviceIdentity
from derbridge.contracts.device_score_transfer import ACK_TYPE, SCORE_FILE_COLUMNS, Compression, ScoreTransfer
from derbridge.contracts.envelope import Envelope, utc_z
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as t
from derbridge.errors import Invalid, Unavailable
from derbridge.infra.bulk import arrow_rows, copy_arrow_table
from derbridge.infra.clock import Clock
from derbridge.infra.db import utcnow
from derbridge.infra.outbox import write_outbox

log = structlog.get_logger("derbridge.derms.scores")

UNKNOWN_DEVICES_LISTED = 1000
"""At most this many unknown devices are named in an acknowledgement; the count is always complete."""

MAX_ID_LENGTH = 64
MAX_REASON_LENGTH = 32
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

# --- reading and checking the file ------------------------------------------------------------------


class InvalidScoreFile(Exception):
    """The file is what its manifest describes, but its content breaks the score file's rules."""


def _not_ready(detail: str) -> Unavailable:
    return Unavailable(
        "score-file-not-ready",
        "The score file cannot be loaded yet",
        f"{detail}. Nothing was loaded and the previous score snapshot stays current; the bridge retries "
        "this message from the same file.",
    )


def _first_line(bad: pa.Array) -> int | None:
    """The file line (header = line 1) of the first true value of ``bad``, if any."""
    hits = pc.indices_nonzero(bad.fill_null(True))
    return None if len(hits) == 0 else int(hits[0].as_py()) + 2


def read_score_file(path: Path, compression: Compression, programs: list[str]) -> pa.Table:
    """The rows of a verified score file, checked; raises :class:`InvalidScoreFile` with the first problem.

    Line numbers count the header as line 1 (the score file's fields hold no line breaks).
    """
    try:
        with pa.input_stream(str(path), compression="gzip" if compression is Compression.GZIP else None) as stream:
            table = pa_csv.read_csv(
                stream,
                convert_options=pa_csv.ConvertOptions(column_types=_COLUMN_TYPES, strings_can_be_null=True),
            )
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidScoreFile(f"not a readable score file: {error}") from None
    if tuple(table.column_names) != SCORE_FILE_COLUMNS:
        raise InvalidScoreFile(
            f"the header is {','.join(table.column_names)}; a score file has {','.join(SCORE_FILE_COLUMNS)}"
        )

    def column(name: str) -> pa.Array:
        return table.column(name).combine_chunks()

    eligible = column("eligible")
    reason = column("ineligibility_reason")

    def missing_or_longer(values: pa.Array, limit: int) -> pa.Array:
        return pc.invert(pc.less_equal(pc.utf8_length(values), limit))  # null stays null: counted as bad

    score = column("score")
    # Each check is true (or null, read as true) on a bad row; Kleene logic keeps "false and null" false.
    checks: list[tuple[pa.Array, str]] = [
        (
            pc.invert(pc.is_in(column("program_code"), value_set=pa.array(programs, pa.string()))),
            "a program_code missing or not among the manifest's programs",
        ),
        (
            missing_or_longer(column("head_end_system"), MAX_ID_LENGTH),
            f"no head_end_system, or a longer one than {MAX_ID_LENGTH} characters",
        ),
        (
            missing_or_longer(column("nic_id"), MAX_ID_LENGTH),
            f"no nic_id, or a longer one than {MAX_ID_LENGTH} characters",
        ),
        (
            pc.invert(pc.and_kleene(pc.greater_equal(score, 0.0), pc.less_equal(score, 100.0))),
            "a score missing or outside 0 to 100",
        ),
        (pc.is_null(eligible), "eligible missing (true or false)"),
        (pc.and_kleene(eligible, pc.is_valid(reason)), "an ineligibility_reason on an eligible device"),
        (
            pc.and_kleene(pc.invert(eligible), missing_or_longer(reason, MAX_REASON_LENGTH)),
            f"an ineligible device without an ineligibility_reason (or one longer than {MAX_REASON_LENGTH} characters)",
        ),
    ]
    for bad, what in checks:
        line = _first_line(bad)
        if line is not None:
            raise InvalidScoreFile(f"line {line}: {what}")
    keys = table.select(["program_code", "head_end_system", "nic_id"])
    counts = keys.group_by(["program_code", "head_end_system", "nic_id"]).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    if repeated.num_rows:
        first = repeated.slice(0, 1).to_pylist()[0]
        raise InvalidScoreFile(
            f"device {first['head_end_system']}:{first['nic_id']} appears {first['count_all']} times "
            f"in program {first['program_code']}"
        )
    return table.select(["program_code", "head_end_system", "nic_id", "score", "eligible", "ineligibility_reason"])


# --- loading ----------------------------------------------------------------------------------------


def _stage_table(connection: AsyncConnection) -> str:
    # Qualified with the temporary schema, so that no statement below can ever reach a permanent table.
    return f"pg_temp.{STAGE}" if connection.dialect.name == "postgresql" else f"temp.{STAGE}"


async def _stage(connection: AsyncConnection, rows: pa.Table) -> str:
    """Put the rows in a temporary table of this connection with ``COPY`` (PostgreSQL); returns its name.

    The table is dropped again by :func:`_load` in the same transaction: the inbox may apply several
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


async def _insert_scores(connection: AsyncConnection, file_id: str, rows: pa.Table) -> None:
    """Insert the rows as ``file_id``'s scores, each with the DERMS's ``device_id`` of its (head end, nic).

    PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT … SELECT … LEFT JOIN devices``. SQLite:
    straight into ``device_scores``, the device id looked up by a subquery on the devices' unique (head end,
    nic) index in the same statement — no staging table written and read back; a slice of rows goes in as one
    JSON document read by ``json_each`` (:func:`_json_document`), or bound row by row with ``executemany``
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
        document = await asyncio.to_thread(_json_document, part) if with_json else None
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


def _json_document(rows: pa.Table) -> str | None:
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


async def _load(connection: AsyncConnection, file_id: str, rows: pa.Table) -> tuple[int, list[DeviceIdentity]]:
    """Load the rows as ``file_id``'s scores; returns the unknown devices' row count and a sample."""
    await _insert_scores(connection, file_id, rows)
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


# --- the handler ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    status: AckStatus
    detail: str
    unknown_count: int = 0
    unknown: tuple[DeviceIdentity, ...] = ()


async def _acknowledge(connection: AsyncConnection, envelope: Envelope, answer: _Answer, now: datetime) -> None:
    ack = new_envelope(
        ACK_TYPE,
        Acknowledgement(
            acknowledged_message_id=envelope.message_id,
            status=answer.status,
            detail=answer.detail[:2000],
            unknown_devices=list(answer.unknown),
        ),
        business_key=envelope.business_key,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.message_id,
        occurred_at=now,
        source_instance=envelope.target.instance,
        target_instance=envelope.source.instance,
    )
    await write_outbox(connection, t.outbox, [ack])


async def _lock_snapshots(connection: AsyncConnection) -> None:
    # Two files loaded at once must not both become current, nor both pass the staleness check against the
    # same old snapshot. SQLite serialises writers already; PostgreSQL takes a transaction-scoped lock.
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('derms.score-snapshots'))"))


async def _decide(connection: AsyncConnection, payload: ScoreTransfer) -> _Answer | None:
    """The answer for a file already loaded or stale; None when the file is to be loaded."""
    manifest = payload.manifest
    snapshots = t.score_snapshots
    loaded = (await connection.execute(select(snapshots).where(snapshots.c.file_id == manifest.file_id))).first()
    if loaded is not None:
        return _Answer(
            AckStatus.APPLIED,
            f"score file {manifest.file_id} was already loaded at {utc_z(loaded.loaded_at)} "
            f"({loaded.row_count} rows, {loaded.unknown_devices} for unknown devices); nothing reloaded",
            loaded.unknown_devices,
        )
    current = (await connection.execute(select(snapshots).where(snapshots.c.is_current.is_(True)))).first()
    if current is not None and manifest.generated_at < current.generated_at:
        return _Answer(
            AckStatus.STALE,
            f"score file {manifest.file_id} was generated at {utc_z(manifest.generated_at)}, before the current "
            f"snapshot {current.file_id} ({utc_z(current.generated_at)}); not loaded",
        )
    return None


async def _fetch_and_read(payload: ScoreTransfer, directory: Path, files: FileStoreOpener) -> pa.Table:
    """The checked rows of the file, or a 503 problem when it cannot be fetched or does not match."""
    manifest = payload.manifest
    path = directory / "scores.csv"
    try:
        async with files() as store:
            await store.fetch(payload.location, path)
    except ValueError as error:  # a location this DERMS's store cannot hold: fix the configuration, replay
        raise Invalid(
            "invalid-location",
            "The score file's location is not in this DERMS's file store",
            f"{error}; configure the same file store on both sides, then replay the message.",
        ) from None
    except FileNotInStore as error:
        raise _not_ready(f"the score file is not in the file store: {error}") from None
    except FileStoreError as error:
        raise _not_ready(f"the file store failed: {error}") from None
    try:
        await asyncio.to_thread(verify_file, path, manifest)
    except ManifestMismatch as mismatch:
        raise _not_ready(f"score file {manifest.file_id} does not match its manifest: {mismatch.reason}") from None
    return await asyncio.to_thread(read_score_file, path, manifest.compression, list(manifest.programs))


async def load_score_snapshot(
    connection: AsyncConnection, envelope: Envelope, payload: ScoreTransfer, *, clock: Clock, files: FileStoreOpener
) -> dict[str, Any]:
    """Load the score file the message points to as the current snapshot (the module docstring says how)."""
    manifest = payload.manifest
    now = clock.now()
    await _lock_snapshots(connection)
    answer = await _decide(connection, payload)
    if answer is None:
        # A 503 problem raised here (file missing, unreachable, not matching) rolls the inbox claim back too:
        # the message is not applied, and its retry starts again from the file.
        with tempfile.TemporaryDirectory(prefix="derbridge-scores-") as directory:
            try:
                rows = await _fetch_and_read(payload, Path(directory), files)
            except InvalidScoreFile as invalid:
                answer = _Answer(AckStatus.REJECTED, f"score file {manifest.file_id} rejected, not loaded: {invalid}")
            else:
                answer = await _store(connection, payload, rows)
    await _acknowledge(connection, envelope, answer, now)
    log.info(
        "score file handled",
        file_id=manifest.file_id,
        message_id=envelope.message_id,
        status=answer.status.value,
        unknown_devices=answer.unknown_count,
    )
    return {
        "file_id": manifest.file_id,
        "status": answer.status.value,
        "detail": answer.detail,
        "unknown_devices": answer.unknown_count,
    }


async def _store(connection: AsyncConnection, payload: ScoreTransfer, rows: pa.Table) -> _Answer:
    """Insert the snapshot and its rows, then make it the only current one."""
    manifest = payload.manifest
    snapshots = t.score_snapshots
    await connection.execute(
        insert(snapshots).values(
            file_id=manifest.file_id,
            generated_at=manifest.generated_at,
            scoring_model_version=manifest.scoring_model_version,
            row_count=rows.num_rows,
            unknown_devices=0,
            loaded_at=utcnow(),
            is_current=False,
        )
    )
    unknown_count, unknown = await _load(connection, manifest.file_id, rows)
    await connection.execute(
        update(snapshots).where(snapshots.c.file_id == manifest.file_id).values(unknown_devices=unknown_count)
    )
    await connection.execute(
        update(snapshots)
        .where((snapshots.c.is_current.is_(True)) | (snapshots.c.file_id == manifest.file_id))
        .values(is_current=snapshots.c.file_id == manifest.file_id)
    )
    detail = f"loaded {rows.num_rows} rows of score file {manifest.file_id} as the current snapshot"
    if unknown_count:
        listed = f" (the first {len(unknown)} listed)" if unknown_count > len(unknown) else ""
        detail += f"; {unknown_count} rows for devices the DERMS does not know{listed}"
    return _Answer(AckStatus.APPLIED, detail, unknown_count, tuple(unknown))
