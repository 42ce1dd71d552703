"""F4 · device-score-transfer, Asset Hub's side: score every enrolled device, write the score file, store
the snapshot, hand the file to the file store and send its manifest to the DERMS (claim check).

One transfer (:func:`transfer_scores`) is one unit of work in four steps:

1. **read**, set-based, in one read transaction: the ACTIVE programs with their rules; every device of every
   ACTIVE enrollment of those programs, with the latest communication Asset Hub knows of it; and every
   participation record of those programs' events (newest first). Asset Hub learns a device's communication
   time only from the DERMS's answers to status checks (F2): the latest ``last_communication_at`` of any
   answered check of the device (a late answer too: it is still a fact about the device). A device no check
   ever answered for is "never seen communicating": connectivity 0, DEVICE_OFFLINE.
2. **score** with the pure model (:mod:`derbridge.assethub.domain.scoring`), one vectorized pass.
3. **write** the score file (CSV, UTF-8, header, gzip, columns ``SCORE_FILE_COLUMNS``), describe it (size,
   sha256, rows) and **put** it in the file store. The file is byte-for-byte the same for the same inputs:
   rows sorted by ``(program_code, head_end_system, nic_id)``, a gzip header without time or name.
4. **record**, in one transaction, only once the file is safely stored: the snapshot (``score_snapshots``),
   every device's score with its components (``score_parts``: columnar parts of 50,000 rows, a few dozen
   inserts for a million devices — :mod:`derbridge.assethub.adapters.score_parts`) and the one
   ``device-score-transfer.v1`` message in the outbox. A failure
   before the commit leaves at most an unreferenced file in the store, never a message without its file.

One transfer runs at a time across every process: each takes the ``job_leases`` row
:data:`TRANSFER_LEASE` (an expiring lease, wall-clock), and checks it still holds it in the recording
transaction. A second caller meanwhile gets :class:`TransferBusy` (HTTP 409).

Triggers: the scheduled job (:mod:`derbridge.assethub.handlers.score_transfer`: ``scores.schedule``, a
5-field cron expression in ``scores.time_zone``, :func:`transfer_due`), ``POST /assethub/v1/score-transfers``,
and the CLI through :func:`transfer_now`. The DERMS's acknowledgement (``device-score-transfer-ack.v1``) is
handled by :func:`derbridge.assethub.handlers.score_transfer.record_acknowledgement`.
"""

from __future__ import annotations

import asyncio
import gzip
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import structlog
from croniter import croniter  # type: ignore[import-untyped]
from numpy.typing import NDArray
from pydantic import BaseModel, Field
from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.participation_summaries import STARTS_SEPARATOR, cancelled, epoch_us, outcome_class
from derbridge.assethub.adapters.score_parts import encode_parts, insert_parts
from derbridge.assethub.domain.enrollment import EnrollmentState
from derbridge.assethub.domain.program import ProgramRules, ProgramStatus
from derbridge.assethub.domain.scoring import (
    REASONS,
    SCORING_MODEL_VERSION,
    EventClass,
    ScoringInput,
    ScoringResult,
    classify_events,
    score_devices,
)
from derbridge.bridge.filestore.factory import build_file_store
from derbridge.bridge.filestore.manifest import describe_file
from derbridge.contracts.device_score_transfer import (
    SCORE_FILE_COLUMNS,
    TYPE,
    Compression,
    FileLocation,
    ScoreFileManifest,
    ScoreTransfer,
)
from derbridge.contracts.envelope import utc_z
from derbridge.contracts.registry import new_envelope
from derbridge.infra.columnar import read_arrow
from derbridge.infra.db import utcnow
from derbridge.infra.ids import new_id
from derbridge.infra.outbox import write_outbox
from derbridge.infra.upsert import insert_for
from derbridge.settings import Settings

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

log = structlog.get_logger("derbridge.assethub.scores")


TRANSFER_LEASE = "score-transfer.lease"
"""The ``job_leases`` row every transfer takes. It is not the scheduled job's row
(:data:`derbridge.assethub.handlers.score_transfer.JOB_NAME`): the job runner leases that one while the job
runs, and an on-demand transfer must exclude the scheduled one as well."""

