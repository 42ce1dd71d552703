"""Asset Hub's read side: the queries its API and the ``derbridge`` listing commands share.

Each query takes an open connection to Asset Hub's database and returns the API's read models
(:mod:`derbridge.assethub.api.schemas`), so that ``GET /assethub/v1/enrollments/{id}`` and
``derbridge enrollments show ID --json`` give the same fields. A record that is not there is a 404 problem
(:func:`derbridge.infra.listing.get_one`). Listings page by key (:mod:`derbridge.infra.listing`).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import score_parts
from derbridge.assethub.adapters import tables as t
from derbridge.assethub.api import schemas as s
from derbridge.errors import not_found
from derbridge.infra.listing import get_one, list_page
from derbridge.infra.web import Page, PageParams

# --- programs ---------------------------------------------------------------------------------------


async def list_programs(connection: AsyncConnection, *, status: str | None = None) -> list[s.Program]:
    """Every program by code (there are few), or those in ``status``."""
    statement = select(t.programs).order_by(t.programs.c.program_code)
    if status is not None:
        statement = statement.where(t.programs.c.status == status)
    return [s.Program.model_validate(row) for row in (await connection.execute(statement)).mappings()]


async def get_program(connection: AsyncConnection, program_code: str) -> s.Program:
    """One program with its rules, version and sync state."""
    return s.Program.model_validate(await get_one(connection, t.programs, "program_code", program_code, "program"))


# --- enrollments ------------------------------------------------------------------------------------


async def list_enrollments(
    connection: AsyncConnection,
    page: PageParams,
    *,
    state: str | None = None,
    program_code: str | None = None,
    cis_account_id: str | None = None,
    head_end_system: str | None = None,
) -> Page[s.Enrollment]:
    """Enrollments by id (time-ordered), with equality filters; None filters nothing."""
    filters = {
        "state": state,
        "program_code": program_code,
        "cis_account_id": cis_account_id,
        "head_end_system": head_end_system,
    }
    rows, after = await list_page(connection, t.enrollments, "enrollment_id", page, filters)
    return Page[s.Enrollment](items=[s.Enrollment.model_validate(r) for r in rows], next_after=after)


async def count_enrollments(
    connection: AsyncConnection,
    *,
    state: str | None = None,
    program_code: str | None = None,
    head_end_system: str | None = None,
) -> int:
    """How many enrollments match the equality filters (None filters nothing)."""
    query = select(func.count()).select_from(t.enrollments)
    for column, value in (("state", state), ("program_code", program_code), ("head_end_system", head_end_system)):
        if value is not None:
            query = query.where(t.enrollments.c[column] == value)
    return int((await connection.execute(query)).scalar_one())


async def get_enrollment(connection: AsyncConnection, enrollment_id: str) -> s.Enrollment:
    """One enrollment with its devices (replaced ones too) and every lifecycle transition."""
    enrollment = await get_one(connection, t.enrollments, "enrollment_id", enrollment_id, "enrollment")
    devices = await connection.execute(
        select(t.enrollment_devices, t.devices.c.head_end_system, t.devices.c.nic_id)
        .join(t.devices, t.devices.c.device_id == t.enrollment_devices.c.device_id)
        .where(t.enrollment_devices.c.enrollment_id == enrollment_id)
        .order_by(t.enrollment_devices.c.sequence, t.enrollment_devices.c.added_at)
    )
    transitions = await connection.execute(
        select(t.enrollment_transitions)
        .where(t.enrollment_transitions.c.enrollment_id == enrollment_id)
        .order_by(t.enrollment_transitions.c.transition_id)
    )
    return s.Enrollment.model_validate(
        enrollment
        | {
            "devices": [dict(r) for r in devices.mappings()],
            "transitions": [dict(r) for r in transitions.mappings()],
        }
    )


async def enrollment_syncs(connection: AsyncConnection, enrollment_id: str) -> s.EnrollmentSyncsOut:
    """The enrollment's sync state and the history of its syncs to the DERMS, oldest first."""
    syncs = t.enrollment_syncs
    enrollment = await get_one(connection, t.enrollments, "enrollment_id", enrollment_id, "enrollment")
    rows = await connection.execute(
        select(syncs).where(syncs.c.enrollment_id == enrollment_id).order_by(syncs.c.sequence)
    )
    return s.EnrollmentSyncsOut(
        enrollment_id=enrollment_id,
        sync_state=enrollment["sync_state"],
        sync_detail=enrollment["sync_detail"],
        sync_sequence=enrollment["sync_sequence"],
        syncs=[s.SyncOut.model_validate(row) for row in rows],
    )


# --- status checks ----------------------------------------------------------------------------------


