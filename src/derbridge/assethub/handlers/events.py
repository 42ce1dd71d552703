"""F5 · F6 · F7 · Asset Hub's inbox handlers of program events: the DERMS's reservations (F5), cancellations
(F6) and outcomes (F7). No other code applies these messages, so their reading and writing helpers live
here with them; the participation summaries they keep up to date are
:mod:`derbridge.assethub.adapters.participation_summaries`.

Each handler runs inside the inbox transaction (:mod:`derbridge.infra.inbound`): the effect, the
acknowledgement written to Asset Hub's outbox and the inbox row commit together. Bulk work is set-based:
devices are resolved by head-end in chunks, rows are written with one ``executemany`` per statement.

- ``event-reservation.v1``: the event is recorded (or refreshed) in ``program_events`` with one
  participation record per device (RESERVED), keyed by the DERMS's reservation ``record_id``. An update
  (``update=true``) releases the records of devices no longer listed (RELEASED) and adds new ones. A device
  Asset Hub does not know is reported back in the acknowledgement, not fatal. A long list arrives as a file
  (claim check): it is fetched from the file store and verified against its manifest before a row is read.
- ``event-cancellation.v1``: the event and every participation record become CANCELLED.
- ``event-outcome.v1``: each participation record gets its device's outcome, idempotently: the same outcome
  again changes nothing; a different one replaces it and is recorded in ``participation_corrections``; an
  outcome older than the one held is ignored (batches may overtake each other); an outcome for a record that
  is no longer RESERVED (CANCELLED, RELEASED) is ignored and reported.

Messages of one event travel on three flows, so they may arrive out of order. A cancellation or outcomes for
an event Asset Hub has not recorded yet are parked (``wake_on`` = ``program-event:<event_id>``) and retried;
a reservation list that arrives after the event's cancellation, or an initial list after an update, is
acknowledged as STALE and changes nothing. Releases are final, so updates applied in any order converge.
"""

from __future__ import annotations

import asyncio
import csv
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import structlog
from pydantic import AwareDatetime, TypeAdapter, ValidationError
from sqlalchemy import RowMapping, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.participation_summaries import (
    add_event_entries,
    refresh_event_summaries,
    refresh_summaries,
    set_event_classes,
)
from derbridge.bridge.filestore.base import FileNotInStore
from derbridge.bridge.filestore.factory import FileStoreOpener
from derbridge.bridge.filestore.manifest import ManifestMismatch, verify_file
from derbridge.contracts import event_cancellation, event_outcome, event_reservation
from derbridge.contracts.common import Acknowledgement, AckStatus, DeviceIdentity, HeadEnd, Id
from derbridge.contracts.device_score_transfer import FileLocation, FileManifest
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.errors import Invalid, MissingPrerequisite
from derbridge.infra.clock import Clock
from derbridge.infra.columnar import db_times, id_list, insert_arrow
from derbridge.infra.outbox import write_outbox

log = structlog.get_logger("derbridge.assethub.events")

RESERVED, RELEASED, CANCELLED = "RESERVED", "RELEASED", "CANCELLED"
"""Participation record statuses: held for the event, let go before it started, event cancelled."""

RESERVATION_FILE_COLUMNS: tuple[str, ...] = tuple(event_reservation.ReservedDevice.model_fields)
"""The header a reservation file must have: the contract's ``ReservedDevice`` fields, in order."""

_OUTCOME_FIELDS = (
    "outcome",
    "preemptive_opt_out",
    "participation_start_at",
    "participation_end_at",
    "shed_kw",
    "error_message",
)

V = TypeVar("V")

Key = tuple[str, str]
"""A device as messages name it: ``(head_end_system, nic_id)``."""

Reserved = tuple[str, str, str, datetime, datetime]
"""A reserved device as a row: ``(record_id, head_end_system, nic_id, reservation_start_at,
reservation_end_at)`` — the fields of the contract's ``ReservedDevice``, in its order."""

_RESERVED_ROWS: TypeAdapter[list[Reserved]] = TypeAdapter(list[tuple[Id, HeadEnd, Id, AwareDatetime, AwareDatetime]])
"""Validates a reservation file's rows with the contract's field types at once (a model per row costs ten
times more on a list of 100,000)."""