LEASE_DURATION = timedelta(minutes=30)
"""How long a transfer's lease lasts: far longer than a million-device transfer takes, and the time after
which a transfer whose process died stops blocking the next one."""

FILE_KEY_PREFIX = "scores"
"""Score files are stored under ``scores/YYYY/MM/DD/<file_id>.csv.gz`` (UTC date of ``generated_at``)."""

GZIP_LEVEL = 6
"""zlib's default level: about a tenth of the CSV's size at ~50 MB/s on one core."""


SCHEDULE_FIELDS = 5


class TransferBusy(Exception):
    """Another score transfer holds the lease (in this or another process)."""


class TransferLeaseLost(Exception):
    """The transfer's lease expired and was taken by another transfer before this one could record."""


class TransferReport(BaseModel):
    """What one transfer did."""

    status: Literal["transferred", "nothing-to-score"]
    """``nothing-to-score`` when no program is ACTIVE: no file, no message."""
    file_id: str | None = None
    generated_at: datetime
    programs: list[str] = Field(default_factory=list, description="The ACTIVE programs scored.")
    row_count: int = 0
    eligible_count: int = 0
    byte_size: int | None = None
    sha256: str | None = None
    location: FileLocation | None = None
    message_id: str | None = Field(None, description="The device-score-transfer.v1 message sent.")
    seconds: dict[str, float] = Field(default_factory=dict, description="Time spent per step.")


# --- reading --------------------------------------------------------------------------------------
#
# A million devices and their histories are millions of rows: they are read as columns, not as row
# objects. Every value read is an integer or a string (times as integer microseconds since the epoch, outcome
# classes and program indexes computed by the query), so no datetime object is ever built, and the driver's
# rows become Arrow columns partition by partition. The reads run inside the caller's (read) transaction.

NAT = np.iinfo(np.int64).min
"""The int64 value numpy reads as ``NaT``: "never", for a device with no known communication."""


@dataclass(frozen=True)
class ScoredRows:
    """The rows to score (one per device and program) and what the file needs besides the scores.

    ``classes`` and ``starts_us`` are each row's participation summary (None when the history is read from
    the records instead)."""

    program_codes: list[str]
    rules: list[ProgramRules]
    program_index: NDArray[np.intp]
    device_id: NDArray[np.int64]
    head_end_system: pa.Array
    nic_id: pa.Array
    last_communication_at: NDArray[np.datetime64]
    classes: pa.Array | None = None
    starts_us: pa.Array | None = None


HistorySource = Literal["summaries", "records"]
"""Where a transfer reads the devices' histories from: ``participation_summaries`` (one row per device and
program, what transfers use) or ``participation_records`` (every record; the reference the summaries are
tested against)."""


