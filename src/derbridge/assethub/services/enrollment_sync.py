"""F3 · enrollment-sync, Asset Hub's side: tell the DERMS when an enrollment becomes ACTIVE, is unenrolled
or has its device replaced, and record what the DERMS made of it.

- :func:`queue_enrollment_sync` writes one ``enrollment-sync.v1`` per enrollment into the outbox, inside
  the caller's transaction (the one making the lifecycle change), and records it in ``enrollment_syncs``
  (state SENT). The envelope's ``sequence`` is the enrollment's ``sync_sequence``, bumped by one per sync,
  so the DERMS can ignore a change older than one it applied.
- :func:`unenroll` and :func:`replace_device` are the operators' and agents' changes of an ACTIVE
  enrollment (API: ``POST /assethub/v1/enrollments/{id}/unenroll`` and ``…/replace-device``; CLI:
  ``derbridge assethub unenroll`` and ``replace-device``). Each is one transaction: the change, its kept
  transition, and its sync.
- The handler of ``enrollment-sync-ack.v1`` (:mod:`derbridge.assethub.handlers.enrollment_sync`) sets
  the sync (and the enrollment's ``sync_state``) to APPLIED, STALE or FAILED with the DERMS's detail.

What a sync says — its subscription window and its device list — is decided by the pure rules of
:mod:`derbridge.assethub.domain.enrollment_sync`. Every sync carries the **whole** device list of the
enrollment with the availability each device must have afterwards, not only the devices the change touched: a
replaced device is listed UNAVAILABLE in every later sync. Each message is then a complete statement of the
enrollment's devices, so the DERMS rule "the highest sequence wins, older ones are ignored" is right even when
a middle message arrives late: an UNENROLLED that overtakes a DEVICE_REPLACED still makes the replaced device
UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Row, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.enrollment_syncs import read_sync_enrollments, read_sync_history
from derbridge.assethub.domain.enrollment import (
    NON_TERMINAL_STATES,
    DeviceRef,
    EnrollmentState,
    IllegalTransition,
    Transition,
    plan_device_replacement,
    plan_transition,
)
from derbridge.assethub.domain.enrollment_sync import (
    STATE_FOR_CHANGE,
    SyncState,
    premise_zone,
    subscription_window,
    synced_devices,
)
from derbridge.assethub.domain.enrollment_validation import (
    ActiveEnrollment,
    EnrollmentFacts,
    EnrollmentRequest,
    EnrollmentRequestDevice,
    RejectionReason,
    validate_enrollment_request,
)
from derbridge.assethub.domain.program import DeviceType, Program, ProgramRules, ProgramStatus
from derbridge.contracts import enrollment_sync as contract
from derbridge.contracts.enrollment_sync import SubscriptionStatus, SyncChange
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.errors import Conflict, FieldError, Invalid, not_found
from derbridge.infra.ids import new_ids
from derbridge.infra.outbox import write_outbox
from derbridge.infra.upsert import insert_for

HEAD_END_PATTERN: Final = r"^[A-Z0-9][A-Z0-9_-]{0,63}$"
"""What the message contracts accept as a head-end system name (``contracts.common.HeadEnd``)."""
NO_NUL_TEXT: Final = r"^[^\x00]*$"

_CHUNK: Final = 500
"""Enrollment ids per IN list: far below every driver's bound-parameter limit, few round trips."""


# --- what operators send ---------------------------------------------------------------------------


class DeviceKey(BaseModel):
    """A device as messages name it: its head-end system and its id there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    head_end_system: str = Field(pattern=HEAD_END_PATTERN, examples=["ECOBEE"])
    nic_id: str = Field(min_length=1, max_length=64, pattern=NO_NUL_TEXT)

    @property
    def ref(self) -> DeviceRef:
        """The domain's device identity."""
        return DeviceRef(head_end_system=self.head_end_system, nic_id=self.nic_id)


