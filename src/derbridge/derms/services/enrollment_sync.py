"""F3 · enrollment-sync, the DERMS's side: apply Asset Hub's enrollment changes to device availability,
release the reservations of devices that became unavailable, and acknowledge.

The handler of ``enrollment-sync.v1`` runs inside the inbox transaction, so the availability change, the
released reservations, their F5 updates, the log entry and the acknowledgement commit together or not at
all. In order:

1. **Prerequisites (P0).** The customer (``customers`` by ``cis_account_id``) and its location
   (``locations`` by ``cis_service_point_id``, on that account and premise) must be here, else the message
   is parked with ``wake_on = cis-account:<id>`` (:func:`cis_account_conditions`): whoever runs a CIS import
   into the DERMS and is wired with the bridge wakes it after the import loads that account (the DERMS does
   not write the bridge's database). A program the DERMS does not know (its program sync has not arrived yet)
   parks it with ``program:<code>`` (the bridge wakes it when it delivers that program's sync; the slow park
   backoff retries it meanwhile).
2. **Consistency.** A device list that does not fit its change (:func:`check_sync_devices`) is refused:
   logged REJECTED and acknowledged REJECTED with the reason, which Asset Hub shows as FAILED.
3. **Ordering.** Syncs of one enrollment are serialised (a transaction-scoped advisory lock on PostgreSQL;
   SQLite has one writer) and :func:`decide_sync` compares the envelope's ``sequence`` with the highest one
   applied for the enrollment (``enrollment_sync_log`` and ``device_availability``). A stale one is logged
   STALE and acknowledged STALE, and changes nothing.
4. **Apply.** Devices are upserted by ``(head_end_system, nic_id)`` and their ``device_availability`` in
   the program set, all devices of the message in the same transaction. An AVAILABLE device is taken by
   this enrollment; an UNAVAILABLE one changes only if no other enrollment holds it now, so that a late
   unenrollment of an earlier enrollment cannot take the device from the enrollment that has it today.
5. **Releases.** A device made UNAVAILABLE loses its reservations of the program's events not yet started
   (:func:`reservations_to_release`); each event touched gets an F5 update
   (:func:`~derbridge.derms.services.event_messages.queue_reservation_updates`).
6. The enrollment's known state (:mod:`~derbridge.derms.services.enrollment_states`, revision = the sync's
   sequence) and the enrollment request the DERMS recorded for F1 take the new state (ACTIVE or
   UNENROLLED), which the edge shows to the aggregator (and tells its subscribers, through the port
   :attr:`~derbridge.derms.ports.DermsPorts.enrollment_states_changed`); the sync is logged APPLIED and
   acknowledged. A sync that overtook Asset Hub's F1 answer finds no answered request to update: the
   answer, when it comes, takes the state recorded here instead of its PENDING.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final

from sqlalchemy import bindparam, func, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import enrollment_sync as contract
from derbridge.contracts.common import Acknowledgement, AckStatus
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.availability import (
    Availability,
    SyncChange,
    SyncDecision,
    SyncDevicesError,
    SyncedDevice,
    check_sync_devices,
    decide_sync,
    reservations_to_release,
)
from derbridge.derms.domain.event import EventStatus
from derbridge.derms.ports import DermsPorts
from derbridge.derms.services.enrollment_states import note_syncs
from derbridge.derms.services.event_messages import ReservationFiles, queue_reservation_updates
from derbridge.errors import FieldError, Invalid, MissingPrerequisite
from derbridge.infra.clock import Clock
from derbridge.infra.inbound import NotBatchable
from derbridge.infra.outbox import write_outbox
from derbridge.infra.upsert import frozen, insert_for

LIVE_EVENT_STATUSES: Final = (EventStatus.SCHEDULED.value, EventStatus.ACTIVE.value)
"""Events whose reservations still hold (a cancelled event's are released already)."""

DETAIL_LIMIT: Final = 2000
"""The longest detail an acknowledgement carries (``Acknowledgement.detail``)."""

_ENROLLMENT_STATE_AFTER: Final[dict[SyncChange, str]] = {
    SyncChange.ENROLLED: "ACTIVE",
    SyncChange.DEVICE_REPLACED: "ACTIVE",
    SyncChange.UNENROLLED: "UNENROLLED",
}


def cis_account_conditions(account_ids: Iterable[str]) -> set[str]:
    """The conditions (``wake_on``) an enrollment sync waits on until these CIS accounts reach the DERMS.

    After a CIS import, the caller wired with the bridge wakes the messages parked for the accounts the
    DERMS loaded (``ImportReport.loaded_account_ids["derms"]``) with them — ``Tracker.wake`` or
    ``POST /bridge/v1/wake`` — so parked syncs are delivered again at once, without an operator.
    """
    return {_cis_account_condition(account) for account in account_ids}


def _cis_account_condition(account: str) -> str:
    return f"cis-account:{account}"


async def _lock_enrollment(connection: AsyncConnection, enrollment_id: str) -> None:
    # Competing consumers may deliver two syncs of one enrollment at once: without this, both would read
    # the same "highest applied" and the older could commit last. The two-key form keeps these locks apart
    # from the single-key ones (events' reservation lock).
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('derms.enrollment-sync'), hashtext(:enrollment_id))"),
            {"enrollment_id": enrollment_id},
        )


