"""The DERMS HTTP API, ``/derms/v1``: read everything the DERMS holds, record device communication status
(as the edge does), read programs (Asset Hub's, carried here by program sync), and create and cancel program
events.

Routers only translate HTTP: reads go to :mod:`derbridge.infra.listing`, writes to
:mod:`derbridge.derms.services`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import select

from derbridge.cis.extract import AccountStatus
from derbridge.derms import queries
from derbridge.derms.adapters import tables as t
from derbridge.derms.api import schemas as s
from derbridge.derms.domain.event import EventStatus
from derbridge.derms.services import communication, events
from derbridge.errors import not_found
from derbridge.infra.listing import get_one, list_page
from derbridge.infra.problems import PROBLEM_RESPONSES, ProblemError
from derbridge.infra.web import (
    NO_NUL,
    BusinessNow,
    FilterQuery,
    IdPath,
    IntIdPath,
    Page,
    Paging,
    SystemEngine,
    require_service_token,
)

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)
Id = IdPath
Filter = FilterQuery


Engine = SystemEngine


# --- CIS copy -------------------------------------------------------------------------------------


@router.get("/contacts", tags=["customers"])
async def list_contacts(engine: Engine, page: Paging) -> Page[s.Contact]:
    """Contacts (CIS persons), by id."""
    async with engine.connect() as connection:
        rows, after = await list_page(connection, t.contacts, "cis_person_id", page)
    return Page[s.Contact](items=[s.Contact.model_validate(r) for r in rows], next_after=after)


@router.get("/contacts/{cis_person_id}", tags=["customers"])
async def get_contact(engine: Engine, cis_person_id: Id) -> s.Contact:
    """One contact."""
    async with engine.connect() as connection:
        return s.Contact.model_validate(
            await get_one(connection, t.contacts, "cis_person_id", cis_person_id, "contact")
        )


@router.get("/customers", tags=["customers"])
async def list_customers(
    engine: Engine, page: Paging, cis_person_id: Filter = None, status: AccountStatus | None = None
) -> Page[s.Customer]:
    """Customers (CIS accounts), by id; filter by contact or status."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection,
            t.customers,
            "cis_account_id",
            page,
            {"cis_person_id": cis_person_id, "status": status.value if status else None},
        )
    return Page[s.Customer](items=[s.Customer.model_validate(r) for r in rows], next_after=after)


@router.get("/customers/{cis_account_id}", tags=["customers"])
async def get_customer(engine: Engine, cis_account_id: Id) -> s.Customer:
    """One customer."""
    async with engine.connect() as connection:
        row = await get_one(connection, t.customers, "cis_account_id", cis_account_id, "customer")
    return s.Customer.model_validate(row)


@router.get("/locations", tags=["customers"])
async def list_locations(
    engine: Engine, page: Paging, cis_account_id: Filter = None, cis_premise_id: Filter = None
) -> Page[s.Location]:
    """Locations (CIS service points with their premise), by service point id."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection,
            t.locations,
            "cis_service_point_id",
            page,
            {"cis_account_id": cis_account_id, "cis_premise_id": cis_premise_id},
        )
    return Page[s.Location](items=[s.Location.model_validate(r) for r in rows], next_after=after)


@router.get("/locations/{cis_service_point_id}", tags=["customers"])
async def get_location(engine: Engine, cis_service_point_id: Id) -> s.Location:
    """One location."""
    async with engine.connect() as connection:
        row = await get_one(connection, t.locations, "cis_service_point_id", cis_service_point_id, "location")
    return s.Location.model_validate(row)


# --- programs -------------------------------------------------------------------------------------


@router.get("/programs", tags=["programs"])
async def list_programs(engine: Engine, page: Paging) -> Page[s.Program]:
    """Programs, by code."""
    async with engine.connect() as connection:
        rows, after = await list_page(connection, t.programs, "program_code", page)
    return Page[s.Program](items=[s.Program.model_validate(r) for r in rows], next_after=after)


@router.get("/programs/{program_code}", tags=["programs"])
async def get_program(engine: Engine, program_code: Id) -> s.Program:
    """One program."""
    async with engine.connect() as connection:
        return s.Program.model_validate(await get_one(connection, t.programs, "program_code", program_code, "program"))


def _programs_are_read_only() -> ProblemError:
    return ProblemError(
        405,
        "read-only",
        "Programs are read-only in the DERMS",
        "Programs are Asset Hub's master data and reach the DERMS by program sync: create one with "
        "POST /assethub/v1/programs (or 'derbridge program create') and change or close it with "
        "PATCH /assethub/v1/programs/{program_code} ('derbridge program update|close').",
        headers={"Allow": "GET"},
    )


@router.post("/programs", include_in_schema=False)
async def create_program() -> None:
    """Gone: programs are created in Asset Hub (a 405 that says where)."""
    raise _programs_are_read_only()


@router.api_route("/programs/{program_code}", methods=["PUT", "PATCH", "DELETE"], include_in_schema=False)
async def change_program(program_code: Id) -> None:
    """Gone: programs are changed and closed in Asset Hub (a 405 that says where)."""
    raise _programs_are_read_only()


# --- devices and communication status ---------------------------------------------------------------


@router.get("/devices", tags=["devices"])
async def list_devices(engine: Engine, page: Paging, head_end_system: Filter = None) -> Page[s.Device]:
    """Devices the DERMS may dispatch, by device id."""
    async with engine.connect() as connection:
        return await queries.list_devices(connection, page, head_end_system=head_end_system)


@router.get("/devices/{device_id}", tags=["devices"])
async def get_device(engine: Engine, device_id: IntIdPath) -> s.Device:
    """One device with its availability in each program and its latest communication status."""
    async with engine.connect() as connection:
        return await queries.get_device(connection, device_id)


@router.get("/communication-status", tags=["devices"])
async def list_communication_status(
    engine: Engine,
    page: Paging,
    head_end_system: Annotated[
        str, Query(max_length=64, pattern=NO_NUL, description="The head-end whose devices to list.")
    ],
    communication_status: s.CommunicationStatus | None = None,
) -> Page[s.CommunicationStatusOut]:
    """Latest communication status of one head-end's devices, by nic id."""
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection,
            t.communication_status,
            "nic_id",
            page,
            {
                "head_end_system": head_end_system,
                "communication_status": communication_status.value if communication_status else None,
            },
        )
    return Page[s.CommunicationStatusOut](
        items=[s.CommunicationStatusOut.model_validate(r) for r in rows], next_after=after
    )