async def latest_status_check(
    connection: AsyncConnection, *, enrollment_id: str | None = None, device_id: int | None = None
) -> s.StatusCheck | None:
    """The newest status check of an enrollment or of a device (check ids are time-ordered), or None."""
    checks = t.device_status_checks
    query = select(checks).order_by(checks.c.check_id.desc()).limit(1)
    if enrollment_id is not None:
        query = query.where(checks.c.enrollment_id == enrollment_id)
    if device_id is not None:
        query = query.where(checks.c.device_id == device_id)
    row = (await connection.execute(query)).mappings().first()
    return None if row is None else s.StatusCheck.model_validate(dict(row))


# --- devices ----------------------------------------------------------------------------------------


async def list_devices(
    connection: AsyncConnection,
    page: PageParams,
    *,
    head_end_system: str | None = None,
    program_code: str | None = None,
) -> Page[s.Device]:
    """Controllable devices by device id; ``program_code`` keeps the devices an enrollment in that program
    holds now (any state, not a device replaced out of it)."""
    where: list[ColumnElement[bool]] = []
    if program_code is not None:
        held = (
            select(t.enrollment_devices.c.device_id)
            .join(t.enrollments, t.enrollments.c.enrollment_id == t.enrollment_devices.c.enrollment_id)
            .where(t.enrollments.c.program_code == program_code, t.enrollment_devices.c.removed_at.is_(None))
        )
        where.append(t.devices.c.device_id.in_(held))
    rows, after = await list_page(
        connection, t.devices, "device_id", page, {"head_end_system": head_end_system}, where=where
    )
    return Page[s.Device](items=[s.Device.model_validate(r) for r in rows], next_after=after)


async def get_device(connection: AsyncConnection, device_id: int) -> s.Device:
    """One controllable device by Asset Hub's device id."""
    return s.Device.model_validate(await get_one(connection, t.devices, "device_id", device_id, "device"))


async def find_device(connection: AsyncConnection, head_end_system: str, nic_id: str) -> s.Device:
    """One controllable device by the key messages carry: its head-end system and NIC id."""
    row = (
        (
            await connection.execute(
                select(t.devices).where(t.devices.c.head_end_system == head_end_system, t.devices.c.nic_id == nic_id)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise not_found("device", f"{head_end_system}:{nic_id}")
    return s.Device.model_validate(dict(row))


async def device_enrollments(connection: AsyncConnection, device_id: int) -> list[s.DeviceEnrollment]:
    """The enrollments that hold or held a device, oldest first."""
    e, d = t.enrollments, t.enrollment_devices
    rows = await connection.execute(
        select(
            e.c.enrollment_id,
            e.c.program_code,
            e.c.cis_account_id,
            e.c.state,
            d.c.sequence,
            d.c.added_at,
            d.c.removed_at,
        )
        .join(d, d.c.enrollment_id == e.c.enrollment_id)
        .where(d.c.device_id == device_id)
        .order_by(e.c.enrollment_id)
    )
    return [s.DeviceEnrollment.model_validate(dict(row)) for row in rows.mappings()]


async def latest_score_snapshot(connection: AsyncConnection) -> s.ScoreSnapshot | None:
    """The newest score snapshot (by generation time, then id), or None before the first transfer."""
    snapshots = t.score_snapshots
    row = (
        (
            await connection.execute(
                select(snapshots).order_by(snapshots.c.generated_at.desc(), snapshots.c.file_id.desc()).limit(1)
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else s.ScoreSnapshot.model_validate(dict(row))


async def device_scores(connection: AsyncConnection, snapshot: s.ScoreSnapshot, device_id: int) -> list[s.DeviceScore]:
    """A device's score, eligibility and components in each program of ``snapshot`` it was scored in."""
    found = []
    for program_code in snapshot.programs:
        rows = await score_parts.read_scores(connection, snapshot.file_id, program_code, after=device_id - 1, limit=1)
        if rows and rows[0]["device_id"] == device_id:
            found.append(s.DeviceScore.model_validate(rows[0]))
    return found


# --- events -----------------------------------------------------------------------------------------


async def get_event(connection: AsyncConnection, event_id: str) -> s.ProgramEvent:
    """One program event as Asset Hub recorded it from the DERMS."""
    return s.ProgramEvent.model_validate(await get_one(connection, t.program_events, "event_id", event_id, "event"))


async def participation_counts(connection: AsyncConnection, event_id: str) -> s.ParticipationCounts:
    """How many of an event's participation records are in each status and have each outcome."""
    records = t.participation_records
    by_status = await connection.execute(
        select(records.c.status, func.count())
        .where(records.c.event_id == event_id)
        .group_by(records.c.status)
        .order_by(records.c.status)
    )
    by_outcome = await connection.execute(
        select(records.c.outcome, func.count())
        .where(records.c.event_id == event_id, records.c.outcome.is_not(None))
        .group_by(records.c.outcome)
        .order_by(records.c.outcome)
    )
    return s.ParticipationCounts(
        by_status={str(status): int(count) for status, count in by_status.all()},
        by_outcome={str(outcome): int(count) for outcome, count in by_outcome.all()},
    )
