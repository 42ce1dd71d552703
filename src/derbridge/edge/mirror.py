"""The DERMS's programs and program events, mirrored as OpenADR programs and events.

The ``edge-mirror`` job (every 5 s, under the DERMS's job lease) brings the VTN in line with the DERMS:

- each DERMS program is a VTN program named by its program code (``derms_key`` = the code), with a
  standing, untargeted **status event** (``derms_key`` ``status/<code>``) whose ``reportDescriptors`` ask
  every VEN for ``OPERATING_STATE`` and ``COMMUNICATION_STATUS`` of its resources, again and again: the
  aggregators' heartbeats are reports on it;
- each live DERMS event (SCHEDULED or ACTIVE) becomes **one OpenADR event per aggregator ven** holding
  reserved devices, addressed to that ven's client, its ``targets`` the ``resourceName`` of each reserved
  resource (the VTN grants every resource its own name as a target). The event carries the window
  (``intervalPeriod``), one ``SIMPLE`` interval (level 1: shed), and ``reportDescriptors`` asking for the
  outcome payloads (docs/edge.md). When reservations change, the targets follow (UPDATE);
- a DERMS event cancelled (F6), or whose ven has no reserved device left, is **deleted** from the VTN: the
  User Guide (7.9) makes deletion the way to cancel, and subscribers get the DELETE notification. A
  COMPLETED event stays, so that late reports still find it.

Every change and its notifications commit in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.derms.adapters import tables as dm
from derbridge.derms.domain.event import EventStatus
from derbridge.edge import domain, store
from derbridge.edge.schemas import ObjectType
from derbridge.edge.store import NewObject, Row
from derbridge.edge.tables import edge_objects as o
from derbridge.edge.token_vault import TokenVault

LIVE = (EventStatus.SCHEDULED.value, EventStatus.ACTIVE.value)
OUTCOME_REPORTS = (domain.PARTICIPATION, domain.OVERRIDE, domain.OPT_OUT, domain.SHED_KW)


def _event_body(program_id: str, event: Any) -> dict[str, Any]:
    return {
        "programID": program_id,
        "eventName": f"{event.event_type} {event.event_id}",
        "priority": 0 if event.event_type == "EMERGENCY" else 1,
        "intervalPeriod": {
            "start": event.start_at.isoformat().replace("+00:00", "Z"),
            "duration": domain.iso_duration((event.end_at - event.start_at).total_seconds()),
        },
        "payloadDescriptors": [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "SIMPLE"}],
        "intervals": [{"id": 0, "payloads": [{"type": "SIMPLE", "values": [1]}]}],
        "reportDescriptors": [
            {
                "payloadType": kind,
                "aggregate": False,
                "startInterval": -1,
                "numIntervals": -1,
                "historical": True,
                "frequency": -1,
                "repeat": 1,
                "reportIntervals": "INTERVALS",
            }
            for kind in OUTCOME_REPORTS
        ],
    }


async def mirror_programs(engine: AsyncEngine, now: datetime, vault: TokenVault) -> dict[str, str]:
    """Create the VTN program of each DERMS program not mirrored yet; returns program code → program id."""
    async with engine.begin() as connection:
        codes = [r.program_code for r in await connection.execute(select(dm.programs.c.program_code))]
        have = {
            r.derms_key: r.id
            for r in await connection.execute(
                select(o.c.derms_key, o.c.id).where(
                    o.c.object_type == ObjectType.PROGRAM.value, o.c.derms_key.is_not(None)
                )
            )
        }
        taken = {
            r.name
            for r in await connection.execute(select(o.c.name).where(o.c.object_type == ObjectType.PROGRAM.value))
        }
        # A business-logic program already holding the name keeps it; the DERMS's is named "<code>-DERMS".
        news = [
            NewObject(
                ObjectType.PROGRAM,
                {"programName": name},
                [],
                name=name,
                unique_key=name,
                derms_key=code,
            )
            for code in codes
            if code not in have
            for name in [code if code not in taken else f"{code}-DERMS"]
        ]
        if news:
            for row in await store.insert_objects(connection, news, now, vault=vault):
                have[row.derms_key or ""] = row.id
        # Each program's standing status event: VENs heartbeat on it (OPERATING_STATE, COMMUNICATION_STATUS).
        statuses = {
            r.derms_key
            for r in await connection.execute(
                select(o.c.derms_key).where(
                    o.c.object_type == ObjectType.EVENT.value, o.c.derms_key.like(domain.STATUS_EVENT_KEY + "%")
                )
            )
        }
        beats = [
            NewObject(
                ObjectType.EVENT,
                {
                    "programID": have[code],
                    "eventName": f"{code} status",
                    "intervals": [],
                    "reportDescriptors": domain.reading_descriptors(repeat=-1),
                },
                [],
                program_id=have[code],
                name=f"{code} status",
                derms_key=domain.STATUS_EVENT_KEY + code,
            )
            for code in codes
            if domain.STATUS_EVENT_KEY + code not in statuses
        ]
        if beats:
            await store.insert_objects(connection, beats, now, vault=vault)
    return have


async def mirror_events(engine: AsyncEngine, now: datetime, vault: TokenVault) -> int:
    """Create, retarget and delete the VTN's events so they match the DERMS's live events and reservations;
    returns how many VTN events changed."""
    programs = await mirror_programs(engine, now, vault)
    e, r, d = dm.program_events, dm.reservations, dm.devices
    changed = 0
    async with engine.begin() as connection:
        live = {row.event_id: row for row in await connection.execute(select(e).where(e.c.status.in_(LIVE)))}
        wanted: dict[tuple[str, str], tuple[str, list[str]]] = {}
        if live:
            held = await connection.execute(
                select(r.c.event_id, o.c.ven_id, o.c.client_id, o.c.name)
                .join(d, d.c.device_id == r.c.device_id)
                .join(
                    o,
                    (o.c.object_type == ObjectType.RESOURCE.value)
                    & (o.c.head_end_system == d.c.head_end_system)
                    & (o.c.nic_id == d.c.nic_id),
                )
                .where(r.c.status == "RESERVED", r.c.event_id.in_(list(live)))
                .order_by(r.c.event_id, o.c.ven_id, o.c.name)
            )
            for row in held:
                key = (row.event_id, row.ven_id)
                wanted.setdefault(key, (row.client_id, []))[1].append(row.name)
        mirrored = [
            Row.of(m)
            for m in (
                await connection.execute(
                    select(o)
                    .join(e, e.c.event_id == o.c.event_id)
                    .where(o.c.object_type == ObjectType.EVENT.value, o.c.derms_key.is_not(None))
                    .where(e.c.status.in_((*LIVE, EventStatus.CANCELLED.value)))
                )
            ).mappings()
        ]
        existing = {(m.event_id or "", m.ven_id or ""): m for m in mirrored}
        doomed = [m for key, m in existing.items() if key not in wanted]
        await store.delete_objects(connection, doomed, now, vault=vault)
        changed += len(doomed)
        creates: list[NewObject] = []
        for (event_id, ven_id), (client_id, names) in wanted.items():
            event = live[event_id]
            new = NewObject(
                ObjectType.EVENT,
                _event_body(programs[event.program_code], event),
                sorted(set(names)),
                client_id=client_id,
                ven_id=ven_id,
                program_id=programs[event.program_code],
                event_id=event_id,
                name=f"{event.event_type} {event_id}",
                derms_key=f"{event_id}/{ven_id}",
            )
            current = existing.get((event_id, ven_id))
            if current is None:
                creates.append(new)
            elif current.targets != new.targets or current.body != new.columns(vault)["body"]:
                await store.replace_object(connection, current, new, now, vault=vault)
                changed += 1
        if creates:
            await store.insert_objects(connection, creates, now, vault=vault)
            changed += len(creates)
    return changed


async def mirror_job(engine: AsyncEngine, now: datetime, *, vault: TokenVault) -> int:
    """The ``edge-mirror`` job: mirror the DERMS's programs and live events into the VTN (``vault`` is bound
    by :func:`derbridge.edge.system.build`; the VTN's writes need it, though mirrored objects hold no token)."""
    return await mirror_events(engine, now, vault)