def _program_index(codes: list[str], column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The position of ``column``'s program code in ``codes``, as the query's integer."""
    return case({code: index for index, code in enumerate(codes)}, value=column, else_=-1)


def _int64(table: pa.Table, name: str, null: int = 0) -> NDArray[np.int64]:
    values: NDArray[np.int64] = table.column(name).fill_null(null).to_numpy().astype(np.int64, copy=False)
    return values


def _row_key(program_index: NDArray[np.intp], device_id: NDArray[np.int64]) -> NDArray[np.int64]:
    """One sortable int64 per (program, device): device ids stay far below 2**44."""
    return (program_index.astype(np.int64) << 44) | device_id


async def _read_programs(connection: AsyncConnection) -> tuple[list[str], list[ProgramRules]]:
    result = await connection.execute(
        select(t.programs.c.program_code, t.programs.c.rules).where(t.programs.c.status == ProgramStatus.ACTIVE.value)
    )
    programs = sorted(((row.program_code, ProgramRules.model_validate(row.rules)) for row in result), key=_first)
    return [code for code, _ in programs], [rules for _, rules in programs]


def _first(item: tuple[str, ProgramRules]) -> str:
    return item[0]


async def _read_rows(
    connection: AsyncConnection, codes: list[str], rules: list[ProgramRules], *, with_summaries: bool
) -> ScoredRows:
    """Every device of every ACTIVE enrollment of the ACTIVE programs ``codes``, with its last communication
    and (``with_summaries``) its participation summary in the program."""
    e, ed, d, summaries = t.enrollments, t.enrollment_devices, t.devices, t.participation_summaries
    members = await read_arrow(
        connection,
        select(_program_index(codes, e.c.program_code), d.c.device_id, d.c.head_end_system, d.c.nic_id)
        .select_from(e)
        .join(ed, and_(ed.c.enrollment_id == e.c.enrollment_id, ed.c.removed_at.is_(None)))
        .join(d, d.c.device_id == ed.c.device_id)
        .where(e.c.state == EnrollmentState.ACTIVE.value, e.c.program_code.in_(codes)),
        {"program": pa.int64(), "device_id": pa.int64(), "head_end_system": pa.string(), "nic_id": pa.string()},
    )
    program_index = _int64(members, "program").astype(np.intp)
    device_id = _int64(members, "device_id")
    # One row per (program, device), in key order: the order the history is matched in. (An enrollment
    # rule keeps a device out of two ACTIVE enrollments of one program; unique() makes sure.)
    row_keys, first_of_key = np.unique(_row_key(program_index, device_id), return_index=True)
    program_index, device_id = program_index[first_of_key], device_id[first_of_key]
    seen_device, seen_us = await _read_last_communication(connection)
    at = np.minimum(np.searchsorted(seen_device, device_id), max(len(seen_device) - 1, 0))
    known = (seen_device[at] == device_id) if len(seen_device) else np.zeros(len(device_id), dtype=np.bool_)
    last_us = np.where(known, seen_us[at] if len(seen_device) else NAT, NAT)
    take = pa.array(first_of_key)

    def taken(name: str) -> pa.Array:
        return members.column(name).take(take).combine_chunks()

    classes = starts_us = None
    if with_summaries:
        # Read on their own and matched here by key: a sequential scan of the summaries and a numpy search
        # cost a fraction of a million index lookups in a join (SQLite).
        kept = await read_arrow(
            connection,
            select(
                _program_index(codes, summaries.c.program_code),
                summaries.c.device_id,
                summaries.c.classes,
                summaries.c.starts_us,
            ).where(summaries.c.program_code.in_(codes)),
            {"program": pa.int64(), "device_id": pa.int64(), "classes": pa.string(), "starts_us": pa.string()},
        )
        kept_keys = _row_key(_int64(kept, "program").astype(np.intp), _int64(kept, "device_id"))
        order = np.argsort(kept_keys)
        kept_keys = kept_keys[order]
        at = np.minimum(np.searchsorted(kept_keys, row_keys), max(len(kept_keys) - 1, 0))
        found = (kept_keys[at] == row_keys) if len(kept_keys) else np.zeros(len(row_keys), dtype=np.bool_)
        # A row without a summary (no history in the program) takes a null: no entries.
        where = pa.array(order[at] if len(kept_keys) else np.zeros(len(row_keys), np.int64), mask=~found)
        classes = kept.column("classes").take(where).combine_chunks()
        starts_us = kept.column("starts_us").take(where).combine_chunks()

    return ScoredRows(
        program_codes=codes,
        rules=rules,
        program_index=program_index,
        device_id=device_id,
        head_end_system=taken("head_end_system"),
        nic_id=taken("nic_id"),
        last_communication_at=last_us.view("datetime64[us]"),
        classes=classes,
        starts_us=starts_us,
    )


async def _read_last_communication(connection: AsyncConnection) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each device's latest known communication (microseconds since the epoch), by device id ascending.

    Any answer carries the device's last communication as the DERMS knew it then; the latest is what Asset Hub
    knows now. PostgreSQL groups and converts (its ``COPY`` output is cheap); on SQLite the raw values are
    read and reduced with numpy (``strftime`` per group costs more there than the whole reduction here).
    """
    checks = t.device_status_checks
    if connection.dialect.name == "postgresql":
        seen = await read_arrow(
            connection,
            select(checks.c.device_id, epoch_us("postgresql", func.max(checks.c.last_communication_at)))
            .where(checks.c.last_communication_at.is_not(None))
            .group_by(checks.c.device_id),
            {"device_id": pa.int64(), "last_us": pa.int64()},
        )
        devices, moments = _int64(seen, "device_id"), _int64(seen, "last_us")
    else:
        seen = await read_arrow(
            connection,
            select(checks.c.device_id, checks.c.last_communication_at).where(
                checks.c.last_communication_at.is_not(None)
            ),
            {"device_id": pa.int64(), "at": pa.string()},
        )
        devices = _int64(seen, "device_id")
        # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff', naive UTC: Arrow parses it as such, to the microsecond.
        moments = seen.column("at").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy().astype(np.int64)
    order = np.lexsort((moments, devices))  # by device, then time: the last of each device is its latest
    devices, moments = devices[order], moments[order]
    last = np.ones(len(devices), dtype=np.bool_)
    np.not_equal(devices[1:], devices[:-1], out=last[:-1])
    return devices[last], moments[last]


def _history_from_summaries(rows: ScoredRows) -> ScoringInput:
    """The model's columns from each row's participation summary (no summary: no history).

    The summary holds exactly the entries the record-based read gives the model, minus the cancelled ones
    (which count nowhere), in the same order: so the model computes the same values, bit for bit.
    Raises ``ValueError`` when a summary is malformed (the model's own checks catch a wrong order).
    """
    if rows.classes is None or rows.starts_us is None:
        raise ValueError("the rows were read without their participation summaries")
    n = len(rows.device_id)
    classes = rows.classes.fill_null("").cast(pa.binary())
    lengths = pc.binary_length(classes).to_numpy(zero_copy_only=False).astype(np.int64)
    # The classes of every row, one byte each, concatenated: the array's own data buffer, no copy per row.
    _, offset_buffer, data = classes.buffers()
    codes = np.empty(0, np.int16)
    if n and data is not None:
        offsets = np.frombuffer(offset_buffer, dtype=np.int32)[classes.offset : classes.offset + n + 1]
        codes = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]].astype(np.int16) - ord("0")
    if len(codes) and (codes.min() < 0 or codes.max() >= len(EventClass)):
        raise ValueError("a participation summary holds a class that is not an EventClass code")
    with_history = pc.greater(pa.array(lengths), 0)
    starts = pc.list_flatten(pc.split_pattern(rows.starts_us.filter(with_history), STARTS_SEPARATOR))
    start_us = pc.cast(starts, pa.int64()).to_numpy(zero_copy_only=False) if len(starts) else np.empty(0, np.int64)
    if len(start_us) != len(codes):
        raise ValueError(f"participation summaries hold {len(codes)} classes but {len(start_us)} start times")
    return ScoringInput(
        program_index=rows.program_index,
        # Only ACTIVE enrollments of ACTIVE programs are read: both conditions hold for every row here.
        enrollment_active=np.ones(n, dtype=np.bool_),
        program_active=np.ones(n, dtype=np.bool_),
        last_communication_at=rows.last_communication_at,
        history_row=np.repeat(np.arange(n, dtype=np.intp), lengths),
        history_class=codes.astype(np.int8),
        history_event_at=start_us.astype(np.int64).view("datetime64[us]"),
    )