class ReplacementDevice(DeviceKey):
    """The device that replaces an enrollment's device, with what Asset Hub records about it."""

    device_type: DeviceType
    manufacturer: str = Field(min_length=1, max_length=100, pattern=NO_NUL_TEXT)
    model: str = Field(min_length=1, max_length=100, pattern=NO_NUL_TEXT)
    serial_no: str = Field(min_length=1, max_length=100, pattern=NO_NUL_TEXT)

    @field_validator("manufacturer", "model", "serial_no")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


@dataclass(frozen=True, slots=True)
class QueuedSync:
    """One sync written to the outbox."""

    enrollment_id: str
    sync_id: str
    message_id: str
    sequence: int
    change: SyncChange


@dataclass(frozen=True, slots=True)
class EnrollmentChange:
    """The result of :func:`unenroll` or :func:`replace_device`: the enrollment's state after the change
    and the sync that tells the DERMS (SENT until the DERMS acknowledges it)."""

    enrollment_id: str
    state: EnrollmentState
    change: SyncChange
    at: datetime
    sync: QueuedSync


# --- queueing syncs ----------------------------------------------------------------------------------


def chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    """``values`` in slices of at most 500, one ``IN (…)`` list each."""
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


async def _queue_syncs(
    connection: AsyncConnection,
    enrollment_ids: Sequence[str],
    change: SyncChange,
    now: datetime,
    old_device_id: int | None,
    new_device_id: int | None,
) -> list[QueuedSync]:
    if change is SyncChange.DEVICE_REPLACED:
        if old_device_id is None or new_device_id is None or old_device_id == new_device_id:
            raise ValueError("a DEVICE_REPLACED sync needs old_device_id and a different new_device_id")
    elif old_device_id is not None or new_device_id is not None:
        raise ValueError(f"old_device_id and new_device_id belong to DEVICE_REPLACED, not {change.value}")
    ids = list(dict.fromkeys(enrollment_ids))
    e = t.enrollments
    queued: list[QueuedSync] = []
    for chunk in chunks(ids):
        # The increment takes the enrollments' row locks first (PostgreSQL): two syncs of one enrollment
        # in concurrent transactions get distinct sequences, in the order their outbox rows commit.
        await connection.execute(
            update(e)
            .where(e.c.enrollment_id.in_(chunk))
            .values(sync_sequence=e.c.sync_sequence + 1, sync_state=SyncState.SENT.value, sync_detail=None)
        )
        enrollments = await read_sync_enrollments(connection, chunk)
        unknown = [i for i in chunk if i not in enrollments]
        if unknown:
            raise ValueError(f"no enrollment has the id {unknown[0]!r} ({len(unknown)} unknown)")
        devices, activated, unenrolled = await read_sync_history(
            connection, chunk, unenrolled_too=change is SyncChange.UNENROLLED
        )

        envelopes: list[Envelope] = []
        sync_rows: list[dict[str, Any]] = []
        # Per chunk, not per enrollment: the zones and day boundaries of a few divisions and program dates.
        zones: dict[str | None, ZoneInfo | None] = {}
        for enrollment_id, sync_id in zip(chunk, new_ids(len(chunk)), strict=True):
            row = enrollments[enrollment_id]
            expected = STATE_FOR_CHANGE[change]
            if row.state != expected.value:
                raise ValueError(
                    f"enrollment {enrollment_id} is {row.state}: "
                    f"a {change.value} sync is sent for a {expected.value} enrollment"
                )
            if row.division is None:
                raise ValueError(f"enrollment {enrollment_id}: premise {row.cis_premise_id!r} is not in Asset Hub")
            start_at, end_at = subscription_window(
                change,
                row.start_date,
                row.end_date,
                zones[row.time_zone]
                if row.time_zone in zones
                else zones.setdefault(row.time_zone, premise_zone(row.time_zone)),
                activated.get(enrollment_id),
                unenrolled.get(enrollment_id),
                now,
            )
            payload = contract.EnrollmentSync(
                sync_id=sync_id,
                change=change,
                # Asset Hub keeps the CIS person as the contact: its id is the contact id.
                contact=contract.Contact(contact_id=row.cis_person_id, cis_person_id=row.cis_person_id),
                subscription=contract.Subscription(
                    subscription_id=enrollment_id,
                    cis_account_id=row.cis_account_id,
                    program_code=row.program_code,
                    status=SubscriptionStatus.INACTIVE
                    if change is SyncChange.UNENROLLED
                    else SubscriptionStatus.ACTIVE,
                    start_at=start_at,
                    end_at=end_at,
                ),
                location=contract.SyncLocation(
                    division=row.division,
                    cis_premise_id=row.cis_premise_id,
                    cis_service_point_id=row.cis_service_point_id,
                ),
                devices=synced_devices(enrollment_id, change, devices[enrollment_id], old_device_id, new_device_id),
            )
            envelope = new_envelope(
                contract.TYPE,
                payload,
                business_key=enrollment_id,
                occurred_at=now,
                correlation_id=sync_id,
                sequence=row.sync_sequence,
            )
            envelopes.append(envelope)
            sync_rows.append(
                {
                    "sync_id": sync_id,
                    "enrollment_id": enrollment_id,
                    "message_id": envelope.message_id,
                    "sequence": row.sync_sequence,
                    "change": change.value,
                    "state": SyncState.SENT.value,
                    "detail": None,
                    "sent_at": now,
                    "acknowledged_at": None,
                }
            )
            queued.append(QueuedSync(enrollment_id, sync_id, envelope.message_id, row.sync_sequence, change))
        await connection.execute(t.enrollment_syncs.insert(), sync_rows)
        await write_outbox(connection, t.outbox, envelopes)
    return queued


