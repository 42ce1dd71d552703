"""F3 · enrollment-sync, the DERMS's inbox: apply Asset Hub's enrollment changes, one sync at a time or a
run of plain ENROLLED syncs set-based. The steps, and why in this order, are
:mod:`derbridge.derms.services.enrollment_sync`'s; the rules are :mod:`derbridge.derms.domain.availability`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import enrollment_sync as contract
from derbridge.contracts.common import AckStatus
from derbridge.contracts.envelope import Envelope
from derbridge.derms.adapters import enrollment_sync as db
from derbridge.derms.domain.availability import (
    Availability,
    SyncChange,
    SyncDecision,
    SyncDevicesError,
    SyncedDevice,
    check_sync_devices,
    decide_sync,
    enrollment_state_after,
)
from derbridge.derms.ports import DermsPorts
from derbridge.derms.services.enrollment_sync import (
    SyncResult,
    apply_available_devices,
    apply_devices,
    check_prerequisites,
    log_and_acknowledge,
    note_states,
    prerequisites_present,
    short,
)
from derbridge.derms.services.event_messages import ReservationFiles
from derbridge.errors import FieldError, Invalid
from derbridge.infra.clock import Clock
from derbridge.infra.inbound import NotBatchable


async def apply_enrollment_sync(
    connection: AsyncConnection,
    envelope: Envelope,
    payload: contract.EnrollmentSync,
    *,
    clock: Clock,
    ports: DermsPorts,
    files: ReservationFiles,
) -> dict[str, Any]:
    """Apply one enrollment sync (see :mod:`derbridge.derms.services.enrollment_sync`); the answer the
    bridge records."""
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
    await check_prerequisites(connection, payload)
    await db.lock_enrollment(connection, enrollment_id)
    change = SyncChange(payload.change.value)
    result: dict[str, Any] = {"enrollment_id": enrollment_id, "sequence": sequence, "change": change.value}

    try:
        check_sync_devices(
            change,
            [SyncedDevice(x.head_end_system, x.nic_id, Availability(x.availability.value)) for x in payload.devices],
        )
    except SyncDevicesError as refused:
        await log_and_acknowledge(
            connection, [SyncResult(envelope, payload, sequence, AckStatus.REJECTED, str(refused))], now
        )
        return result | {"result": AckStatus.REJECTED.value, "detail": str(refused)}

    applied = await db.applied_sequence(connection, enrollment_id)
    if decide_sync(applied, sequence) is SyncDecision.STALE:
        detail = (
            f"sequence {sequence} is not newer than sequence {applied}, already applied for enrollment {enrollment_id}"
        )
        await log_and_acknowledge(connection, [SyncResult(envelope, payload, sequence, AckStatus.STALE, detail)], now)
        return result | {"result": AckStatus.STALE.value, "detail": detail}

    done = await apply_devices(connection, payload, sequence, now, files)
    await note_states(connection, [(enrollment_id, enrollment_state_after(change), sequence)], now)
    for listener in ports.enrollment_states_changed:
        await listener(connection, [enrollment_id], now)
    available = sum(1 for x in payload.devices if x.availability is contract.DeviceAvailability.AVAILABLE)
    detail = (
        f"{available} device(s) available, {len(payload.devices) - available} unavailable in "
        f"{payload.subscription.program_code}; {done.released} reservation(s) released"
    )
    if done.skipped:
        detail += "; left as they are, another enrollment holds them: " + ", ".join(done.skipped)
    await log_and_acknowledge(connection, [SyncResult(envelope, payload, sequence, AckStatus.APPLIED, detail)], now)
    return result | {
        "result": AckStatus.APPLIED.value,
        "detail": detail,
        "released_reservations": done.released,
        "updated_events": sorted(done.events),
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
    sequences: list[int] = []
    for envelope, payload in messages:
        if (
            envelope.sequence is None
            or envelope.business_key != payload.subscription.subscription_id
            or payload.change is not contract.SyncChange.ENROLLED
            or not payload.devices
            or any(x.availability is not contract.DeviceAvailability.AVAILABLE for x in payload.devices)
        ):
            raise NotBatchable("not an ordered ENROLLED sync of available devices")
        sequences.append(envelope.sequence)
    if not await prerequisites_present(connection, [p for _, p in messages]):
        raise NotBatchable("a prerequisite is missing")  # one by one then parks what must wait
    for enrollment_id in sorted(enrollments):
        await db.lock_enrollment(connection, enrollment_id)
    applied = await db.applied_sequences(connection, enrollments)
    for enrollment_id, sequence in zip(enrollments, sequences, strict=True):
        if decide_sync(applied.get(enrollment_id), sequence) is SyncDecision.STALE:
            raise NotBatchable("a stale sync")

    await apply_available_devices(connection, messages, now)
    state = enrollment_state_after(SyncChange.ENROLLED)
    await note_states(
        connection,
        [(enrollment_id, state, sequence) for enrollment_id, sequence in zip(enrollments, sequences, strict=True)],
        now,
    )
    for listener in ports.enrollment_states_changed:
        await listener(connection, enrollments, now)
    done: list[SyncResult] = []
    results: list[dict[str, Any]] = []
    for (envelope, payload), sequence in zip(messages, sequences, strict=True):
        detail = short(
            f"{len(payload.devices)} device(s) available, 0 unavailable in {payload.subscription.program_code}; "
            "0 reservation(s) released"
        )
        done.append(SyncResult(envelope, payload, sequence, AckStatus.APPLIED, detail))
        results.append(
            {
                "enrollment_id": payload.subscription.subscription_id,
                "sequence": sequence,
                "change": payload.change.value,
                "result": AckStatus.APPLIED.value,
                "detail": detail,
                "released_reservations": 0,
                "updated_events": [],
            }
        )
    await log_and_acknowledge(connection, done, now)
    return results