# --- the file store for claim-checked reservation lists ---------------------------------------------------


def _read_reservation_file(path: Path) -> list[Reserved]:
    """The rows of a reservation file, validated against the contract's field types (line numbers counted
    as in the file: the header is line 1)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != RESERVATION_FILE_COLUMNS:
            raise ValueError(f"line 1: the header is {list(header)}, expected {list(RESERVATION_FILE_COLUMNS)}")
        records: list[list[str]] = []
        lines: list[int] = []
        for record in reader:
            if record:
                records.append(record)
                lines.append(reader.line_num)
    try:
        return _RESERVED_ROWS.validate_python(records)
    except ValidationError as error:
        first = error.errors()[0]
        line = lines[int(first["loc"][0])] if first["loc"] else 2
        column = RESERVATION_FILE_COLUMNS[int(first["loc"][1])] if len(first["loc"]) > 1 else "row"
        raise ValueError(f"line {line}, {column}: {first['msg']}") from None


async def _fetch_devices(
    event_id: str, manifest: FileManifest, location: FileLocation, files: FileStoreOpener
) -> list[Reserved]:
    """The reserved devices of a claim-checked list: fetched, verified against the manifest, then read.

    A file that is missing, not the one its manifest describes, or unreadable is refused (the message goes
    to the dead letters with the reason; an operator fixes the file and replays it). A store that cannot be
    reached raises on, so that the bridge retries.
    """
    with tempfile.TemporaryDirectory(prefix="derbridge-reservations-") as directory:
        path = Path(directory) / "reservations.csv"
        try:
            async with files() as store:
                await store.fetch(location, path)
        except FileNotInStore as missing:
            raise Invalid(
                "file-missing",
                "The reservation file is not in the file store",
                f"Event {event_id}: {missing}. Put the file back under {location.key!r}, then replay the message.",
            ) from None
        except ValueError as bad:  # a key that escapes the store, or a location in another kind of store
            raise Invalid("invalid-file-location", "The reservation file's location is not valid", str(bad)) from None
        try:
            await asyncio.to_thread(verify_file, path, manifest)
        except ManifestMismatch as mismatch:
            raise Invalid(
                "file-mismatch",
                "The reservation file does not match its manifest",
                f"Event {event_id}, file {manifest.file_id}: {mismatch.reason}. Nothing was recorded.",
            ) from None
        try:
            return await asyncio.to_thread(_read_reservation_file, path)
        except ValueError as bad:
            raise Invalid(
                "invalid-file",
                "The reservation file is not valid",
                f"Event {event_id}, file {manifest.file_id}: {bad}. Nothing was recorded.",
            ) from None


# --- shared steps ---------------------------------------------------------------------------------------


async def _device_ids(connection: AsyncConnection, keys: Iterable[Key]) -> dict[Key, int]:
    """Asset Hub's ``device_id`` of each device it knows among ``keys`` (unknown ones are absent)."""
    by_head_end: dict[str, list[str]] = defaultdict(list)
    for head_end, nic in keys:
        by_head_end[head_end].append(nic)
    d = t.devices
    found: dict[Key, int] = {}
    for head_end, nics in by_head_end.items():
        # The head end's nic ids as one parameter (an array, or a JSON array on SQLite): no IN list of
        # thousands of parameters to compile and bind, however long the list.
        rows = await connection.execute(
            select(d.c.nic_id, d.c.device_id).where(
                d.c.head_end_system == head_end, id_list(connection, d.c.nic_id, nics, "nics")
            )
        )
        found.update(((head_end, nic), device_id) for nic, device_id in rows.tuples())
    return found


async def _locked_event(connection: AsyncConnection, event_id: str) -> RowMapping | None:
    # FOR UPDATE (PostgreSQL; SQLite has one writer anyway): messages of one event applied at once by
    # competing deliveries take turns, so each reads what the previous one wrote.
    result = await connection.execute(
        select(t.program_events).where(t.program_events.c.event_id == event_id).with_for_update()
    )
    return result.mappings().first()


def _event_not_recorded(event_id: str, what: str) -> MissingPrerequisite:
    return MissingPrerequisite(
        f"program-event:{event_id}",
        f"{what} for event {event_id}, whose reservation has not arrived yet; delivered again once it has.",
    )