async def queue_enrollment_sync(
    connection: AsyncConnection,
    enrollment_ids: Sequence[str],
    change: SyncChange,
    now: datetime,
    *,
    old_device_id: int | None = None,
    new_device_id: int | None = None,
) -> int:
    """Write one ``enrollment-sync.v1`` per enrollment to the outbox, in the caller's transaction; returns
    how many were written.

    For each enrollment: ``sync_sequence`` goes up by one and becomes the envelope's ``sequence``, an
    ``enrollment_syncs`` row records the sync as SENT, and ``enrollments.sync_state`` becomes SENT. Set-based:
    a few statements per 500 enrollments, whatever their number.

    The enrollments must already be in the state the change reports (ACTIVE for ENROLLED and
    DEVICE_REPLACED, UNENROLLED for UNENROLLED), with their devices recorded; DEVICE_REPLACED needs
    ``old_device_id`` and ``new_device_id`` (Asset Hub device ids, both devices of the enrollment). A caller
    that breaks this gets ``ValueError`` and should let its transaction roll back.
    """
    return len(await _queue_syncs(connection, enrollment_ids, change, now, old_device_id, new_device_id))


# --- unenroll and replace a device -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Locked:
    row: Row[Any]
    state: EnrollmentState
    last_at: datetime | None


async def _lock(connection: AsyncConnection, enrollment_id: str) -> _Locked:
    """The enrollment, locked against concurrent changes until the transaction ends (PostgreSQL; SQLite
    has one writer at a time), with the time of its latest transition; 404 when there is none."""
    e, tr = t.enrollments, t.enrollment_transitions
    row = (await connection.execute(select(e).where(e.c.enrollment_id == enrollment_id).with_for_update())).first()
    if row is None:
        raise not_found("enrollment", enrollment_id)
    last_at = await connection.scalar(select(func.max(tr.c.at)).where(tr.c.enrollment_id == enrollment_id))
    return _Locked(row, EnrollmentState(row.state), last_at)


def _not_allowed(refused: IllegalTransition) -> Conflict:
    return Conflict("enrollment-state", "Not allowed in the enrollment's current state", str(refused))