async def _lock_reservations(connection: AsyncConnection) -> None:
    # The lock event creation takes (derms.services.events): a device turning unavailable while an event is
    # reserving either is seen unavailable by it or has its new reservation released here — never missed.
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('derms.reserve'))"))


async def _check_prerequisites(connection: AsyncConnection, payload: contract.EnrollmentSync) -> None:
    account = payload.subscription.cis_account_id
    location = payload.location
    customer = await connection.scalar(
        select(t.customers.c.cis_account_id).where(t.customers.c.cis_account_id == account)
    )
    if customer is None:
        raise MissingPrerequisite(
            _cis_account_condition(account),
            f"customer (CIS account) {account!r} is not in the DERMS yet; it arrives with the next CIS import",
        )
    found = (
        await connection.execute(
            select(t.locations.c.cis_account_id, t.locations.c.cis_premise_id).where(
                t.locations.c.cis_service_point_id == location.cis_service_point_id
            )
        )
    ).first()
    if found is None or found.cis_account_id != account or found.cis_premise_id != location.cis_premise_id:
        # The DERMS's copy of the CIS is older than Asset Hub's: the import that moves this service point
        # onto the account also reports the account as loaded, which wakes this message.
        what = "is not in the DERMS yet" if found is None else "is on another account or premise in the DERMS"
        raise MissingPrerequisite(
            _cis_account_condition(account),
            f"location (service point) {location.cis_service_point_id!r} of account {account!r} {what}; "
            "it arrives with the next CIS import",
        )
    program = payload.subscription.program_code
    if await connection.scalar(select(t.programs.c.program_code).where(t.programs.c.program_code == program)) is None:
        raise MissingPrerequisite(
            f"program:{program}",
            f"program {program!r} is not in the DERMS yet; it arrives by program sync once created in Asset "
            f"Hub (POST /assethub/v1/programs); then 'derbridge messages wake program:{program}'",
        )


async def _applied_sequence(connection: AsyncConnection, enrollment_id: str) -> int | None:
    """The highest sequence applied for the enrollment: from its log, and from the availability rows it
    holds (which also cover syncs applied before the log existed)."""
    logged = await connection.scalar(
        select(func.max(t.enrollment_sync_log.c.sequence)).where(
            t.enrollment_sync_log.c.enrollment_id == enrollment_id, t.enrollment_sync_log.c.result == "APPLIED"
        )
    )
    held = await connection.scalar(
        select(func.max(t.device_availability.c.sequence)).where(t.device_availability.c.enrollment_id == enrollment_id)
    )
    known = [int(v) for v in (logged, held) if v is not None]
    return max(known) if known else None