async def _acknowledge(
    connection: AsyncConnection,
    ack_type: str,
    envelope: Envelope,
    status: AckStatus,
    detail: str,
    unknown: Sequence[Key] = (),
    *,
    now: datetime,
) -> None:
    """Write the acknowledgement of ``envelope`` to Asset Hub's outbox (in the inbox transaction)."""
    ack = Acknowledgement(
        acknowledged_message_id=envelope.message_id,
        status=status,
        detail=detail[:2000],
        unknown_devices=[DeviceIdentity(head_end_system=h, nic_id=n) for h, n in unknown],
    )
    reply = new_envelope(
        ack_type,
        ack,
        business_key=envelope.business_key,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.message_id,
        occurred_at=now,
        target_instance=envelope.source.instance,
    )
    await write_outbox(connection, t.outbox, [reply])


def _named(keys: Sequence[Key], limit: int = 10) -> str:
    shown = ", ".join(f"{h}:{n}" for h, n in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# --- F5 · event-reservation -------------------------------------------------------------------------------


async def apply_reservation(
    connection: AsyncConnection,
    envelope: Envelope,
    payload: event_reservation.EventReservation,
    *,
    clock: Clock,
    files: FileStoreOpener,
) -> dict[str, Any]:
    """Record an event and its participation records (RESERVED); on an update, release the records of the
    devices no longer listed and add the new ones. Acknowledged with the devices Asset Hub does not know."""
    event_id = payload.event_id
    if (payload.devices_file is None) != (payload.devices_location is None):
        raise Invalid(
            "invalid-payload",
            "Incomplete claim check",
            f"Event {event_id}: a reservation file needs both devices_file (manifest) and devices_location.",
        )
    now = clock.now()
    event = await _locked_event(connection, event_id)
    stale: str | None = None
    if event is not None and event["status"] == CANCELLED:
        stale = "the event is cancelled; a reservation list for it changes nothing"
    elif event is not None and not payload.update:
        stale = "the event is recorded already (a later update overtook this list); nothing changed"
    if stale is not None:
        await _acknowledge(connection, event_reservation.ACK_TYPE, envelope, AckStatus.STALE, stale, now=clock.now())
        return {"event_id": event_id, "status": AckStatus.STALE.value, "detail": stale}

    if payload.devices_file is not None and payload.devices_location is not None:
        devices = await _fetch_devices(event_id, payload.devices_file, payload.devices_location, files)
    else:
        devices = [
            (x.record_id, x.head_end_system, x.nic_id, x.reservation_start_at, x.reservation_end_at)
            for x in payload.devices
        ]

    e = t.program_events
    fields = {
        "derms_instance_id": payload.derms_instance_id,
        "program_code": payload.program_code,
        "event_type": payload.event_type.value,
        "start_at": payload.start_at,
        "end_at": payload.end_at,
        "status": payload.status.value,
    }
    if event is None:
        await connection.execute(
            e.insert().values(event_id=event_id, received_at=now, cancelled_at=None, cancel_reason=None, **fields)
        )
    else:
        await connection.execute(e.update().where(e.c.event_id == event_id).values(**fields))

    keys = [(head_end, nic) for _, head_end, nic, _, _ in devices]
    ids = await _device_ids(connection, keys)
    unknown = [k for k in keys if k not in ids]
    p = t.participation_records
    held: dict[int, tuple[str, str]] = {}
    if event is not None:  # a new event has no records yet
        held = {
            row.device_id: (row.record_id, row.status)
            for row in await connection.execute(
                select(p.c.device_id, p.c.record_id, p.c.status).where(p.c.event_id == event_id)
            )
        }
    listed = {ids[k] for k in keys if k in ids}
    new_rows = [
        (record_id, ids[(head_end, nic)], start_at, end_at)
        for record_id, head_end, nic, start_at, end_at in devices
        if (head_end, nic) in ids and ids[(head_end, nic)] not in held
    ]
    await insert_arrow(connection, p, _record_columns(connection, event_id, new_rows), skip_conflicts=True)
    released = [
        {"b_record_id": record_id}
        for device_id, (record_id, status) in held.items()
        if payload.update and status == RESERVED and device_id not in listed
    ]
    if released:
        await connection.execute(
            p.update().where(p.c.record_id == bindparam("b_record_id")).values(status=RELEASED), released
        )
    # The devices' scoring histories (participation_summaries) follow in the same transaction: every device
    # of the event when what the history keeps of the event changed, else the devices just added. (A release
    # changes no history: a released reservation still counts as a call, as it does read from the records.)
    # A new event's entry is patched into the histories in place (add_event_entries recomputes the few
    # devices where that would not be exact); an update recomputes what it touched.
    if event is None:
        await add_event_entries(connection, event_id)
    elif _history_changed(event, fields):
        await refresh_event_summaries(connection, event_id)
    else:
        await refresh_summaries(connection, [device_id for device_id in listed if device_id not in held])
    detail = f"{len(new_rows)} reserved, {len(released)} released, {len(unknown)} unknown device(s)"
    if unknown:
        detail += f": {_named(unknown)}"
    await _acknowledge(
        connection, event_reservation.ACK_TYPE, envelope, AckStatus.APPLIED, detail, unknown, now=clock.now()
    )
    log.info(
        "event reservation applied",
        event_id=event_id,
        update=payload.update,
        reserved=len(new_rows),
        released=len(released),
        unknown_devices=len(unknown),
    )
    return {
        "event_id": event_id,
        "status": AckStatus.APPLIED.value,
        "reserved": len(new_rows),
        "released": len(released),
        "unknown_devices": len(unknown),
    }


def _record_columns(
    connection: AsyncConnection, event_id: str, rows: Sequence[tuple[str, int, datetime, datetime]]
) -> pa.Table:
    """New RESERVED participation records ``(record_id, device_id, start, end)`` as columns for one bulk
    insert (an event's reservations share a handful of windows: each is formatted once)."""
    text = db_times(connection)
    return pa.table(
        {
            "record_id": pa.array([r[0] for r in rows], type=pa.string()),
            "event_id": pa.repeat(pa.scalar(event_id), len(rows)),
            "device_id": pa.array([r[1] for r in rows], type=pa.int64()),
            "status": pa.repeat(pa.scalar(RESERVED), len(rows)),
            "reservation_start_at": pa.array([text(r[2]) for r in rows], type=pa.string()),
            "reservation_end_at": pa.array([text(r[3]) for r in rows], type=pa.string()),
        }
    )


def _history_changed(event: RowMapping, fields: dict[str, Any]) -> bool:
    """Whether an update changes what a device's history keeps of the event: its program, its start, or
    whether it is cancelled."""
    return bool(
        event["program_code"] != fields["program_code"]
        or event["start_at"] != fields["start_at"]
        or (event["status"] == CANCELLED) != (fields["status"] == CANCELLED)
    )


# --- F6 · event-cancellation ------------------------------------------------------------------------------


async def apply_cancellation(
    connection: AsyncConnection, envelope: Envelope, payload: event_cancellation.EventCancellation, *, clock: Clock
) -> dict[str, Any]:
    """Mark the event CANCELLED and every participation record of it CANCELLED; acknowledge."""
    event_id = payload.event_id
    event = await _locked_event(connection, event_id)
    if event is None:
        raise _event_not_recorded(event_id, "A cancellation")
    e, p = t.program_events, t.participation_records
    if event["status"] == CANCELLED:
        detail = "the event was cancelled already; nothing changed"
        await _acknowledge(
            connection, event_cancellation.ACK_TYPE, envelope, AckStatus.APPLIED, detail, now=clock.now()
        )
        return {"event_id": event_id, "status": AckStatus.APPLIED.value, "cancelled_records": 0}
    await connection.execute(
        e.update()
        .where(e.c.event_id == event_id)
        .values(status=CANCELLED, cancelled_at=payload.cancelled_at, cancel_reason=payload.reason_text)
    )
    records = await connection.execute(
        p.update().where(p.c.event_id == event_id, p.c.status != CANCELLED).values(status=CANCELLED)
    )
    await refresh_event_summaries(connection, event_id)  # cancelled: the event leaves every device's history
    detail = f"event cancelled with {records.rowcount} participation record(s)"
    await _acknowledge(connection, event_cancellation.ACK_TYPE, envelope, AckStatus.APPLIED, detail, now=clock.now())
    log.info("event cancellation applied", event_id=event_id, records=records.rowcount)
    return {"event_id": event_id, "status": AckStatus.APPLIED.value, "cancelled_records": records.rowcount}


# --- F7 · event-outcome -----------------------------------------------------------------------------------


# Constant names only (no input reaches the text).
_UPDATE_OUTCOMES_SQLITE = (
    f"UPDATE {t.participation_records.name} SET "  # noqa: S608
    + ", ".join(f"{name} = ?" for name in (*_OUTCOME_FIELDS, "outcome_reported_at"))
    + " WHERE record_id = ?"
)
# The arrays go as binary parameters (%b): psycopg dumps a list as text escaping each element in Python
# (10,000 timestamps: 24 ms), in binary without (1 ms). Each list holds one Python type (validated models).
_UPDATE_OUTCOMES_POSTGRESQL = (
    f"UPDATE {t.participation_records.name} AS p SET "  # noqa: S608
    + ", ".join(f"{name} = u.{name}" for name in (*_OUTCOME_FIELDS, "outcome_reported_at"))
    + " FROM unnest(%b::text[], %b::boolean[], %b::timestamptz[], %b::timestamptz[], %b::double precision[], "
    "%b::text[], %b::timestamptz[], %b::text[]) AS u("
    + ", ".join((*_OUTCOME_FIELDS, "outcome_reported_at", "record_id"))
    + ") WHERE p.record_id = u.record_id"
)


async def _write_outcomes(connection: AsyncConnection, writes: list[tuple[Any, ...]]) -> None:
    """Set each record's outcome: ``writes`` are the :data:`_OUTCOME_FIELDS`, ``outcome_reported_at`` and
    the ``record_id``, in that order (of a record written twice, the last).

    Through the driver, not SQLAlchemy's per-row parameter processing (three ``UTCDateTime`` conversions
    a row), which cost more than the update itself for a batch of 10,000 (F7 benchmark): on SQLite an
    ``executemany`` of plain tuples, times converted as the column type would (naive UTC text), each
    distinct one once; on PostgreSQL one ``UPDATE … FROM unnest(…)`` over arrays."""
    if not writes:
        return
    if connection.dialect.name == "postgresql":
        # One statement updates a row once: the last write of a record wins, as in an executemany.
        last = list({row[-1]: row for row in writes}.values())
        await connection.exec_driver_sql(_UPDATE_OUTCOMES_POSTGRESQL, tuple(list(c) for c in zip(*last, strict=True)))
        return
    at = db_times(connection)

    # By record id (a stable sort: of a record written twice the last still wins): the updates then walk the
    # primary key in order, whatever order the aggregators reported in.
    rows = [
        (o, opt_out, at(s), at(e), kw, m, at(r), i)
        for o, opt_out, s, e, kw, m, r, i in sorted(writes, key=itemgetter(-1))
    ]
    await connection.exec_driver_sql(_UPDATE_OUTCOMES_SQLITE, rows)


def _outcome_values(x: event_outcome.DeviceOutcome) -> dict[str, Any]:
    return {
        "outcome": x.outcome.value,
        "preemptive_opt_out": x.preemptive_opt_out,
        "participation_start_at": x.participation_start_at,
        "participation_end_at": x.participation_end_at,
        "shed_kw": x.shed_kw,
        "error_message": x.error_message,
    }


def _same_outcome(record: dict[str, Any], values: dict[str, Any]) -> bool:
    return all(record[name] == values[name] for name in _OUTCOME_FIELDS)


async def _records(connection: AsyncConnection, event_id: str, device_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The participation records of ``event_id`` for ``device_ids`` (those it has), by device id.

    Only the devices of the batch are read, through the (event_id, device_id) index: an event of 100,000
    devices reported in ten batches is read once in all, not ten times."""
    p = t.participation_records
    columns = [p.c.record_id, p.c.device_id, p.c.status, p.c.outcome_reported_at, *(p.c[f] for f in _OUTCOME_FIELDS)]
    rows = await connection.execute(
        select(*columns).where(
            p.c.event_id == event_id, id_list(connection, p.c.device_id, list(device_ids), "devices")
        )
    )
    # Plain dicts from the tuples: a RowMapping per row cost more than the query (10,000 per batch).
    names = [c.name for c in columns]
    found = (dict(zip(names, row, strict=True)) for row in rows.tuples())
    return {record["device_id"]: record for record in found}


async def apply_outcomes(
    connection: AsyncConnection, envelope: Envelope, payload: event_outcome.EventOutcomeBatch, *, clock: Clock
) -> dict[str, Any]:
    """Give each participation record its device's outcome, idempotently per event and device.

    New outcome → recorded. Same outcome → nothing. Different outcome → replaced, and the change recorded in
    ``participation_corrections``. Older than the outcome held (``occurred_at`` of the message) → ignored.
    Record not RESERVED (cancelled, released) → ignored and reported; no record (device unknown, or not
    reserved here) → reported in ``unknown_devices``.
    """
    event_id = payload.event_id
    event = await _locked_event(connection, event_id)
    if event is None:
        raise _event_not_recorded(event_id, "Outcomes")
    now = clock.now()
    reported_at = envelope.occurred_at
    keys = [(x.head_end_system, x.nic_id) for x in payload.outcomes]
    ids = await _device_ids(connection, keys)
    records = await _records(connection, event_id, ids.values())
    writes: list[tuple[Any, ...]] = []
    corrections: list[dict[str, Any]] = []
    no_record: list[Key] = []
    not_held: list[Key] = []
    unchanged = stale = 0
    patched_devices: list[int] = []  # the event's entry stays in the history: its class is set in place
    changed_devices: list[int] = []  # the entry comes or goes (an outcome CANCELLED): recomputed
    event_counted = event["status"] != CANCELLED
    for key, x in zip(keys, payload.outcomes, strict=True):
        device_id = ids.get(key)
        record = records.get(device_id) if device_id is not None else None
        if record is None:
            no_record.append(key)
            continue
        if record["status"] != RESERVED:
            not_held.append(key)
            continue
        values = _outcome_values(x)
        if record["outcome"] is not None:
            if record["outcome_reported_at"] is not None and reported_at < record["outcome_reported_at"]:
                stale += 1
                continue
            if _same_outcome(record, values):
                unchanged += 1
                continue
            corrections.append(
                {
                    "record_id": record["record_id"],
                    "previous_outcome": record["outcome"],
                    "previous_preemptive_opt_out": record["preemptive_opt_out"],
                    "new_outcome": values["outcome"],
                    "corrected_at": now,
                }
            )
        if event_counted and CANCELLED not in (record["outcome"], values["outcome"]):
            patched_devices.append(record["device_id"])
        else:
            changed_devices.append(record["device_id"])
        writes.append((*(values[name] for name in _OUTCOME_FIELDS), reported_at, record["record_id"]))
    await _write_outcomes(connection, writes)
    if corrections:
        await connection.execute(t.participation_corrections.insert(), corrections)
    # New and corrected outcomes reach the histories, in the same transaction.
    await set_event_classes(connection, event_id, patched_devices)
    await refresh_summaries(connection, changed_devices)
    recorded = len(writes) - len(corrections)
    detail = (
        f"{recorded} recorded, {len(corrections)} corrected, {unchanged} unchanged, {stale} older than the one held, "
        f"{len(not_held)} ignored (participation not RESERVED), {len(no_record)} without a participation record"
    )
    if not_held:
        detail += f"; ignored: {_named(not_held)}"
    await _acknowledge(
        connection, event_outcome.ACK_TYPE, envelope, AckStatus.APPLIED, detail, no_record, now=clock.now()
    )
    log.info(
        "event outcomes applied",
        event_id=event_id,
        recorded=recorded,
        corrected=len(corrections),
        unchanged=unchanged,
        stale=stale,
        ignored=len(not_held),
        without_record=len(no_record),
    )
    return {
        "event_id": event_id,
        "status": AckStatus.APPLIED.value,
        "recorded": recorded,
        "corrected": len(corrections),
        "unchanged": unchanged,
        "stale": stale,
        "ignored": len(not_held),
        "without_record": len(no_record),
    }
