"""The DERMS's event messages to Asset Hub, written to the DERMS outbox inside the caller's transaction:

- F5 ``event-reservation.v1``: an event and the devices it holds, when it is created and again (``update``)
  after some reservations were released. A list longer than :data:`RESERVATION_FILE_THRESHOLD` travels as a
  CSV file in the file store (claim check): the message then carries the file's manifest and location and
  an empty ``devices`` list.
- F6 ``event-cancellation.v1``: an event cancelled before its start.
- F7 ``event-outcome.v1``: per-device outcomes, in batches of at most :data:`OUTCOME_BATCH_SIZE`.

Asset Hub's acknowledgements of the three (``…-ack.v1``) are taken by
:func:`derbridge.derms.handlers.events.record_acknowledgement`.
"""

from __future__ import annotations

import asyncio
import csv
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import event_cancellation, event_outcome, event_reservation
from derbridge.contracts.device_score_transfer import Compression, FileLocation, FileManifest
from derbridge.contracts.envelope import Envelope, utc_z
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as t
from derbridge.filestore.base import FileStore
from derbridge.filestore.factory import build_file_store
from derbridge.filestore.manifest import describe_file
from derbridge.infra.ids import new_id
from derbridge.infra.outbox import write_outbox
from derbridge.settings import Settings

RESERVATION_FILE_THRESHOLD = 5_000
"""Reservation lists longer than this travel as a file (claim check). The default of the setting
``events.reservation_file_threshold`` (:meth:`ReservationFiles.from_settings`)."""

INLINE_MAX = 10_000
"""The most devices an ``event-reservation.v1`` message may list inline (the contract's limit): a larger
threshold setting is capped to it."""

OUTCOME_BATCH_SIZE = 10_000
"""At most this many device outcomes per ``event-outcome.v1`` message: a batch stays well under the
target's request body limit (16 MiB) whatever the size of the event."""

RESERVATION_FILE_COLUMNS: tuple[str, ...] = tuple(event_reservation.ReservedDevice.model_fields)
"""The header of a reservation file: the fields of the contract's ``ReservedDevice``, in order, so that
both ends derive the format from the contract alone."""


@dataclass(frozen=True)
class ReservationFiles:
    """Where long reservation lists go, and from which length on.

    ``store`` opens the file store (one per use, closed after it); ``threshold`` overrides
    :data:`RESERVATION_FILE_THRESHOLD` when given.
    """

    store: Callable[[], FileStore]
    threshold: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ReservationFiles:
        """The file store and threshold the settings name (``files.*``, ``events.reservation_file_threshold``)."""
        return cls(lambda: build_file_store(settings), settings.events.reservation_file_threshold)

    def limit(self) -> int:
        """The longest list that still travels inside the message (never more than the contract allows)."""
        return min(self.threshold if self.threshold is not None else RESERVATION_FILE_THRESHOLD, INLINE_MAX)


class ReservedRow(NamedTuple):
    """A device an event holds, as its message lists it (the fields of the contract's ``ReservedDevice``)."""

    record_id: str
    head_end_system: str
    nic_id: str
    reservation_start_at: datetime
    reservation_end_at: datetime


def _write_reservation_file(path: Path, rows: Sequence[ReservedRow]) -> None:
    # An event's reservations share a handful of distinct times: format each once, not twice per row.
    formatted: dict[datetime, str] = {}

    def z(value: datetime) -> str:
        text = formatted.get(value)
        if text is None:
            text = formatted[value] = utc_z(value)
        return text

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RESERVATION_FILE_COLUMNS)
        writer.writerows(
            (r.record_id, r.head_end_system, r.nic_id, z(r.reservation_start_at), z(r.reservation_end_at)) for r in rows
        )


async def _claim_check(
    rows: Sequence[ReservedRow], event_id: str, now: datetime, files: ReservationFiles
) -> tuple[FileManifest, FileLocation]:
    """Write ``rows`` as a reservation file, put it in the file store, and return its manifest and location.

    The file is put before the transaction that writes its message commits: if that transaction fails, a
    file no message names is left in the store, which is harmless; the other order could send a message
    naming a file that never arrives.
    """
    file_id = new_id()
    with tempfile.TemporaryDirectory(prefix="derbridge-reservations-") as directory:
        path = Path(directory) / f"{file_id}.csv"
        await asyncio.to_thread(_write_reservation_file, path, rows)
        manifest = await asyncio.to_thread(
            describe_file, path, file_id=file_id, generated_at=now, compression=Compression.NONE
        )
        async with files.store() as store:
            location = await store.put(path, f"reservations/{event_id}/{file_id}.csv")
    return manifest, location


async def _held(connection: AsyncConnection, event_id: str) -> list[ReservedRow]:
    """The devices an event holds (RESERVED), in rank order."""
    rows = await connection.execute(
        select(
            t.reservations.c.record_id,
            t.devices.c.head_end_system,
            t.devices.c.nic_id,
            t.reservations.c.reservation_start_at,
            t.reservations.c.reservation_end_at,
        )
        .join(t.devices, t.devices.c.device_id == t.reservations.c.device_id)
        .where(t.reservations.c.event_id == event_id, t.reservations.c.status == "RESERVED")
        .order_by(t.reservations.c.rank)
    )
    return [ReservedRow(*row) for row in rows.tuples()]