async def _history_from_records(connection: AsyncConnection, rows: ScoredRows) -> ScoringInput:
    """Every participation of the scored devices in their programs' events, as the model's columns."""
    pr, ev = t.participation_records, t.program_events
    table = await read_arrow(
        connection,
        select(
            _program_index(rows.program_codes, ev.c.program_code),
            pr.c.device_id,
            epoch_us(connection.dialect.name, ev.c.start_at),
            outcome_class(),
            case((pr.c.preemptive_opt_out.is_(True), 1), else_=0),
            case((cancelled(), 1), else_=0),
        )
        .join(ev, ev.c.event_id == pr.c.event_id)
        .where(ev.c.program_code.in_(rows.program_codes))
        # Newest first per device; the event id (time-ordered) breaks ties between events starting together.
        .order_by(pr.c.device_id, ev.c.start_at.desc(), ev.c.event_id.desc()),
        {
            "program": pa.int64(),
            "device_id": pa.int64(),
            "start_us": pa.int64(),
            "outcome": pa.int8(),
            "opt_out": pa.int8(),
            "cancelled": pa.int8(),
        },
    )
    n = len(rows.device_id)
    key = _row_key(_int64(table, "program").astype(np.intp), _int64(table, "device_id"))
    row_keys = _row_key(rows.program_index, rows.device_id)
    found = np.searchsorted(row_keys, key)
    at = np.minimum(found, max(n - 1, 0))
    member = (row_keys[at] == key) if n else np.zeros(len(key), dtype=np.bool_)
    # Group by row; a stable sort keeps each row's entries newest first, as the query returned them.
    order = np.flatnonzero(member)[np.argsort(found[member], kind="stable")]

    def column(name: str) -> NDArray[Any]:
        values: NDArray[Any] = table.column(name).to_numpy()[order]
        return values

    return ScoringInput(
        program_index=rows.program_index,
        enrollment_active=np.ones(n, dtype=np.bool_),
        program_active=np.ones(n, dtype=np.bool_),
        last_communication_at=rows.last_communication_at,
        history_row=found[order].astype(np.intp),
        history_class=classify_events(
            column("outcome").astype(np.int8), column("opt_out").astype(np.bool_), column("cancelled").astype(np.bool_)
        ),
        history_event_at=column("start_us").astype(np.int64).view("datetime64[us]"),
    )