def _clock_behind(enrollment_id: str, error: ValueError) -> Conflict:
    return Conflict(
        "conflict",
        "The change would go back in time",
        f"enrollment {enrollment_id!r}: {error}. Check the business clock, then retry.",
    )


async def _record_transition(connection: AsyncConnection, transition: Transition) -> None:
    await connection.execute(
        t.enrollment_transitions.insert().values(
            enrollment_id=transition.enrollment_id,
            from_state=transition.from_state.value if transition.from_state else None,
            to_state=transition.to_state.value,
            at=transition.at,
            reason=transition.reason,
        )
    )


async def unenroll(engine: AsyncEngine, enrollment_id: str, reason: str, *, now: datetime) -> EnrollmentChange:
    """End an ACTIVE enrollment (ACTIVE → UNENROLLED, kept with ``reason``) and sync UNENROLLED to the DERMS,
    in one transaction.

    Raises :class:`~derbridge.errors.NotFound` for an unknown enrollment, :class:`~derbridge.errors.Conflict`
    when it is not ACTIVE, :class:`~derbridge.errors.Invalid` for a blank reason.
    """
    if not reason.strip() or "\x00" in reason or len(reason) > 500:
        raise Invalid(
            "validation-error",
            "The request is not valid",
            "Say why the enrollment ends: a non-blank reason of at most 500 characters.",
            errors=[FieldError(field="body.reason", message="must be non-blank text of at most 500 characters")],
        )
    async with engine.begin() as connection:
        locked = await _lock(connection, enrollment_id)
        try:
            transition = plan_transition(
                enrollment_id, locked.state, EnrollmentState.UNENROLLED, now, reason, last_at=locked.last_at
            )
        except IllegalTransition as refused:
            raise _not_allowed(refused) from None
        except ValueError as error:
            raise _clock_behind(enrollment_id, error) from None
        await connection.execute(
            update(t.enrollments)
            .where(t.enrollments.c.enrollment_id == enrollment_id)
            .values(state=EnrollmentState.UNENROLLED.value, updated_at=now)
        )
        await _record_transition(connection, transition)
        (sync,) = await _queue_syncs(connection, [enrollment_id], SyncChange.UNENROLLED, now, None, None)
    return EnrollmentChange(enrollment_id, EnrollmentState.UNENROLLED, SyncChange.UNENROLLED, now, sync)


def _program_of(row: Row[Any]) -> Program:
    return Program(
        program_code=row.program_code,
        name=row.name,
        status=ProgramStatus(row.status),
        enrollment_opens_at=row.enrollment_opens_at,
        enrollment_closes_at=row.enrollment_closes_at,
        eligible_device_types=frozenset(DeviceType(v) for v in row.eligible_device_types),
        excluded_program_codes=frozenset(row.excluded_program_codes),
        rules=ProgramRules.model_validate(row.rules),
    )