async def _log_and_acknowledge(
    connection: AsyncConnection,
    envelope: Envelope,
    payload: contract.EnrollmentSync,
    sequence: int,
    status: AckStatus,
    detail: str,
    now: datetime,
) -> None:
    detail = _short(detail)
    await connection.execute(
        t.enrollment_sync_log.insert().values(
            message_id=envelope.message_id,
            enrollment_id=payload.subscription.subscription_id,
            sequence=sequence,
            change=payload.change.value,
            result=status.value,
            detail=detail,
            at=now,
        )
    )
    await write_outbox(connection, t.outbox, [_ack(envelope, payload, status, detail, now)])


def _ack(
    envelope: Envelope, payload: contract.EnrollmentSync, status: AckStatus, detail: str, now: datetime
) -> Envelope:
    """The ``enrollment-sync-ack.v1`` answering ``envelope``."""
    return new_envelope(
        contract.ACK_TYPE,
        Acknowledgement(acknowledged_message_id=envelope.message_id, status=status, detail=detail),
        business_key=payload.subscription.subscription_id,
        occurred_at=now,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.message_id,
        source_instance=envelope.target.instance,
        target_instance=envelope.source.instance,
    )


def _short(detail: str) -> str:
    """``detail`` within what an acknowledgement carries (2,000 characters)."""
    return detail if len(detail) <= DETAIL_LIMIT else detail[: DETAIL_LIMIT - 1] + "…"


def _device_upsert(dialect_name: str) -> Any:
    """Insert a device, or update its description when its ``(head_end_system, nic_id)`` is known."""
    d = t.devices
    columns = ("head_end_system", "nic_id", "device_type", "manufacturer", "model", "created_at")
    statement = insert_for(dialect_name, d).values({name: bindparam(name) for name in columns})
    return statement.on_conflict_do_update(
        index_elements=[d.c.head_end_system, d.c.nic_id],
        set_={name: statement.excluded[name] for name in ("device_type", "manufacturer", "model")},
    )


_AVAILABILITY_COLUMNS = (
    "device_id",
    "program_code",
    "enrollment_id",
    "cis_account_id",
    "cis_service_point_id",
    "availability",
    "sequence",
    "updated_at",
)


def _availability_upsert(dialect_name: str, *, only_holder: bool = False) -> Any:
    """Write a device's availability in a program; with ``only_holder``, leave the row alone when another
    enrollment holds the device."""
    a = t.device_availability
    statement = insert_for(dialect_name, a).values({name: bindparam(name) for name in _AVAILABILITY_COLUMNS})
    return statement.on_conflict_do_update(
        index_elements=[a.c.device_id, a.c.program_code],
        set_={name: statement.excluded[name] for name in _AVAILABILITY_COLUMNS[2:]},
        where=(a.c.enrollment_id == bindparam("enrollment_id")) if only_holder else None,
    )


async def _upsert_devices(
    connection: AsyncConnection, devices: list[contract.SyncedDevice], now: datetime
) -> dict[tuple[str, str], int]:
    """Upsert the message's devices by ``(head_end_system, nic_id)``; their DERMS ids by key."""
    d = t.devices
    # Rows in key order: concurrent upserts of overlapping devices then lock them in the same order on
    # PostgreSQL and cannot deadlock.
    ordered = sorted(devices, key=lambda x: (x.head_end_system, x.nic_id))
    await connection.execute(
        frozen(connection.dialect, ("derms-device-upsert",), _device_upsert),
        [
            {
                "head_end_system": x.head_end_system,
                "nic_id": x.nic_id,
                "device_type": x.device_type,
                "manufacturer": x.manufacturer,
                "model": x.model,
                "created_at": now,
            }
            for x in ordered
        ],
    )
    rows = await connection.execute(
        select(d.c.device_id, d.c.head_end_system, d.c.nic_id).where(
            d.c.head_end_system.in_({x.head_end_system for x in devices}), d.c.nic_id.in_({x.nic_id for x in devices})
        )
    )
    wanted = {(x.head_end_system, x.nic_id) for x in devices}
    return {(r.head_end_system, r.nic_id): r.device_id for r in rows if (r.head_end_system, r.nic_id) in wanted}