async def read_scoring_data(
    connection: AsyncConnection, *, history: HistorySource = "summaries"
) -> tuple[ScoredRows, ScoringInput] | None:
    """What a transfer scores, read in the caller's (read) transaction: the rows and the model's columns.

    None when no program is ACTIVE. ``history`` says where the devices' histories come from; both sources
    give the model the same columns (``tests/flows/test_participation_summaries.py`` holds them to it).
    """
    codes, rules = await _read_programs(connection)
    if not codes:
        return None
    if history == "summaries":
        rows = await _read_rows(connection, codes, rules, with_summaries=True)
        return rows, await asyncio.to_thread(_history_from_summaries, rows)
    rows = await _read_rows(connection, codes, rules, with_summaries=False)
    return rows, await _history_from_records(connection, rows)


# --- the score file -------------------------------------------------------------------------------


def _reasons(result: ScoringResult) -> pa.Array:
    codes = result.reason.astype(np.int32) - 1
    indices = pa.array(codes, mask=result.reason == 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array([r.value for r in REASONS])).cast(pa.string())


def _file_table(rows: ScoredRows, result: ScoringResult, computed_at: datetime) -> pa.Table:
    """The score file's rows, in the file's order: ``(program_code, head_end_system, nic_id)``."""
    n = len(rows.device_id)
    table = pa.table(
        {
            "program_code": pa.array(rows.program_codes, type=pa.string()).take(pa.array(rows.program_index)),
            "head_end_system": rows.head_end_system,
            "nic_id": rows.nic_id,
            "device_id": pa.array(rows.device_id, type=pa.int64()),
            # decimal(4, 1) is written as "77.5" and "100.0": exactly one decimal, as the file requires.
            "score": pa.array(result.score, type=pa.float64()).cast(pa.decimal128(4, 1)),
            "eligible": pa.array(result.eligible, type=pa.bool_()),
            "ineligibility_reason": _reasons(result),
            "computed_at": pa.array([utc_z(computed_at)], type=pa.string()).take(pa.array(np.zeros(n, np.int64))),
        }
    )
    assert tuple(table.column_names) == SCORE_FILE_COLUMNS
    order = pc.sort_indices(
        table,
        sort_keys=[("program_code", "ascending"), ("head_end_system", "ascending"), ("nic_id", "ascending")],
    )
    return table.take(order)


def _write_file(table: pa.Table, path: Path) -> None:
    # mtime=0 and no file name in the gzip header: the same rows give the same bytes, whenever written.
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as out,
    ):
        pa_csv.write_csv(table, out)


def file_key(file_id: str, generated_at: datetime) -> str:
    """Where a score file is stored in the file store."""
    return f"{FILE_KEY_PREFIX}/{generated_at:%Y/%m/%d}/{file_id}.csv.gz"


