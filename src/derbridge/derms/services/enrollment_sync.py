"""F3 · enrollment-sync, the DERMS's side: apply Asset Hub's enrollment changes to device availability,
release the reservations of devices that became unavailable, and acknowledge.

The handler of ``enrollment-sync.v1`` (:mod:`derbridge.derms.handlers.enrollment_sync`) runs inside the
inbox transaction and takes the steps below (their statements are in
:mod:`derbridge.derms.adapters.enrollment_sync`), so the availability change, the released reservations,
their F5 updates, the log entry and the acknowledgement commit together or not at all. In order:

1. **Prerequisites (P0).** The customer (``customers`` by ``cis_account_id``) and its location
   (``locations`` by ``cis_service_point_id``, on that account and premise) must be here, else the message
   is parked with ``wake_on = cis-account:<id>`` (:func:`check_prerequisites`,
   :func:`cis_account_conditions`): whoever runs a CIS import into the DERMS and is wired with the bridge
   wakes it after the import loads that account (the DERMS does not write the bridge's database). A program
   the DERMS does not know (its program sync has not arrived yet) parks it with ``program:<code>`` (the
   bridge wakes it when it delivers that program's sync; the slow park backoff retries it meanwhile).
2. **Consistency.** A device list that does not fit its change
   (:func:`~derbridge.derms.domain.availability.check_sync_devices`) is refused: logged REJECTED and
   acknowledged REJECTED with the reason, which Asset Hub shows as FAILED.
3. **Ordering.** Syncs of one enrollment are serialised (a transaction-scoped advisory lock on PostgreSQL;
   SQLite has one writer) and :func:`~derbridge.derms.domain.availability.decide_sync` compares the
   envelope's ``sequence`` with the highest one applied for the enrollment (``enrollment_sync_log`` and
   ``device_availability``). A stale one is logged STALE and acknowledged STALE, and changes nothing.
4. **Apply** (:func:`apply_devices`). Devices are upserted by ``(head_end_system, nic_id)`` and their
   ``device_availability`` in the program set, all devices of the message in the same transaction. An
   AVAILABLE device is taken by this enrollment; an UNAVAILABLE one changes only if no other enrollment
   holds it now, so that a late unenrollment of an earlier enrollment cannot take the device from the
   enrollment that has it today.
5. **Releases.** A device made UNAVAILABLE loses its reservations of the program's events not yet started
   (:func:`~derbridge.derms.domain.availability.reservations_to_release`); each event touched gets an F5
   update (:func:`~derbridge.derms.services.event_messages.queue_reservation_updates`).
6. The enrollment's known state (:mod:`~derbridge.derms.adapters.enrollment_states`, revision = the sync's
   sequence) and the enrollment request the DERMS recorded for F1 take the new state (ACTIVE or
   UNENROLLED, :func:`~derbridge.derms.domain.availability.enrollment_state_after`; :func:`note_states`),
   which the edge shows to the aggregator (and tells its subscribers, through the port
   :attr:`~derbridge.derms.ports.DermsPorts.enrollment_states_changed`); the sync is logged APPLIED and
   acknowledged (:func:`log_and_acknowledge`). A sync that overtook Asset Hub's F1 answer finds no answered
   request to update: the answer, when it comes, takes the state recorded here instead of its PENDING.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import enrollment_sync as contract
from derbridge.contracts.common import Acknowledgement, AckStatus
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import enrollment_sync as db
from derbridge.derms.adapters import tables as t
from derbridge.derms.adapters.enrollment_states import note_syncs
from derbridge.derms.domain.availability import reservations_to_release
from derbridge.derms.services.event_messages import ReservationFiles, queue_reservation_updates
from derbridge.errors import MissingPrerequisite
from derbridge.infra.outbox import write_outbox

DETAIL_LIMIT: Final = 2000
"""The longest detail an acknowledgement carries (``Acknowledgement.detail``)."""


def cis_account_conditions(account_ids: Iterable[str]) -> set[str]:
    """The conditions (``wake_on``) an enrollment sync waits on until these CIS accounts reach the DERMS.

    After a CIS import, the caller wired with the bridge wakes the messages parked for the accounts the
    DERMS loaded (``ImportReport.loaded_account_ids["derms"]``) with them — ``Tracker.wake`` or
    ``POST /bridge/v1/wake`` — so parked syncs are delivered again at once, without an operator.
    """
    return {_cis_account_condition(account) for account in account_ids}


def _cis_account_condition(account: str) -> str:
    return f"cis-account:{account}"


async def check_prerequisites(connection: AsyncConnection, payload: contract.EnrollmentSync) -> None:
    """Raise :class:`~derbridge.errors.MissingPrerequisite` (the message parks) unless the sync's customer,
    location (on that account and premise) and program are in the DERMS."""
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


async def prerequisites_present(connection: AsyncConnection, payloads: Sequence[contract.EnrollmentSync]) -> bool:
    """True when every sync's customer, location and program are in the DERMS, as
    :func:`check_prerequisites` would find them (three reads for the whole run)."""
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
    return all(
        p.subscription.cis_account_id in found_accounts
        and found_points.get(p.location.cis_service_point_id)
        == (p.subscription.cis_account_id, p.location.cis_premise_id)
        and p.subscription.program_code in found_programs
        for p in payloads
    )


@dataclass(frozen=True)
class AppliedDevices:
    """What :func:`apply_devices` changed."""

    released: int = 0
    """Reservations released (devices made UNAVAILABLE, events not started)."""
    events: set[str] = field(default_factory=set)
    """The events those reservations belonged to (each was sent an F5 update)."""
    skipped: list[str] = field(default_factory=list)
    """Devices left as they are because another enrollment holds them (``hes:nic (held by enrollment …)``)."""


def _availability_row(
    payload: contract.EnrollmentSync, device_id: int, device: contract.SyncedDevice, sequence: int, now: datetime
) -> dict[str, Any]:
    return {
        "device_id": device_id,
        "program_code": payload.subscription.program_code,
        "enrollment_id": payload.subscription.subscription_id,
        "cis_account_id": payload.subscription.cis_account_id,
        "cis_service_point_id": payload.location.cis_service_point_id,
        "availability": device.availability.value,
        "sequence": sequence,
        "updated_at": now,
    }


async def apply_devices(
    connection: AsyncConnection,
    payload: contract.EnrollmentSync,
    sequence: int,
    now: datetime,
    files: ReservationFiles,
) -> AppliedDevices:
    """Upsert the sync's devices, write their availability in the program (an UNAVAILABLE one only where
    this enrollment holds it), and release the reservations of the devices made UNAVAILABLE for events not
    started at ``now``, telling Asset Hub each event's new list (F5 updates)."""
    enrollment_id = payload.subscription.subscription_id
    program = payload.subscription.program_code
    await db.upsert_devices(connection, payload.devices, now)
    ids = await db.device_ids(connection, [(x.head_end_system, x.nic_id) for x in payload.devices])
    owners = await db.availability_holders(connection, program, list(ids.values()))

    def rows(availability: contract.DeviceAvailability) -> list[dict[str, Any]]:
        return sorted(
            (
                _availability_row(payload, ids[(x.head_end_system, x.nic_id)], x, sequence, now)
                for x in payload.devices
                if x.availability is availability
            ),
            key=lambda r: r["device_id"],
        )

    available = rows(contract.DeviceAvailability.AVAILABLE)
    unavailable = rows(contract.DeviceAvailability.UNAVAILABLE)
    if available:
        await db.write_availability(connection, available)
    held_elsewhere = {r["device_id"] for r in unavailable if owners.get(r["device_id"], enrollment_id) != enrollment_id}
    if unavailable:
        # Conditional on the holder: the row of a device another enrollment holds now stays as it is.
        await db.write_availability(connection, unavailable, only_holder=True)
    made_unavailable = [r["device_id"] for r in unavailable if r["device_id"] not in held_elsewhere]
    keys = {device_id: f"{hes}:{nic}" for (hes, nic), device_id in ids.items()}
    skipped = [f"{keys[i]} (held by enrollment {owners[i]})" for i in sorted(held_elsewhere)]
    if not made_unavailable:
        return AppliedDevices(skipped=skipped)
    reason = f"device unavailable: {payload.change.value} (enrollment {enrollment_id})"
    await db.lock_reservations(connection)
    live = await db.live_reservations(connection, made_unavailable, program)
    # The domain rule names reservations by position here: record ids are strings, its ids are integers.
    chosen = reservations_to_release(
        made_unavailable, ((index, row.device_id, row.start_at) for index, row in enumerate(live)), now
    )
    released = [live[index] for index in chosen]
    if released:
        await db.release_reservations(connection, [x.record_id for x in released], reason, now)
    events = {x.event_id for x in released}
    if events:
        await queue_reservation_updates(connection, events, now, files)
    return AppliedDevices(released=len(released), events=events, skipped=skipped)


