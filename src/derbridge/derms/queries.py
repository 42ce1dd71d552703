"""The DERMS's read side: the queries its API and the ``derbridge`` listing commands share.

Each query takes an open connection to the DERMS's database and returns the API's read models
(:mod:`derbridge.derms.api.schemas`), so that ``GET /derms/v1/events/{id}`` and
``derbridge events show ID --json`` give the same fields. A record that is not there is a 404 problem
(:func:`derbridge.infra.listing.get_one`). Listings page by key (:mod:`derbridge.infra.listing`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.derms.adapters import tables as t
from derbridge.derms.api import schemas as s
from derbridge.errors import not_found
from derbridge.infra.listing import get_one, list_page
from derbridge.infra.web import Page, PageParams

# --- devices ----------------------------------------------------------------------------------------


async def list_devices(
    connection: AsyncConnection,
    page: PageParams,
    *,
    head_end_system: str | None = None,
    program_code: str | None = None,
    availability: str | None = None,
    communication_status: str | None = None,
    with_status: bool = False,
) -> Page[s.Device]:
    """Devices the DERMS may dispatch, by device id. ``program_code`` and ``availability`` keep the devices
    with an availability record (in that program, with that value); ``communication_status`` the devices
    whose latest status is that one. ``with_status`` fills each device's availability and communication."""
    where: list[ColumnElement[bool]] = []
    if program_code is not None or availability is not None:
        held = select(t.device_availability.c.device_id)
        if program_code is not None:
            held = held.where(t.device_availability.c.program_code == program_code)
        if availability is not None:
            held = held.where(t.device_availability.c.availability == availability)
        where.append(t.devices.c.device_id.in_(held))
    if communication_status is not None:
        c = t.communication_status
        where.append(
            select(c.c.nic_id)
            .where(
                c.c.head_end_system == t.devices.c.head_end_system,
                c.c.nic_id == t.devices.c.nic_id,
                c.c.communication_status == communication_status,
            )
            .exists()
        )
    rows, after = await list_page(
        connection, t.devices, "device_id", page, {"head_end_system": head_end_system}, where=where
    )
    if with_status:
        rows = await _with_status(connection, rows)
    return Page[s.Device](items=[s.Device.model_validate(r) for r in rows], next_after=after)


async def _with_status(connection: AsyncConnection, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``devices`` with their availability in each program and their latest communication status."""
    if not devices:
        return devices
    ids = [device["device_id"] for device in devices]
    availability: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    rows = await connection.execute(
        select(t.device_availability)
        .where(t.device_availability.c.device_id.in_(ids))
        .order_by(t.device_availability.c.device_id, t.device_availability.c.program_code)
    )
    for row in rows.mappings():
        availability[row["device_id"]].append(dict(row))
    communication: dict[tuple[str, str], dict[str, Any]] = {}
    c = t.communication_status
    for head_end in {device["head_end_system"] for device in devices}:
        nics = [device["nic_id"] for device in devices if device["head_end_system"] == head_end]
        rows = await connection.execute(select(c).where(c.c.head_end_system == head_end, c.c.nic_id.in_(nics)))
        for row in rows.mappings():
            communication[(row["head_end_system"], row["nic_id"])] = dict(row)
    return [
        device
        | {
            "availability": availability[device["device_id"]],
            "communication": communication.get((device["head_end_system"], device["nic_id"])),
        }
        for device in devices
    ]


async def get_device(connection: AsyncConnection, device_id: int) -> s.Device:
    """One device by the DERMS's device id, with its availability in each program and its latest
    communication status."""
    device = await get_one(connection, t.devices, "device_id", device_id, "device")
    return s.Device.model_validate((await _with_status(connection, [device]))[0])


async def find_device(connection: AsyncConnection, head_end_system: str, nic_id: str) -> s.Device:
    """One device by its head-end system and NIC id, with its availability and communication status."""
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
    return s.Device.model_validate((await _with_status(connection, [dict(row)]))[0])


# --- events -----------------------------------------------------------------------------------------


async def list_events(
    connection: AsyncConnection,
    page: PageParams,
    *,
    status: str | None = None,
    program_code: str | None = None,
    starts_from: datetime | None = None,
    starts_before: datetime | None = None,
) -> Page[s.ProgramEvent]:
    """Program events by id (time-ordered); filter by status, program, and a window their start falls in
    (``starts_from`` inclusive, ``starts_before`` exclusive)."""
    where: list[ColumnElement[bool]] = []
    if starts_from is not None:
        where.append(t.program_events.c.start_at >= starts_from)
    if starts_before is not None:
        where.append(t.program_events.c.start_at < starts_before)
    rows, after = await list_page(
        connection,
        t.program_events,
        "event_id",
        page,
        {"status": status, "program_code": program_code},
        where=where,
    )
    return Page[s.ProgramEvent](items=[s.ProgramEvent.model_validate(r) for r in rows], next_after=after)


async def get_event(connection: AsyncConnection, event_id: str) -> s.ProgramEvent:
    """One program event with its reservation figures."""
    return s.ProgramEvent.model_validate(await get_one(connection, t.program_events, "event_id", event_id, "event"))


async def event_counts(connection: AsyncConnection, event_id: str) -> s.EventCounts:
    """How many of an event's reservations are in each status, and of its outcomes have each outcome."""
    r, o = t.reservations, t.outcomes
    reservations = await connection.execute(
        select(r.c.status, func.count()).where(r.c.event_id == event_id).group_by(r.c.status).order_by(r.c.status)
    )
    outcomes = await connection.execute(
        select(o.c.outcome, func.count()).where(o.c.event_id == event_id).group_by(o.c.outcome).order_by(o.c.outcome)
    )
    return s.EventCounts(reservations=_tally(reservations.all()), outcomes=_tally(outcomes.all()))


def _tally(rows: Sequence[Row[Any]]) -> dict[str, int]:
    """``(value, count)`` rows as ``{value: count}``."""
    return {str(value): int(count) for value, count in rows}