# --- recording ------------------------------------------------------------------------------------


def _score_parts(file_id: str, rows: ScoredRows, result: ScoringResult) -> list[dict[str, Any]]:
    """The snapshot's scores with their components, as ``score_parts`` rows (adapters/score_parts.py)."""
    scores = pa.table(
        {
            "device_id": pa.array(rows.device_id, type=pa.int64()),
            "score": pa.array(result.score, type=pa.float64()),
            "eligible": pa.array(result.eligible, type=pa.bool_()),
            "ineligibility_reason": _reasons(result),
            "reliability": pa.array(result.reliability, type=pa.float64()),
            "connectivity": pa.array(result.connectivity, type=pa.float64()),
            "fatigue": pa.array(result.fatigue, type=pa.float64()),
        }
    )
    return encode_parts(file_id, rows.program_codes, rows.program_index, scores)


# --- the lease ------------------------------------------------------------------------------------


async def _take_lease(engine: AsyncEngine, owner: str) -> bool:
    leases = t.job_leases
    wall = utcnow()
    async with engine.begin() as connection:
        await connection.execute(
            insert_for(connection.dialect.name, leases)
            .values(name=TRANSFER_LEASE)
            .on_conflict_do_nothing(index_elements=[leases.c.name])
        )
        taken = await connection.execute(
            update(leases)
            .where(
                leases.c.name == TRANSFER_LEASE,
                or_(leases.c.lease_until.is_(None), leases.c.lease_until < wall),
            )
            .values(owner=owner, lease_until=wall + LEASE_DURATION)
            .returning(leases.c.name)
        )
        return taken.first() is not None


async def _release_lease(engine: AsyncEngine, owner: str, *, finished: bool) -> None:
    leases = t.job_leases
    values: dict[str, Any] = {"owner": None, "lease_until": None}
    if finished:
        values["last_run_at"] = utcnow()
    async with engine.begin() as connection:
        await connection.execute(
            update(leases).where(leases.c.name == TRANSFER_LEASE, leases.c.owner == owner).values(**values)
        )


async def _hold_lease(connection: AsyncConnection, owner: str) -> None:
    """Check inside the recording transaction that the lease is still ours (and lock its row until commit)."""
    leases = t.job_leases
    held = await connection.execute(
        update(leases)
        .where(leases.c.name == TRANSFER_LEASE, leases.c.owner == owner)
        .values(lease_until=utcnow() + LEASE_DURATION)
        .returning(leases.c.name)
    )
    if held.first() is None:
        raise TransferLeaseLost(
            f"the score transfer lease expired after {LEASE_DURATION} and another transfer took it; "
            "nothing was recorded or sent"
        )


# --- the transfer ---------------------------------------------------------------------------------


async def transfer_scores(engine: AsyncEngine, settings: Settings, *, now: datetime) -> TransferReport:
    """Compute, write, store and send one score snapshot (the module docstring says how).

    ``engine`` is Asset Hub's; ``settings`` names the file store and the DERMS instance; ``now`` is the
    business time the scores are computed at (the file's ``generated_at`` and ``computed_at``).
    Raises :class:`TransferBusy` when another transfer is running.
    """
    owner = new_id()
    if not await _take_lease(engine, owner):
        raise TransferBusy("a score transfer is already running; try again when it has finished")
    finished = False
    try:
        report = await _transfer(engine, settings, now, owner)
        finished = True
        return report
    finally:
        await _release_lease(engine, owner, finished=finished)