async def apply_available_devices(
    connection: AsyncConnection, messages: Sequence[tuple[Envelope, contract.EnrollmentSync]], now: datetime
) -> None:
    """:func:`apply_devices` for a run of ENROLLED syncs of distinct enrollments and devices, every device
    AVAILABLE and every sync ordered (``sequence`` set): one device upsert, one availability upsert."""
    devices = [x for _, p in messages for x in p.devices]
    await db.upsert_devices(connection, devices, now)
    ids = await db.device_ids(connection, [(x.head_end_system, x.nic_id) for x in devices])
    rows = []
    for envelope, payload in messages:
        assert envelope.sequence is not None  # the caller checked
        rows += [
            _availability_row(payload, ids[(x.head_end_system, x.nic_id)], x, envelope.sequence, now)
            for x in payload.devices
        ]
    await db.write_availability(connection, sorted(rows, key=lambda row: (row["device_id"], row["program_code"])))


async def note_states(connection: AsyncConnection, applied: Sequence[tuple[str, str, int]], now: datetime) -> None:
    """Each applied sync's ``(enrollment_id, state, sequence)``: the enrollment's known state first (an
    answer not applied yet takes it from there when it comes), then its requests recorded for F1."""
    await note_syncs(connection, applied, now)
    await db.set_request_states(connection, [(enrollment_id, state) for enrollment_id, state, _ in applied], now)


def short(detail: str) -> str:
    """``detail`` within what an acknowledgement carries (2,000 characters)."""
    return detail if len(detail) <= DETAIL_LIMIT else detail[: DETAIL_LIMIT - 1] + "…"


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


@dataclass(frozen=True)
class SyncResult:
    """How one sync ended, to log and acknowledge."""

    envelope: Envelope
    payload: contract.EnrollmentSync
    sequence: int
    status: AckStatus
    detail: str


async def log_and_acknowledge(connection: AsyncConnection, results: Sequence[SyncResult], now: datetime) -> None:
    """Log each sync's result in ``enrollment_sync_log`` and write its ``enrollment-sync-ack.v1`` (details
    cut to :data:`DETAIL_LIMIT`)."""
    await db.log_syncs(
        connection,
        [
            {
                "message_id": r.envelope.message_id,
                "enrollment_id": r.payload.subscription.subscription_id,
                "sequence": r.sequence,
                "change": r.payload.change.value,
                "result": r.status.value,
                "detail": short(r.detail),
                "at": now,
            }
            for r in results
        ],
    )
    await write_outbox(
        connection, t.outbox, [_ack(r.envelope, r.payload, r.status, short(r.detail), now) for r in results]
    )