async def _check_replacement_device(
    connection: AsyncConnection, enrollment: Row[Any], slot: int, new: ReplacementDevice, now: datetime
) -> None:
    """Refuse a replacement device that F1 would refuse in an enrollment request of this enrollment.

    The device rules of an enrollment request — the device type is eligible in the program, the head-end
    is the enrollment's, the device has no non-terminal enrollment in this program or in one excluding it
    (either way) — are the domain's :func:`validate_enrollment_request`; running it on the request this
    enrollment would be with the new device, and keeping only the device's rejections, applies exactly
    those rules without restating them. (The request-level ones, such as the enrollment window, do not
    apply to a device swap.)
    """
    e, ed, d, pr = t.enrollments, t.enrollment_devices, t.devices, t.programs
    holders = (
        await connection.execute(
            select(e.c.enrollment_id, e.c.program_code)
            .join(ed, ed.c.enrollment_id == e.c.enrollment_id)
            .join(d, d.c.device_id == ed.c.device_id)
            .where(
                d.c.head_end_system == new.head_end_system,
                d.c.nic_id == new.nic_id,
                ed.c.removed_at.is_(None),
                e.c.state.in_([s.value for s in NON_TERMINAL_STATES]),
                e.c.enrollment_id != enrollment.enrollment_id,
            )
        )
    ).all()
    codes = {enrollment.program_code} | {h.program_code for h in holders}
    programs = {
        row.program_code: _program_of(row)
        for row in await connection.execute(select(pr).where(pr.c.program_code.in_(sorted(codes))))
    }
    program = programs.get(enrollment.program_code)
    if program is None:
        raise Conflict(
            "unknown-program",
            "The enrollment's program is unknown",
            f"Program {enrollment.program_code!r} of enrollment {enrollment.enrollment_id!r} does not exist in "
            "Asset Hub; create it before changing the enrollment.",
        )
    request = EnrollmentRequest(
        head_end_system=enrollment.head_end_system,
        request_id=enrollment.request_id,
        requested_at=now,
        cis_person_id=enrollment.cis_person_id,
        cis_account_id=enrollment.cis_account_id,
        program_code=enrollment.program_code,
        cis_premise_id=enrollment.cis_premise_id,
        cis_service_point_id=enrollment.cis_service_point_id,
        start_date=None,
        end_date=None,
        devices=(
            EnrollmentRequestDevice(
                sequence=slot,
                device_type=new.device_type.value,
                manufacturer=new.manufacturer,
                model=new.model,
                serial_no=new.serial_no,
                nic_id=new.nic_id,
                head_end_system=new.head_end_system,
            ),
        ),
        installation_method=enrollment.installation_method or "UNSPECIFIED",
        asset_ownership=enrollment.asset_ownership or "UNSPECIFIED",
    )
    facts = EnrollmentFacts(
        account=None,
        program=program,
        active_enrollments_of_devices={
            new.ref: tuple(ActiveEnrollment(h.enrollment_id, h.program_code, new.ref) for h in holders)
        },
        programs_by_code=programs,
    )
    prefix = "devices[0]."
    rejections = [r for r in validate_enrollment_request(request, facts, now) if r.field and r.field.startswith(prefix)]
    if not rejections:
        return
    taken = [r for r in rejections if r.code is RejectionReason.DEVICE_ALREADY_ENROLLED]
    if taken:
        raise Conflict("device-already-enrolled", "The new device is enrolled elsewhere", taken[0].detail)
    raise Invalid(
        "invalid-replacement",
        "The new device cannot replace this enrollment's device",
        "; ".join(r.detail for r in rejections),
        errors=[
            FieldError(field="body.new." + r.field.removeprefix(prefix), message=r.detail)
            for r in rejections
            if r.field
        ],
    )