async def _set_availability(
    connection: AsyncConnection,
    payload: contract.EnrollmentSync,
    device_ids: dict[tuple[str, str], int],
    sequence: int,
    now: datetime,
) -> tuple[list[int], list[str]]:
    """Write each device's availability in the program; returns the ids of the devices this sync made
    UNAVAILABLE, and the devices it left alone because another enrollment holds them."""
    a = t.device_availability
    enrollment_id = payload.subscription.subscription_id
    program = payload.subscription.program_code
    owners = dict(
        (
            await connection.execute(
                select(a.c.device_id, a.c.enrollment_id).where(
                    a.c.program_code == program, a.c.device_id.in_(list(device_ids.values()))
                )
            )
        )
        .tuples()
        .all()
    )

    def row(device: contract.SyncedDevice) -> dict[str, Any]:
        return {
            "device_id": device_ids[(device.head_end_system, device.nic_id)],
            "program_code": program,
            "enrollment_id": enrollment_id,
            "cis_account_id": payload.subscription.cis_account_id,
            "cis_service_point_id": payload.location.cis_service_point_id,
            "availability": device.availability.value,
            "sequence": sequence,
            "updated_at": now,
        }

    available = sorted(
        (row(x) for x in payload.devices if x.availability is contract.DeviceAvailability.AVAILABLE),
        key=lambda r: r["device_id"],
    )
    unavailable = sorted(
        (row(x) for x in payload.devices if x.availability is contract.DeviceAvailability.UNAVAILABLE),
        key=lambda r: r["device_id"],
    )
    if available:
        await connection.execute(
            frozen(connection.dialect, ("derms-availability-upsert",), _availability_upsert), available
        )
    held_elsewhere = {r["device_id"] for r in unavailable if owners.get(r["device_id"], enrollment_id) != enrollment_id}
    if unavailable:
        # Conditional on the holder: the row of a device another enrollment holds now stays as it is.
        await connection.execute(
            frozen(
                connection.dialect,
                ("derms-availability-upsert-if-holder",),
                lambda dialect: _availability_upsert(dialect, only_holder=True),
            ),
            unavailable,
        )
    made_unavailable = [r["device_id"] for r in unavailable if r["device_id"] not in held_elsewhere]
    keys = {device_id: f"{hes}:{nic}" for (hes, nic), device_id in device_ids.items()}
    skipped = [f"{keys[i]} (held by enrollment {owners[i]})" for i in sorted(held_elsewhere)]
    return made_unavailable, skipped


async def _release_reservations(
    connection: AsyncConnection, device_ids: list[int], program: str, reason: str, now: datetime
) -> tuple[int, set[str]]:
    """Release the reservations of ``device_ids`` for the program's events not started at ``now``;
    returns how many were released and the events they belonged to."""
    r, e = t.reservations, t.program_events
    await _lock_reservations(connection)
    live = (
        await connection.execute(
            select(r.c.record_id, r.c.device_id, r.c.event_id, e.c.start_at)
            .join(e, e.c.event_id == r.c.event_id)
            .where(
                r.c.device_id.in_(device_ids),
                r.c.status == "RESERVED",
                e.c.program_code == program,
                e.c.status.in_(LIVE_EVENT_STATUSES),
            )
        )
    ).all()
    # The domain rule names reservations by position here: record ids are strings, its ids are integers.
    chosen = reservations_to_release(
        device_ids, ((index, row.device_id, row.start_at) for index, row in enumerate(live)), now
    )
    released = [live[index] for index in chosen]
    if released:
        await connection.execute(
            update(r)
            .where(r.c.record_id.in_([x.record_id for x in released]), r.c.status == "RESERVED")
            .values(status="RELEASED", released_at=now, release_reason=reason)
        )
    return len(released), {x.event_id for x in released}