async def _transfer(engine: AsyncEngine, settings: Settings, now: datetime, owner: str) -> TransferReport:
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal started
        stopped = time.perf_counter()
        seconds[step] = round(stopped - started, 3)
        started = stopped

    async with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # One consistent view across the reads: the history matches the enrollments it is read for.
            await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            data = await read_scoring_data(connection)
    if data is None:
        return TransferReport(status="nothing-to-score", generated_at=now, seconds=seconds)
    rows, inputs = data
    codes, rules = rows.program_codes, rows.rules
    lap("read")

    result = await asyncio.to_thread(score_devices, inputs, rules, now)
    lap("score")

    file_id = new_id()
    with tempfile.TemporaryDirectory(prefix="derbridge-scores-") as directory:
        path = Path(directory) / f"{file_id}.csv.gz"
        table = await asyncio.to_thread(_file_table, rows, result, now)
        await asyncio.to_thread(_write_file, table, path)
        described = await asyncio.to_thread(
            describe_file, path, file_id=file_id, generated_at=now, compression=Compression.GZIP
        )
        lap("write")
        async with build_file_store(settings) as store:
            location = await store.put(path, file_key(file_id, now))
        lap("store")

    manifest = ScoreFileManifest(**described.model_dump(), scoring_model_version=SCORING_MODEL_VERSION, programs=codes)
    envelope = new_envelope(
        TYPE,
        ScoreTransfer(manifest=manifest, location=location),
        business_key=f"score-file:{file_id}",
        correlation_id=file_id,
        occurred_at=now,
        target_instance=settings.derms_instance_id,
    )
    eligible_count = int(result.eligible.sum())
    parts = await asyncio.to_thread(_score_parts, file_id, rows, result)
    async with engine.begin() as connection:
        await _hold_lease(connection, owner)
        await connection.execute(
            insert(t.score_snapshots).values(
                file_id=file_id,
                generated_at=now,
                scoring_model_version=SCORING_MODEL_VERSION,
                programs=codes,
                row_count=manifest.row_count,
                eligible_count=eligible_count,
                sha256=manifest.sha256,
                byte_size=manifest.byte_size,
            )
        )
        await insert_parts(connection, parts)
        await write_outbox(connection, t.outbox, [envelope])
    lap("record")
    log.info(
        "score transfer sent",
        file_id=file_id,
        message_id=envelope.message_id,
        rows=manifest.row_count,
        eligible=eligible_count,
        seconds=seconds,
    )
    return TransferReport(
        status="transferred",
        file_id=file_id,
        generated_at=now,
        programs=codes,
        row_count=manifest.row_count,
        eligible_count=eligible_count,
        byte_size=manifest.byte_size,
        sha256=manifest.sha256,
        location=location,
        message_id=envelope.message_id,
        seconds=seconds,
    )


async def transfer_now(runtime: Runtime, now: datetime) -> TransferReport:
    """A transfer on demand (``derbridge score transfer``): Asset Hub's engine and settings of ``runtime``,
    at ``now``. Raises :class:`TransferBusy` when one is running."""
    return await transfer_scores(runtime.async_engine("assethub"), runtime.settings, now=now)


# --- the schedule ---------------------------------------------------------------------------------


def latest_scheduled_time(expression: str, time_zone: str, now: datetime) -> datetime:
    """The latest time at or before ``now`` that the 5-field cron ``expression`` names in ``time_zone``.

    Raises ``ValueError`` for an expression that is not a valid 5-field cron expression or an unknown
    time zone. A time skipped by a daylight-saving change runs at the first valid time after it.
    """
    if len(expression.split()) != SCHEDULE_FIELDS or not croniter.is_valid(expression):
        raise ValueError(f"scores.schedule {expression!r} is not a 5-field cron expression, e.g. '0 2 * * *'")
    zone = ZoneInfo(time_zone)
    # croniter's get_prev is strictly before its start and works in whole seconds: start one second after
    # the current whole second, so that a schedule due exactly now counts as due.
    start = now.astimezone(zone).replace(microsecond=0) + timedelta(seconds=1)
    previous: datetime = croniter(expression, start).get_prev(datetime)
    return previous.astimezone(now.tzinfo)


async def transfer_due(engine: AsyncEngine, settings: Settings, now: datetime) -> bool:
    """Whether the schedule calls for a transfer: its latest time has passed and no snapshot was generated
    at or after it. A run missed while no process was up is caught up once, however many were missed; an
    on-demand transfer after the scheduled time counts as that time's transfer."""
    due = latest_scheduled_time(settings.scores.schedule, settings.scores.time_zone, now)
    async with engine.connect() as connection:
        latest = await connection.scalar(select(func.max(t.score_snapshots.c.generated_at)))
    return latest is None or latest < due
