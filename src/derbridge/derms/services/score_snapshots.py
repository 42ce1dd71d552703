"""F4 · device-score-transfer, the DERMS's side: load a score file as the new current score snapshot.

The handler of ``device-score-transfer.v1``
(:func:`derbridge.derms.handlers.score_snapshots.load_score_snapshot`) runs inside the inbox transaction
(:mod:`derbridge.infra.inbound`) and takes the steps below, so the snapshot, its rows, the switch of
``is_current``, the inbox row and the acknowledgement commit together or not at all. In order:

1. **Already loaded** (a snapshot with this ``file_id`` exists): acknowledged APPLIED again, nothing loaded
   twice.
2. **Stale** (``generated_at`` older than the current snapshot's,
   :func:`~derbridge.derms.domain.score_file.snapshot_is_stale`): acknowledged STALE, not loaded; the
   current snapshot stays.
3. **Fetch and verify** the file against its manifest (size, sha256, row count). A file that is missing,
   unreachable or does not match (corrupted or truncated in the store or on the way) is *not* loaded and the
   previous snapshot stays current: the handler answers ``503 score-file-not-ready`` with the reason, so
   the bridge retries the same message, from the same file, with backoff, and dead-letters it after its
   last attempt — visible all along in the bridge's tracking (``derbridge messages list --flow
   device-score-transfer``), replayable once the file is fixed.
4. **Read and check** the rows (pyarrow; the rules are
   :func:`~derbridge.derms.domain.score_file.check_score_rows`): the header must be ``SCORE_FILE_COLUMNS``,
   every program in the manifest, scores within 0 to 100, a reason exactly when not eligible, no device
   twice in a program. A file that matches its manifest but breaks these rules was written wrong by the
   sender: retrying cannot help, so it is acknowledged REJECTED with the first bad line, and nothing is
   loaded.
5. **Load** every row into ``device_scores`` set-based (:mod:`derbridge.derms.adapters.score_snapshots`),
   resolving ``device_id`` by ``(head_end_system, nic_id)`` — PostgreSQL: staged with ``COPY``, then one
   ``INSERT … SELECT … LEFT JOIN devices``; SQLite: one ``INSERT … SELECT … FROM json_each(?)`` per 100,000
   rows (encoded as JSON in Arrow), looking the device up in the same statement (``executemany`` when a text
   holds a control character). Rows for devices the DERMS does not know are kept with no ``device_id`` (they
   can never be reserved), counted in the snapshot's ``unknown_devices`` and listed in the acknowledgement;
   they are not an error.
6. **Switch**: the new snapshot becomes the only current one, in the same transaction.

The DERMS keeps loaded files' rows for every snapshot; the stored file itself stays in the file store.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts.common import Acknowledgement, AckStatus, DeviceIdentity
from derbridge.contracts.device_score_transfer import ACK_TYPE, Compression, ScoreTransfer
from derbridge.contracts.envelope import Envelope, utc_z
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import score_snapshots as db
from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.score_file import check_score_rows, snapshot_is_stale
from derbridge.errors import Invalid, Unavailable
from derbridge.filestore.base import FileNotInStore, FileStoreError
from derbridge.filestore.factory import FileStoreOpener
from derbridge.filestore.manifest import ManifestMismatch, verify_file
from derbridge.infra.db import utcnow
from derbridge.infra.outbox import write_outbox


def _not_ready(detail: str) -> Unavailable:
    return Unavailable(
        "score-file-not-ready",
        "The score file cannot be loaded yet",
        f"{detail}. Nothing was loaded and the previous score snapshot stays current; the bridge retries "
        "this message from the same file.",
    )


def read_score_file(path: Path, compression: Compression, programs: list[str]) -> pa.Table:
    """The rows of a verified score file, checked (:func:`~derbridge.derms.domain.score_file.check_score_rows`);
    raises :class:`~derbridge.derms.domain.score_file.InvalidScoreFile` with the first problem."""
    return check_score_rows(db.read_score_csv(path, compression), programs)


@dataclass(frozen=True)
class Answer:
    """What the DERMS acknowledges for a score file."""

    status: AckStatus
    detail: str
    unknown_count: int = 0
    unknown: tuple[DeviceIdentity, ...] = ()


async def acknowledge(connection: AsyncConnection, envelope: Envelope, answer: Answer, now: datetime) -> None:
    """Write the ``device-score-transfer-ack.v1`` answering ``envelope``."""
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


async def decide(connection: AsyncConnection, payload: ScoreTransfer) -> Answer | None:
    """The answer for a file already loaded or stale; None when the file is to be loaded."""
    manifest = payload.manifest
    loaded = await db.snapshot(connection, manifest.file_id)
    if loaded is not None:
        return Answer(
            AckStatus.APPLIED,
            f"score file {manifest.file_id} was already loaded at {utc_z(loaded.loaded_at)} "
            f"({loaded.row_count} rows, {loaded.unknown_devices} for unknown devices); nothing reloaded",
            loaded.unknown_devices,
        )
    current = await db.current_snapshot(connection)
    if current is not None and snapshot_is_stale(manifest.generated_at, current.generated_at):
        return Answer(
            AckStatus.STALE,
            f"score file {manifest.file_id} was generated at {utc_z(manifest.generated_at)}, before the current "
            f"snapshot {current.file_id} ({utc_z(current.generated_at)}); not loaded",
        )
    return None


async def fetch_and_read(payload: ScoreTransfer, directory: Path, files: FileStoreOpener) -> pa.Table:
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


async def store(connection: AsyncConnection, payload: ScoreTransfer, rows: pa.Table) -> Answer:
    """Insert the snapshot and its rows, then make it the only current one."""
    manifest = payload.manifest
    await db.insert_snapshot(
        connection,
        manifest.file_id,
        manifest.generated_at,
        manifest.scoring_model_version,
        rows.num_rows,
        utcnow(),
    )
    unknown_count, unknown = await db.load_scores(connection, manifest.file_id, rows)
    await db.make_current(connection, manifest.file_id, unknown_count)
    detail = f"loaded {rows.num_rows} rows of score file {manifest.file_id} as the current snapshot"
    if unknown_count:
        listed = f" (the first {len(unknown)} listed)" if unknown_count > len(unknown) else ""
        detail += f"; {unknown_count} rows for devices the DERMS does not know{listed}"
    return Answer(AckStatus.APPLIED, detail, unknown_count, tuple(unknown))