async def apply_enrollment_sync(
    connection: AsyncConnection,
    envelope: Envelope,
    payload: contract.EnrollmentSync,
    *,
    clock: Clock,
    ports: DermsPorts,
    files: ReservationFiles,
) -> dict[str, Any]:
    """Apply one enrollment sync (see the module docstring); the answer the bridge records."""
    enrollment_id = payload.subscription.subscription_id
    if envelope.sequence is None or envelope.business_key != enrollment_id:
        raise Invalid(
            "invalid-envelope",
            "An enrollment sync must be ordered by its enrollment",
            "Send the enrollment id as business_key (equal to subscription.subscription_id) and its sync "
            "sequence as sequence; fix the sender, then replay.",
            errors=[
                FieldError(field="body.sequence", message="required: the enrollment's sync sequence"),
                FieldError(field="body.business_key", message="must equal payload.subscription.subscription_id"),
            ],
        )
    sequence = envelope.sequence
    now = clock.now()
    await _check_prerequisites(connection, payload)
    await _lock_enrollment(connection, enrollment_id)
    change = SyncChange(payload.change.value)
    result: dict[str, Any] = {"enrollment_id": enrollment_id, "sequence": sequence, "change": change.value}

    try:
        check_sync_devices(
            change,
            [SyncedDevice(x.head_end_system, x.nic_id, Availability(x.availability.value)) for x in payload.devices],
        )
    except SyncDevicesError as refused:
        await _log_and_acknowledge(connection, envelope, payload, sequence, AckStatus.REJECTED, str(refused), now)
        return result | {"result": AckStatus.REJECTED.value, "detail": str(refused)}

    applied = await _applied_sequence(connection, enrollment_id)
    if decide_sync(applied, sequence) is SyncDecision.STALE:
        detail = (
            f"sequence {sequence} is not newer than sequence {applied}, already applied for enrollment {enrollment_id}"
        )
        await _log_and_acknowledge(connection, envelope, payload, sequence, AckStatus.STALE, detail, now)
        return result | {"result": AckStatus.STALE.value, "detail": detail}

    device_ids = await _upsert_devices(connection, list(payload.devices), now)
    made_unavailable, skipped = await _set_availability(connection, payload, device_ids, sequence, now)
    released = 0
    events: set[str] = set()
    if made_unavailable:
        reason = f"device unavailable: {change.value} (enrollment {enrollment_id})"
        released, events = await _release_reservations(
            connection, made_unavailable, payload.subscription.program_code, reason, now
        )
        if events:
            await queue_reservation_updates(connection, events, now, files)
    # The enrollment's known state first: an answer not applied yet takes it from there when it comes.
    await note_syncs(connection, [(enrollment_id, _ENROLLMENT_STATE_AFTER[change], sequence)], now)
    await connection.execute(
        update(t.enrollment_requests)
        .where(t.enrollment_requests.c.enrollment_id == enrollment_id)
        .values(state=_ENROLLMENT_STATE_AFTER[change], updated_at=now)
    )
    for listener in ports.enrollment_states_changed:
        await listener(connection, [enrollment_id], now)
    available = sum(1 for x in payload.devices if x.availability is contract.DeviceAvailability.AVAILABLE)
    detail = (
        f"{available} device(s) available, {len(payload.devices) - available} unavailable in "
        f"{payload.subscription.program_code}; {released} reservation(s) released"
    )
    if skipped:
        detail += "; left as they are, another enrollment holds them: " + ", ".join(skipped)
    await _log_and_acknowledge(connection, envelope, payload, sequence, AckStatus.APPLIED, detail, now)
    return result | {
        "result": AckStatus.APPLIED.value,
        "detail": detail,
        "released_reservations": released,
        "updated_events": sorted(events),
    }


