"""Asset Hub's HTTP API, ``/assethub/v1``: read everything Asset Hub holds, and manage programs.

Routers only translate HTTP: reads go to :mod:`derbridge.infra.listing` over Asset Hub's tables, writes
to :mod:`derbridge.assethub.services`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from derbridge.assethub import queries
from derbridge.assethub.adapters import score_parts
from derbridge.assethub.adapters import tables as t
from derbridge.assethub.api import schemas as s
from derbridge.assethub.domain.program import ProgramStatus
from derbridge.assethub.services import programs as program_service
from derbridge.cis.extract import AccountStatus
from derbridge.infra.listing import _cursor_value, get_one, list_page
from derbridge.infra.problems import PROBLEM_RESPONSES
from derbridge.infra.web import (
    NO_NUL,
    IdPath,
    IntIdPath,
    IntIdQuery,
    Page,
    Paging,
    SystemEngine,
    require_service_token,
)

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)
Id = IdPath


Engine = SystemEngine


# --- CIS copy -------------------------------------------------------------------------------------


@router.get("/persons", tags=["customers"])
async def list_persons(engine: Engine, page: Paging) -> Page[s.Person]:
    """Persons copied from the CIS, by id."""
    async with engine.connect() as connection:
        rows, after = await list_page(connection, t.persons, "cis_person_id", page)
    return Page[s.Person](items=[s.Person.model_validate(r) for r in rows], next_after=after)


@router.get("/persons/{cis_person_id}", tags=["customers"])
async def get_person(engine: Engine, cis_person_id: Id) -> s.Person:
    """One person."""
    async with engine.connect() as connection:
        return s.Person.model_validate(await get_one(connection, t.persons, "cis_person_id", cis_person_id, "person"))


async def _premises_with_service_points(connection: Any, premises: list[dict[str, Any]]) -> list[s.Premise]:
    ids = [p["cis_premise_id"] for p in premises]
    points: dict[str, list[s.ServicePoint]] = {i: [] for i in ids}
    if ids:
        result = await connection.execute(
            select(t.service_points)
            .where(t.service_points.c.cis_premise_id.in_(ids))
            .order_by(t.service_points.c.cis_service_point_id)
        )
        for row in result.mappings():
            points[row["cis_premise_id"]].append(s.ServicePoint.model_validate(dict(row)))
    return [s.Premise.model_validate(p | {"service_points": points[p["cis_premise_id"]]}) for p in premises]


@router.get("/accounts", tags=["customers"])
async def list_accounts(
    engine: Engine,
    page: Paging,
    cis_person_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    status: AccountStatus | None = None,
) -> Page[s.Account]:
    """Accounts copied from the CIS, by id; filter by holder or status."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection,
            t.accounts,
            "cis_account_id",
            page,
            {"cis_person_id": cis_person_id, "status": status.value if status else None},
        )
    return Page[s.Account](items=[s.Account.model_validate(r) for r in rows], next_after=after)


@router.get("/accounts/{cis_account_id}", tags=["customers"])
async def get_account(engine: Engine, cis_account_id: Id) -> s.Account:
    """One account with the premises it serves and their service points."""
    async with engine.connect() as connection:
        account = await get_one(connection, t.accounts, "cis_account_id", cis_account_id, "account")
        result = await connection.execute(
            select(t.premises)
            .where(t.premises.c.cis_account_id == cis_account_id)
            .order_by(t.premises.c.cis_premise_id)
        )
        premises = await _premises_with_service_points(connection, [dict(r) for r in result.mappings()])
    return s.Account.model_validate(account | {"premises": premises})


@router.get("/premises", tags=["customers"])
async def list_premises(
    engine: Engine, page: Paging, cis_account_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None
) -> Page[s.Premise]:
    """Premises copied from the CIS, by id; filter by account."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection, t.premises, "cis_premise_id", page, {"cis_account_id": cis_account_id}
        )
        premises = await _premises_with_service_points(connection, rows)
    return Page[s.Premise](items=premises, next_after=after)


@router.get("/premises/{cis_premise_id}", tags=["customers"])
async def get_premise(engine: Engine, cis_premise_id: Id) -> s.Premise:
    """One premise with its service points."""
    async with engine.connect() as connection:
        premise = await get_one(connection, t.premises, "cis_premise_id", cis_premise_id, "premise")
        return (await _premises_with_service_points(connection, [premise]))[0]


# --- programs -------------------------------------------------------------------------------------


@router.get("/programs", tags=["programs"])
async def list_programs(engine: Engine, page: Paging, status: ProgramStatus | None = None) -> Page[s.Program]:
    """Programs, by code."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection, t.programs, "program_code", page, {"status": status.value if status else None}
        )
    return Page[s.Program](items=[s.Program.model_validate(r) for r in rows], next_after=after)


@router.post("/programs", status_code=201, tags=["programs"])
async def create_program(engine: Engine, program: s.ProgramIn) -> s.Program:
    """Create a program (DRAFT unless a status is given). Its rules default to scoring.md's constants. Asset
    Hub is the programs' system of record: the program reaches the DERMS by program sync (version 1)."""
    return s.Program.model_validate(await program_service.create_program(engine, program))


@router.get("/programs/{program_code}", tags=["programs"])
async def get_program(engine: Engine, program_code: Id) -> s.Program:
    """One program with its rule settings."""
    async with engine.connect() as connection:
        return s.Program.model_validate(await get_one(connection, t.programs, "program_code", program_code, "program"))


