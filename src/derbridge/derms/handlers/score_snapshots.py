"""F4 · device-score-transfer, the DERMS's inbox: load a score file as the new current score snapshot
(:mod:`derbridge.derms.services.score_snapshots` says how, step by step).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts.common import AckStatus
from derbridge.contracts.device_score_transfer import ScoreTransfer
from derbridge.contracts.envelope import Envelope
from derbridge.derms.adapters.score_snapshots import lock_snapshots
from derbridge.derms.domain.score_file import InvalidScoreFile
from derbridge.derms.services.score_snapshots import Answer, acknowledge, decide, fetch_and_read, store
from derbridge.filestore.factory import FileStoreOpener
from derbridge.infra.clock import Clock

log = structlog.get_logger("derbridge.derms.scores")


async def load_score_snapshot(
    connection: AsyncConnection, envelope: Envelope, payload: ScoreTransfer, *, clock: Clock, files: FileStoreOpener
) -> dict[str, Any]:
    """Load the score file the message points to as the current snapshot (see
    :mod:`derbridge.derms.services.score_snapshots`)."""
    manifest = payload.manifest
    now = clock.now()
    await lock_snapshots(connection)
    answer = await decide(connection, payload)
    if answer is None:
        # A 503 problem raised here (file missing, unreachable, not matching) rolls the inbox claim back too:
        # the message is not applied, and its retry starts again from the file.
        with tempfile.TemporaryDirectory(prefix="derbridge-scores-") as directory:
            try:
                rows = await fetch_and_read(payload, Path(directory), files)
            except InvalidScoreFile as invalid:
                answer = Answer(AckStatus.REJECTED, f"score file {manifest.file_id} rejected, not loaded: {invalid}")
            else:
                answer = await store(connection, payload, rows)
    await acknowledge(connection, envelope, answer, now)
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