async def apply_enrollment_syncs(
    connection: AsyncConnection,
    messages: Sequence[tuple[Envelope, contract.EnrollmentSync]],
    *,
    clock: Clock,
    ports: DermsPorts,
) -> list[dict[str, Any]]:
    """:func:`apply_enrollment_sync` for a run of syncs, set-based, in the common case: ENROLLED syncs of
    distinct enrollments and devices, every prerequisite present, none stale. Anything else (a sync to
    refuse, park or record as stale, an unenrollment or replacement, which may release reservations) is
    declined (:class:`NotBatchable`) and applied one by one. The effect and the answers are those of
    applying the syncs one by one."""
    now = clock.now()
    enrollments = [p.subscription.subscription_id for _, p in messages]
    keys = [(x.head_end_system, x.nic_id) for _, p in messages for x in p.devices]
    if len(set(enrollments)) != len(enrollments) or len(set(keys)) != len(keys):
        raise NotBatchable("an enrollment or a device appears twice in the run")
    for envelope, payload in messages:
        if (
            envelope.sequence is None
            or envelope.business_key != payload.subscription.subscription_id
            or payload.change is not contract.SyncChange.ENROLLED
            or not payload.devices
            or any(x.availability is not contract.DeviceAvailability.AVAILABLE for x in payload.devices)
        ):
            raise NotBatchable("not an ordered ENROLLED sync of available devices")
    await _check_all_prerequisites(connection, [p for _, p in messages])
    for enrollment_id in sorted(enrollments):
        await _lock_enrollment(connection, enrollment_id)
    applied = await _applied_sequences(connection, enrollments)
    for envelope, payload in messages:
        assert envelope.sequence is not None  # checked above
        if decide_sync(applied.get(payload.subscription.subscription_id), envelope.sequence) is SyncDecision.STALE:
            raise NotBatchable("a stale sync")

    await connection.execute(
        frozen(connection.dialect, ("derms-device-upsert",), _device_upsert),
        [
            {
                "head_end_system": x.head_end_system,
                "nic_id": x.nic_id,
                "device_type": x.device_type,
                "manufacturer": x.manufacturer,
                "model": x.model,
                "created_at": now,
            }
            for x in sorted((x for _, p in messages for x in p.devices), key=lambda x: (x.head_end_system, x.nic_id))
        ],
    )
    d = t.devices
    device_ids = {
        (r.head_end_system, r.nic_id): r.device_id
        for r in await connection.execute(
            select(d.c.device_id, d.c.head_end_system, d.c.nic_id).where(
                tuple_(d.c.head_end_system, d.c.nic_id).in_(sorted(keys))
            )
        )
    }
    await connection.execute(
        frozen(connection.dialect, ("derms-availability-upsert",), _availability_upsert),
        sorted(
            (
                {
                    "device_id": device_ids[(x.head_end_system, x.nic_id)],
                    "program_code": p.subscription.program_code,
                    "enrollment_id": p.subscription.subscription_id,
                    "cis_account_id": p.subscription.cis_account_id,
                    "cis_service_point_id": p.location.cis_service_point_id,
                    "availability": x.availability.value,
                    "sequence": envelope.sequence,
                    "updated_at": now,
                }
                for envelope, p in messages
                for x in p.devices
            ),
            key=lambda row: (row["device_id"], row["program_code"]),
        ),
    )
    state = _ENROLLMENT_STATE_AFTER[SyncChange.ENROLLED]
    await note_syncs(
        connection,
        [(p.subscription.subscription_id, state, e.sequence) for e, p in messages if e.sequence is not None],
        now,
    )
    r = t.enrollment_requests
    await connection.execute(
        update(r)
        .where(r.c.enrollment_id == bindparam("b_enrollment_id"))
        .values(state=_ENROLLMENT_STATE_AFTER[SyncChange.ENROLLED], updated_at=now),
        [{"b_enrollment_id": enrollment_id} for enrollment_id in enrollments],
    )
    for listener in ports.enrollment_states_changed:
        await listener(connection, enrollments, now)
    logs: list[dict[str, Any]] = []
    acks: list[Envelope] = []
    results: list[dict[str, Any]] = []
    for envelope, payload in messages:
        detail = _short(
            f"{len(payload.devices)} device(s) available, 0 unavailable in {payload.subscription.program_code}; "
            "0 reservation(s) released"
        )
        enrollment_id = payload.subscription.subscription_id
        logs.append(
            {
                "message_id": envelope.message_id,
                "enrollment_id": enrollment_id,
                "sequence": envelope.sequence,
                "change": payload.change.value,
                "result": AckStatus.APPLIED.value,
                "detail": detail,
                "at": now,
            }
        )
        acks.append(_ack(envelope, payload, AckStatus.APPLIED, detail, now))
        results.append(
            {
                "enrollment_id": enrollment_id,
                "sequence": envelope.sequence,
                "change": payload.change.value,
                "result": AckStatus.APPLIED.value,
                "detail": detail,
                "released_reservations": 0,
                "updated_events": [],
            }
        )
    await connection.execute(t.enrollment_sync_log.insert(), logs)
    await write_outbox(connection, t.outbox, acks)
    return results