async def replace_device(
    engine: AsyncEngine,
    enrollment_id: str,
    old: DeviceKey,
    new: ReplacementDevice,
    *,
    now: datetime,
) -> EnrollmentChange:
    """Swap an ACTIVE enrollment's device ``old`` for ``new`` and sync DEVICE_REPLACED, in one transaction.

    The old device's ``enrollment_devices`` row gets ``removed_at`` (kept for history); the new device is
    upserted by ``(head_end_system, nic_id)`` and added in the old one's slot; the ACTIVE → ACTIVE
    transition names both.

    Raises :class:`~derbridge.errors.NotFound` for an unknown enrollment; :class:`~derbridge.errors.Conflict`
    when it is not ACTIVE or the new device has a non-terminal enrollment in this program or an excluding
    one; :class:`~derbridge.errors.Invalid` when ``old`` is not a current device
    of the enrollment, ``new`` is ``old`` or already in it, its type is not eligible in the program, or its
    head-end is not the enrollment's.
    """
    ed, d = t.enrollment_devices, t.devices
    async with engine.begin() as connection:
        locked = await _lock(connection, enrollment_id)
        if old.ref == new.ref:
            raise Invalid(
                "invalid-replacement",
                "The new device is the old one",
                f"Device {new.ref.key} is the device being replaced; give the device that replaces it.",
                errors=[FieldError(field="body.new.nic_id", message="must differ from the old device")],
            )
        try:
            transition = plan_device_replacement(
                enrollment_id, locked.state, old.ref, new.ref, now, last_at=locked.last_at
            )
        except IllegalTransition as refused:
            raise _not_allowed(refused) from None
        except ValueError as error:
            raise _clock_behind(enrollment_id, error) from None
        current = {
            (row.head_end_system, row.nic_id): row
            for row in await connection.execute(
                select(ed.c.device_id, ed.c.sequence, d.c.head_end_system, d.c.nic_id)
                .join(d, d.c.device_id == ed.c.device_id)
                .where(ed.c.enrollment_id == enrollment_id, ed.c.removed_at.is_(None))
            )
        }
        old_row = current.get((old.head_end_system, old.nic_id))
        if old_row is None:
            raise Invalid(
                "invalid-replacement",
                "The old device is not in the enrollment",
                f"Device {old.ref.key} is not a current device of enrollment {enrollment_id!r}; "
                "read the enrollment's devices and name one of them.",
                errors=[FieldError(field="body.old", message="not a current device of the enrollment")],
            )
        if (new.head_end_system, new.nic_id) in current:
            raise Invalid(
                "invalid-replacement",
                "The new device is already in the enrollment",
                f"Device {new.ref.key} is already a device of enrollment {enrollment_id!r}.",
                errors=[FieldError(field="body.new.nic_id", message="already a device of the enrollment")],
            )
        await _check_replacement_device(connection, locked.row, old_row.sequence, new, now)

        dialect = connection.dialect.name
        device = insert_for(dialect, d).values(
            head_end_system=new.head_end_system,
            nic_id=new.nic_id,
            device_type=new.device_type.value,
            manufacturer=new.manufacturer,
            model=new.model,
            serial_no=new.serial_no,
            created_at=now,
        )
        # A known device keeps its id and takes what the operator says about it now.
        new_device_id = await connection.scalar(
            device.on_conflict_do_update(
                index_elements=[d.c.head_end_system, d.c.nic_id],
                set_={
                    "device_type": device.excluded.device_type,
                    "manufacturer": device.excluded.manufacturer,
                    "model": device.excluded.model,
                    "serial_no": device.excluded.serial_no,
                },
            ).returning(d.c.device_id)
        )
        await connection.execute(
            update(ed)
            .where(and_(ed.c.enrollment_id == enrollment_id, ed.c.device_id == old_row.device_id))
            .values(removed_at=now)
        )
        link = insert_for(dialect, ed).values(
            enrollment_id=enrollment_id,
            device_id=new_device_id,
            sequence=old_row.sequence,
            added_at=now,
            removed_at=None,
        )
        # A device swapped back in (A → B → A) returns to its own row: the key is (enrollment, device),
        # and the transitions keep the whole history of swaps.
        await connection.execute(
            link.on_conflict_do_update(
                index_elements=[ed.c.enrollment_id, ed.c.device_id],
                set_={"sequence": link.excluded.sequence, "added_at": link.excluded.added_at, "removed_at": None},
            )
        )
        await connection.execute(
            update(t.enrollments).where(t.enrollments.c.enrollment_id == enrollment_id).values(updated_at=now)
        )
        await _record_transition(connection, transition)
        (sync,) = await _queue_syncs(
            connection,
            [enrollment_id],
            SyncChange.DEVICE_REPLACED,
            now,
            old_device_id=old_row.device_id,
            new_device_id=new_device_id,
        )
    return EnrollmentChange(enrollment_id, EnrollmentState.ACTIVE, SyncChange.DEVICE_REPLACED, now, sync)
