"""The status check's fresh reading (flows.md F2), through the edge: the DERMS answers a status check at once
from what it stores, then — for a check an agent asked for (``reason`` AGENT_TROUBLESHOOT) about a device
an aggregator's VEN has registered — asks that VEN for a reading:

- :func:`request_fresh_readings` (the DERMS's port :attr:`~derbridge.derms.ports.DermsPorts.fresh_readings`,
  wired by :func:`derbridge.edge.system.build`, run in the status check's inbox transaction, with one check
  or a batch handler's run; one read finds the registered resources) creates an OpenADR event addressed to
  the VEN's client, targeted at the one resource, asking for ``OPERATING_STATE`` and
  ``COMMUNICATION_STATUS`` once. Its ``derms_key`` names the check and the instances its answer travels between;
- when the VEN reports on that event, :func:`answer_if_requested` (in the report's transaction) answers the
  check again from the status the report just recorded — Asset Hub takes the newer answer — and deletes the
  event: the request is fulfilled (subscribers hear DELETE).

Checks for device setup (ENROLLMENT_SETUP, thousands at once during onboarding) never make an event: the
aggregator is already heard from on every request and report about the device, and an event per device
would double the edge's work for no new information. Devices no VEN has registered cost one indexed read
per run of checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import device_status_check as contract
from derbridge.contracts.envelope import Envelope
from derbridge.derms.services.status_checks import answer_status_check
from derbridge.edge import domain, store
from derbridge.edge.schemas import ObjectType
from derbridge.edge.store import NewObject, Row
from derbridge.edge.tables import edge_clients
from derbridge.edge.tables import edge_objects as o
from derbridge.edge.token_vault import TokenVault


async def request_fresh_readings(
    connection: AsyncConnection,
    checks: Sequence[tuple[Envelope, contract.StatusCheckRequest]],
    now: datetime,
    *,
    vault: TokenVault,
) -> None:
    """Ask the devices' VENs for fresh readings (only for agents' checks; see the module), in order: one
    read finds the registered resources of every agent's check of the run."""
    asked = [(e, c) for e, c in checks if c.reason is contract.CheckReason.AGENT_TROUBLESHOOT]
    if not asked:
        return
    keys = sorted({(c.device.head_end_system, c.device.nic_id) for _, c in asked})
    registered: dict[tuple[str, str], Row] = {}
    # A run is at most one batch delivery (MAX_BATCH checks): its keys fit one IN list on both databases.
    found = await connection.execute(
        select(o)
        .join(edge_clients, edge_clients.c.client_id == o.c.client_id)
        .where(
            o.c.object_type == ObjectType.RESOURCE.value,
            tuple_(o.c.head_end_system, o.c.nic_id).in_(keys),
            edge_clients.c.role == domain.Role.VEN.value,
            edge_clients.c.revoked_at.is_(None),
        )
        .order_by(o.c.id)
    )
    for mapping in found.mappings():
        # The first resource registered for the device, as for a single check.
        registered.setdefault((mapping["head_end_system"], mapping["nic_id"]), Row.of(mapping))
    for envelope, check in asked:
        resource = registered.get((check.device.head_end_system, check.device.nic_id))
        if resource is not None:
            await _request_fresh_reading(connection, envelope, check, resource, now, vault)


async def _request_fresh_reading(
    connection: AsyncConnection,
    envelope: Envelope,
    check: contract.StatusCheckRequest,
    resource: Row,
    now: datetime,
    vault: TokenVault,
) -> None:
    program_id = await _program_for(connection, resource)
    if program_id is None:
        return  # no program to hang the event on yet: the stored answer stands
    key = domain.check_event_key(check.check_id, envelope.target.instance, envelope.source.instance)
    if await connection.scalar(select(o.c.id).where(o.c.object_type == ObjectType.EVENT.value, o.c.derms_key == key)):
        return  # the same check delivered again
    name = f"status check {check.check_id}"[:128]
    body: dict[str, Any] = {
        "programID": program_id,
        "eventName": name,
        "intervals": [],
        "reportDescriptors": domain.reading_descriptors(repeat=1),
    }
    await store.insert_objects(
        connection,
        [
            NewObject(
                ObjectType.EVENT,
                body,
                [resource.name or ""],
                client_id=resource.client_id,
                ven_id=resource.ven_id,
                program_id=program_id,
                name=name,
                derms_key=key,
            )
        ],
        now,
        vault=vault,
    )


async def _program_for(connection: AsyncConnection, resource: Row) -> str | None:
    """The VTN program of the resource's enrollment program, else the first program the DERMS mirrors."""
    code = domain.attribute_map(resource.body.get("attributes")).get(domain.ENROLLMENT_PROGRAM, [None])[0]
    programs = {
        r.derms_key: r.id
        for r in await connection.execute(
            select(o.c.derms_key, o.c.id)
            .where(o.c.object_type == ObjectType.PROGRAM.value, o.c.derms_key.is_not(None))
            .order_by(o.c.id)
        )
    }
    chosen: str | None = programs.get(code) if isinstance(code, str) else None
    return chosen if chosen is not None else next(iter(programs.values()), None)


async def answer_if_requested(
    connection: AsyncConnection, event: Row, resources: Sequence[Row], now: datetime, *, vault: TokenVault
) -> None:
    """When ``event`` asked for a status check's fresh reading and the report named its resource, answer
    the check again from the status just recorded, and withdraw the event."""
    parsed = domain.parse_check_event_key(event.derms_key)
    if parsed is None:
        return
    check_id, reply_from, reply_to = parsed
    targets = set(event.targets)
    answered = False
    for resource in resources:
        if resource.name in targets and resource.head_end_system and resource.nic_id:
            await answer_status_check(
                connection,
                check_id,
                resource.head_end_system,
                resource.nic_id,
                causation_id=None,
                now=now,
                source_instance=reply_from,
                target_instance=reply_to,
            )
            answered = True
            break
    if answered:
        stored = (await connection.execute(select(o).where(o.c.id == event.id))).mappings().first()
        if stored is not None:
            await store.delete_objects(connection, [Row.of(stored)], now, vault=vault)
