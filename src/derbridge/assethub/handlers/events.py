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

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa
import structlog
from sqlalchemy import RowMapping, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.participation_records import (
    OUTCOME_FIELDS,
    Key,
    device_ids,
    locked_event,
    read_records,
    write_outcomes,
)
from derbridge.assethub.adapters.participation_summaries import (
    add_event_entries,
    refresh_event_summaries,
    refresh_summaries,
    set_event_classes,
)
from derbridge.assethub.adapters.reservation_files import fetch_reservation_file
from derbridge.contracts import event_cancellation, event_outcome, event_reservation
from derbridge.contracts.common import Acknowledgement, AckStatus, DeviceIdentity
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.errors import Invalid, MissingPrerequisite
from derbridge.filestore.factory import FileStoreOpener
from derbridge.infra.clock import Clock
from derbridge.infra.columnar import db_times, insert_arrow
from derbridge.infra.outbox import write_outbox

log = structlog.get_logger("derbridge.assethub.events")

RESERVED, RELEASED, CANCELLED = "RESERVED", "RELEASED", "CANCELLED"
"""Participation record statuses: held for the event, let go before it started, event cancelled."""

V = TypeVar("V")


# --- shared steps ---------------------------------------------------------------------------------------


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
    event = await locked_event(connection, event_id)
    stale: str | None = None
    if event is not None and event["status"] == CANCELLED:
        stale = "the event is cancelled; a reservation list for it changes nothing"
    elif event is not None and not payload.update:
        stale = "the event is recorded already (a later update overtook this list); nothing changed"
    if stale is not None:
        await _acknowledge(connection, event_reservation.ACK_TYPE, envelope, AckStatus.STALE, stale, now=clock.now())
        return {"event_id": event_id, "status": AckStatus.STALE.value, "detail": stale}

    if payload.devices_file is not None and payload.devices_location is not None:
        devices = await fetch_reservation_file(event_id, payload.devices_file, payload.devices_location, files)
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
    ids = await device_ids(connection, keys)
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
    event = await locked_event(connection, event_id)
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
    return all(record[name] == values[name] for name in OUTCOME_FIELDS)


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
    event = await locked_event(connection, event_id)
    if event is None:
        raise _event_not_recorded(event_id, "Outcomes")
    now = clock.now()
    reported_at = envelope.occurred_at
    keys = [(x.head_end_system, x.nic_id) for x in payload.outcomes]
    ids = await device_ids(connection, keys)
    records = await read_records(connection, event_id, ids.values())
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
        writes.append((*(values[name] for name in OUTCOME_FIELDS), reported_at, record["record_id"]))
    await write_outcomes(connection, writes)
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