async def reservation_envelope(
    connection: AsyncConnection,
    event_id: str,
    *,
    update: bool,
    now: datetime,
    files: ReservationFiles,
    held: Sequence[ReservedRow] | None = None,
) -> Envelope:
    """The F5 message of an event with the devices it holds now (``update`` after some were released).

    ``files`` is where a list longer than its threshold goes. ``held``: the devices the event holds, in
    rank order, when the caller has them at hand (it just reserved them); otherwise they are read.
    """
    event = (await connection.execute(select(t.program_events).where(t.program_events.c.event_id == event_id))).one()
    rows = held if held is not None else await _held(connection, event_id)
    devices: list[event_reservation.ReservedDevice] = []
    manifest: FileManifest | None = None
    location: FileLocation | None = None
    if len(rows) > files.limit():
        manifest, location = await _claim_check(rows, event_id, now, files)
    else:
        devices = [
            event_reservation.ReservedDevice(
                record_id=r.record_id,
                head_end_system=r.head_end_system,
                nic_id=r.nic_id,
                reservation_start_at=r.reservation_start_at,
                reservation_end_at=r.reservation_end_at,
            )
            for r in rows
        ]
    payload = event_reservation.EventReservation(
        event_id=event.event_id,
        derms_instance_id=event.derms_instance_id,
        program_code=event.program_code,
        event_type=event_reservation.EventType(event.event_type),
        start_at=event.start_at,
        end_at=event.end_at,
        status=event_reservation.EventStatus(event.status),
        devices=devices,
        devices_file=manifest,
        devices_location=location,
        update=update,
    )
    return new_envelope(
        event_reservation.TYPE,
        payload,
        business_key=event_id,
        correlation_id=event_id,
        occurred_at=now,
        source_instance=event.derms_instance_id,
    )


async def queue_reservation(
    connection: AsyncConnection,
    event_id: str,
    now: datetime,
    files: ReservationFiles,
    held: Sequence[ReservedRow] | None = None,
) -> Envelope:
    """Write the F5 message of a newly created event (in the transaction that created it); ``held`` as in
    :func:`reservation_envelope`."""
    envelope = await reservation_envelope(connection, event_id, update=False, now=now, files=files, held=held)
    await write_outbox(connection, t.outbox, [envelope])
    return envelope


async def queue_reservation_updates(
    connection: AsyncConnection, event_ids: Iterable[str], now: datetime, files: ReservationFiles
) -> int:
    """After reservations were released (a device became unavailable, F3), tell Asset Hub each event's new
    reservation list (an F5 update); returns how many messages were written."""
    envelopes = [
        await reservation_envelope(connection, e, update=True, now=now, files=files) for e in sorted(set(event_ids))
    ]
    await write_outbox(connection, t.outbox, envelopes)
    return len(envelopes)


async def queue_cancellation(
    connection: AsyncConnection, event_id: str, derms_instance_id: str, reason_text: str, now: datetime
) -> Envelope:
    """Write the F6 message of a cancelled event."""
    envelope = new_envelope(
        event_cancellation.TYPE,
        event_cancellation.EventCancellation(
            event_id=event_id, derms_instance_id=derms_instance_id, cancelled_at=now, reason_text=reason_text
        ),
        business_key=event_id,
        correlation_id=event_id,
        occurred_at=now,
        source_instance=derms_instance_id,
    )
    await write_outbox(connection, t.outbox, [envelope])
    return envelope


def outcome_envelopes(
    event_id: str, derms_instance_id: str, outcomes: Sequence[event_outcome.DeviceOutcome], now: datetime
) -> list[Envelope]:
    """The F7 messages carrying ``outcomes``, at most :data:`OUTCOME_BATCH_SIZE` per message.

    ``occurred_at`` is when the DERMS recorded them: Asset Hub ignores an outcome older than the one it
    holds, so batches overtaking each other on the way cannot undo a correction.
    """
    return [
        new_envelope(
            event_outcome.TYPE,
            event_outcome.EventOutcomeBatch(event_id=event_id, outcomes=list(outcomes[i : i + OUTCOME_BATCH_SIZE])),
            business_key=event_id,
            correlation_id=event_id,
            occurred_at=now,
            source_instance=derms_instance_id,
        )
        for i in range(0, len(outcomes), OUTCOME_BATCH_SIZE)
    ]


async def queue_outcomes(
    connection: AsyncConnection,
    event_id: str,
    derms_instance_id: str,
    outcomes: Sequence[event_outcome.DeviceOutcome],
    now: datetime,
) -> int:
    """Write the F7 messages of ``outcomes`` (none when empty); returns how many were written."""
    envelopes = outcome_envelopes(event_id, derms_instance_id, outcomes, now)
    await write_outbox(connection, t.outbox, envelopes)
    return len(envelopes)
