"""F4 · device-score-transfer, Asset Hub's side: score every enrolled device, write the score file, store
the snapshot, hand the file to the file store and send its manifest to the DERMS (claim check).

One transfer (:func:`transfer_scores`) is one unit of work in four steps:

1. **read** (:mod:`derbridge.assethub.adapters.score_reads`), set-based, in one read transaction: the ACTIVE
   programs with their rules; every device of every ACTIVE enrollment of those programs, with the latest
   communication Asset Hub knows of it; and every participation record of those programs' events (newest
   first). Asset Hub learns a device's communication time only from the DERMS's answers to status checks (F2):
   the latest ``last_communication_at`` of any answered check of the device (a late answer too: it is still a
   fact about the device). A device no check ever answered for is "never seen communicating": connectivity 0,
   DEVICE_OFFLINE.
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
from pydantic import BaseModel, Field
from sqlalchemy import (
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.score_parts import encode_parts, insert_parts
from derbridge.assethub.adapters.score_reads import ScoredRows, read_scoring_data
from derbridge.assethub.domain.scoring import (
    REASONS,
    SCORING_MODEL_VERSION,
    ScoringResult,
    score_devices,
)
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
from derbridge.filestore.factory import build_file_store
from derbridge.filestore.manifest import describe_file
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