async def _check_all_prerequisites(connection: AsyncConnection, payloads: Sequence[contract.EnrollmentSync]) -> None:
    """Decline the run (one by one then parks what must wait) unless every sync's customer, location and
    program are in the DERMS, as :func:`_check_prerequisites` would find them."""
    accounts = sorted({p.subscription.cis_account_id for p in payloads})
    points = sorted({p.location.cis_service_point_id for p in payloads})
    programs = sorted({p.subscription.program_code for p in payloads})
    c, loc, prog = t.customers, t.locations, t.programs
    found_accounts = set(
        (await connection.execute(select(c.c.cis_account_id).where(c.c.cis_account_id.in_(accounts)))).scalars()
    )
    found_points = {
        row.cis_service_point_id: (row.cis_account_id, row.cis_premise_id)
        for row in await connection.execute(
            select(loc.c.cis_service_point_id, loc.c.cis_account_id, loc.c.cis_premise_id).where(
                loc.c.cis_service_point_id.in_(points)
            )
        )
    }
    found_programs = set(
        (await connection.execute(select(prog.c.program_code).where(prog.c.program_code.in_(programs)))).scalars()
    )
    for p in payloads:
        account = p.subscription.cis_account_id
        if (
            account not in found_accounts
            or found_points.get(p.location.cis_service_point_id) != (account, p.location.cis_premise_id)
            or p.subscription.program_code not in found_programs
        ):
            raise NotBatchable("a prerequisite is missing")


async def _applied_sequences(connection: AsyncConnection, enrollment_ids: Sequence[str]) -> dict[str, int]:
    """:func:`_applied_sequence` of each of ``enrollment_ids`` that has one, in two statements."""
    log, a = t.enrollment_sync_log, t.device_availability
    found: dict[str, int] = {}
    for statement in (
        select(log.c.enrollment_id, func.max(log.c.sequence))
        .where(log.c.enrollment_id.in_(enrollment_ids), log.c.result == "APPLIED")
        .group_by(log.c.enrollment_id),
        select(a.c.enrollment_id, func.max(a.c.sequence))
        .where(a.c.enrollment_id.in_(enrollment_ids))
        .group_by(a.c.enrollment_id),
    ):
        for enrollment_id, sequence in (await connection.execute(statement)).tuples():
            if sequence is not None:
                found[enrollment_id] = max(int(sequence), found.get(enrollment_id, int(sequence)))
    return found