@router.post("/communication-status/batch", tags=["devices"])
async def post_communication_statuses(engine: Engine, batch: s.CommunicationReportBatch) -> s.RecordedCount:
    """Record many devices' communication status at once; per device the newest report wins."""
    return s.RecordedCount(recorded=await communication.record_communication_statuses(engine, batch.reports))


@router.get("/communication-status/{head_end_system}/{nic_id}", tags=["devices"])
async def get_communication_status(engine: Engine, head_end_system: Id, nic_id: Id) -> s.CommunicationStatusOut:
    """A device's latest communication status."""
    async with engine.connect() as connection:
        row = (
            (
                await connection.execute(
                    select(t.communication_status).where(
                        t.communication_status.c.head_end_system == head_end_system,
                        t.communication_status.c.nic_id == nic_id,
                    )
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise not_found("communication status", f"{head_end_system}:{nic_id}")
    return s.CommunicationStatusOut.model_validate(dict(row))


@router.put("/communication-status/{head_end_system}/{nic_id}", tags=["devices"])
async def put_communication_status(
    engine: Engine,
    head_end_system: Annotated[str, Path(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,63}$")],
    nic_id: Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)],
    report: s.CommunicationStatusIn,
    response: Response,
) -> s.CommunicationStatusOut:
    """Record a device's communication status. A report older than the stored one is kept out (200 with
    the stored status and ``X-Derbridge-Stale: true``)."""
    stored, changed = await communication.record_communication_status(engine, head_end_system, nic_id, report)
    if not changed:
        response.headers["X-Derbridge-Stale"] = "true"
    return s.CommunicationStatusOut.model_validate(stored)


# --- events ---------------------------------------------------------------------------------------


@router.get("/events", tags=["events"])
async def list_events(
    engine: Engine, page: Paging, status: EventStatus | None = None, program_code: Filter = None
) -> Page[s.ProgramEvent]:
    """Program events, by id (time-ordered)."""
    async with engine.connect() as connection:
        return await queries.list_events(
            connection, page, status=status.value if status else None, program_code=program_code
        )


@router.post("/events", status_code=201, tags=["events"])
async def create_event(request: Request, engine: Engine, now: BusinessNow, event: s.EventIn) -> s.ProgramEvent:
    """Create a program event and reserve the most eligible devices. A shortfall (fewer candidates than
    the target) is reported on the event, not an error."""
    created = await events.create_event(
        engine, event, request.app.state.derms_instance_id, files=request.app.state.reservation_files, now=now
    )
    return s.ProgramEvent.model_validate(created)


@router.get("/events/{event_id}", tags=["events"])
async def get_event(engine: Engine, event_id: Id) -> s.ProgramEvent:
    """One program event."""
    async with engine.connect() as connection:
        return await queries.get_event(connection, event_id)


@router.post("/events/{event_id}/cancel", tags=["events"])
async def cancel_event(
    engine: Engine, now: BusinessNow, event_id: Id, cancel: s.EventCancel | None = None
) -> s.ProgramEvent:
    """Cancel a SCHEDULED event before its start and release its reservations. After the start: 409."""
    cancelled = await events.cancel_event(engine, event_id, cancel or s.EventCancel(), now)
    return s.ProgramEvent.model_validate(cancelled)


@router.get("/events/{event_id}/reservations", tags=["events"])
async def list_reservations(engine: Engine, event_id: Id, page: Paging) -> Page[s.Reservation]:
    """The reservations of one event, by record id."""
    async with engine.connect() as connection:
        await get_one(connection, t.program_events, "event_id", event_id, "event")
        rows, after = await list_page(connection, t.reservations, "record_id", page, {"event_id": event_id})
    return Page[s.Reservation](items=[s.Reservation.model_validate(r) for r in rows], next_after=after)


@router.get("/events/{event_id}/outcomes", tags=["events"])
async def list_outcomes(engine: Engine, event_id: Id, page: Paging) -> Page[s.Outcome]:
    """The per-device outcomes of one event, by device id."""
    async with engine.connect() as connection:
        await get_one(connection, t.program_events, "event_id", event_id, "event")
        rows, after = await list_page(connection, t.outcomes, "device_id", page, {"event_id": event_id})
    return Page[s.Outcome](items=[s.Outcome.model_validate(r) for r in rows], next_after=after)


@router.get("/score-snapshots", tags=["scores"])
async def list_score_snapshots(engine: Engine, page: Paging) -> Page[s.ScoreSnapshot]:
    """Loaded score snapshots, by file id; one of them is current."""
    async with engine.connect() as connection:
        rows, after = await list_page(connection, t.score_snapshots, "file_id", page)
    return Page[s.ScoreSnapshot](items=[s.ScoreSnapshot.model_validate(r) for r in rows], next_after=after)