@router.patch("/programs/{program_code}", tags=["programs"])
async def update_program(engine: Engine, program_code: Id, patch: s.ProgramPatch) -> s.Program:
    """Change a program: name, window, device types, exclusions, rules, or status (DRAFT → ACTIVE ⇄
    SUSPENDED → CLOSED; CLOSED is final and the DERMS then refuses new events in it). Each change is the
    program's next version, sent to the DERMS by program sync."""
    return s.Program.model_validate(await program_service.update_program(engine, program_code, patch))


# --- devices and enrollments ------------------------------------------------------------------------


@router.get("/devices", tags=["devices"])
async def list_devices(
    engine: Engine, page: Paging, head_end_system: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None
) -> Page[s.Device]:
    """Controllable devices, by device id; filter by head-end system."""
    async with engine.connect() as connection:
        return await queries.list_devices(connection, page, head_end_system=head_end_system)


@router.get("/devices/{device_id}", tags=["devices"])
async def get_device(engine: Engine, device_id: IntIdPath) -> s.Device:
    """One controllable device."""
    async with engine.connect() as connection:
        return await queries.get_device(connection, device_id)


@router.get("/enrollments", tags=["enrollments"])
async def list_enrollments(
    engine: Engine,
    page: Paging,
    state: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    program_code: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    cis_account_id: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    head_end_system: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> Page[s.Enrollment]:
    """Enrollments, by id; filter by state, program, account or head-end system."""
    async with engine.connect() as connection:
        return await queries.list_enrollments(
            connection,
            page,
            state=state,
            program_code=program_code,
            cis_account_id=cis_account_id,
            head_end_system=head_end_system,
        )


@router.get("/enrollments/{enrollment_id}", tags=["enrollments"])
async def get_enrollment(engine: Engine, enrollment_id: Id) -> s.Enrollment:
    """One enrollment with its devices (replaced ones too) and every lifecycle transition."""
    async with engine.connect() as connection:
        return await queries.get_enrollment(connection, enrollment_id)


# --- status checks, events, scores ------------------------------------------------------------------


@router.get("/status-checks", tags=["status checks"])
async def list_status_checks(
    engine: Engine,
    page: Paging,
    status: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    device_id: IntIdQuery = None,
) -> Page[s.StatusCheck]:
    """Device status checks, by id (time-ordered); filter by status or device."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection, t.device_status_checks, "check_id", page, {"status": status, "device_id": device_id}
        )
    return Page[s.StatusCheck](items=[s.StatusCheck.model_validate(r) for r in rows], next_after=after)


@router.get("/status-checks/{check_id}", tags=["status checks"])
async def get_status_check(engine: Engine, check_id: Id) -> s.StatusCheck:
    """One status check and its answer."""
    async with engine.connect() as connection:
        row = await get_one(connection, t.device_status_checks, "check_id", check_id, "status check")
    return s.StatusCheck.model_validate(row)


@router.get("/events", tags=["events"])
async def list_events(
    engine: Engine,
    page: Paging,
    status: Annotated[str | None, Query(max_length=16, pattern=NO_NUL)] = None,
    program_code: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
) -> Page[s.ProgramEvent]:
    """Program events received from the DERMS, by id."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection, t.program_events, "event_id", page, {"status": status, "program_code": program_code}
        )
    return Page[s.ProgramEvent](items=[s.ProgramEvent.model_validate(r) for r in rows], next_after=after)


@router.get("/events/{event_id}", tags=["events"])
async def get_event(engine: Engine, event_id: Id) -> s.ProgramEvent:
    """One program event."""
    async with engine.connect() as connection:
        return await queries.get_event(connection, event_id)


@router.get("/events/{event_id}/participations", tags=["events"])
async def list_participations(engine: Engine, event_id: Id, page: Paging) -> Page[s.Participation]:
    """The participation records of one event, by record id."""
    async with engine.connect() as connection:
        await get_one(connection, t.program_events, "event_id", event_id, "event")
        rows, after = await list_page(connection, t.participation_records, "record_id", page, {"event_id": event_id})
    return Page[s.Participation](items=[s.Participation.model_validate(r) for r in rows], next_after=after)


@router.get("/score-snapshots", tags=["scores"])
async def list_score_snapshots(engine: Engine, page: Paging) -> Page[s.ScoreSnapshot]:
    """Score files computed by Asset Hub, by file id (time-ordered)."""
    async with engine.connect() as connection:
        rows, after = await list_page(connection, t.score_snapshots, "file_id", page)
    return Page[s.ScoreSnapshot](items=[s.ScoreSnapshot.model_validate(r) for r in rows], next_after=after)


@router.get("/score-snapshots/{file_id}/scores", tags=["scores"])
async def list_device_scores(
    engine: Engine,
    file_id: Id,
    page: Paging,
    program_code: Annotated[str, Query(max_length=64, pattern=NO_NUL, description="The program whose scores to list.")],
) -> Page[s.DeviceScore]:
    """Device scores of one program in one snapshot, by device id, with their explaining components."""
    # The rows are kept as columnar parts (adapters/score_parts.py); the cursor is a device id, as before.
    after = None if page.after is None else int(_cursor_value(t.score_parts, "first_device_id", page.after))
    async with engine.connect() as connection:
        await get_one(connection, t.score_snapshots, "file_id", file_id, "score snapshot")
        rows = await score_parts.read_scores(connection, file_id, program_code, after=after, limit=page.limit + 1)
    next_after = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_after = str(rows[-1]["device_id"])
    return Page[s.DeviceScore](items=[s.DeviceScore.model_validate(r) for r in rows], next_after=next_after)
