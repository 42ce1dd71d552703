"""What the demo checks: that each call it makes was taken, that each stage did what it must, and, at the end,
what the systems hold (the summary) and that the two systems agree (:func:`consistency`).

Everything here reads; nothing drives the systems (:mod:`derbridge.demo.script`) or prints
(:mod:`derbridge.demo.report`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import httpx
from sqlalchemy import Row, func, select

from derbridge.assethub.adapters import tables as ah
from derbridge.bridge import operations as ops
from derbridge.bridge.tracking import Tracker
from derbridge.derms.adapters import tables as dm
from derbridge.runtime import Runtime


class DemoFailure(RuntimeError):
    """A stage did not do what it must (an API refused, or the systems disagree)."""


def checked(response: httpx.Response, what: str, *ok: int) -> dict[str, Any]:
    """The body of ``response``, which must have one of the ``ok`` statuses (any 2xx of 200/201/202 by
    default); else :class:`DemoFailure` saying ``what`` failed."""
    if response.status_code not in (ok or (200, 201, 202)):
        raise DemoFailure(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


async def current_snapshot(runtime: Runtime, transfer: dict[str, Any]) -> Row[Any]:
    """The DERMS's current score snapshot after a transfer (``transfer``: its answer): there must be one."""
    async with runtime.async_engine("derms").connect() as connection:
        current = (
            await connection.execute(select(dm.score_snapshots).where(dm.score_snapshots.c.is_current.is_(True)))
        ).first()
    if current is None:
        raise DemoFailure(f"the DERMS has no current score snapshot after the transfer: {transfer}")
    return current


def check_withdrawn(event_id: str, seen: Iterable[Iterable[dict[str, Any]]]) -> None:
    """No aggregator sees cancelled event ``event_id`` among the VTN events it reads (``seen``, per VEN)."""
    if any(e["eventName"].endswith(event_id) for events in seen for e in events):
        raise DemoFailure(f"an aggregator still sees cancelled event {event_id} on the VTN")


# --- reading the systems ---------------------------------------------------------------------------------


async def count_by(runtime: Runtime, system: str, column: Any) -> dict[str, int]:
    async with runtime.async_engine(system).connect() as connection:  # type: ignore[arg-type]
        rows = await connection.execute(select(column, func.count()).group_by(column))
        return {str(k): int(v) for k, v in rows.tuples()}


async def count_rows(runtime: Runtime, system: str, table: Any, *where: Any) -> int:
    async with runtime.async_engine(system).connect() as connection:  # type: ignore[arg-type]
        return int(await connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def available_devices(runtime: Runtime) -> int:
    """Devices the DERMS holds AVAILABLE."""
    return await count_rows(
        runtime, "derms", dm.device_availability, dm.device_availability.c.availability == "AVAILABLE"
    )


async def summary(runtime: Runtime, event_ids: Iterable[str], seconds: float) -> dict[str, Any]:
    """What the demo reports at the end (and ``--summary`` writes): messages per flow, enrollments, status
    checks, the latest scores, the events, and the :func:`consistency` checks."""
    event_ids = list(event_ids)
    tracker = Tracker(runtime.async_engine("bridge"))
    flows = await ops.message_stats(tracker)
    enrollments = await count_by(runtime, "assethub", ah.enrollments.c.state)
    checks: Counter[str] = Counter()
    async with runtime.async_engine("assethub").connect() as connection:
        for status, result, count in (
            await connection.execute(
                select(ah.device_status_checks.c.status, ah.device_status_checks.c.result, func.count()).group_by(
                    ah.device_status_checks.c.status, ah.device_status_checks.c.result
                )
            )
        ).tuples():
            checks["TIMED_OUT" if status == "TIMED_OUT" else str(result or status)] += int(count)
        latest = (
            await connection.execute(
                select(ah.score_snapshots).order_by(ah.score_snapshots.c.generated_at.desc()).limit(1)
            )
        ).first()
    events = []
    for event_id in event_ids:
        events.append(await event_summary(runtime, event_id))
    return {
        "flows": {
            flow: {k: counts[k] for k in ("pending", "delivered", "retrying", "parked", "dead")}
            for flow, counts in flows.items()
        },
        "enrollments": enrollments,
        "status_checks": dict(checks),
        "scores": {"rows": latest.row_count if latest else 0, "eligible": latest.eligible_count if latest else 0},
        "events": events,
        "consistency": await consistency(runtime, event_ids),
        "seconds": round(seconds, 3),
    }


async def event_summary(runtime: Runtime, event_id: str) -> dict[str, Any]:
    async with runtime.async_engine("derms").connect() as connection:
        event = (
            await connection.execute(select(dm.program_events).where(dm.program_events.c.event_id == event_id))
        ).one()
    async with runtime.async_engine("assethub").connect() as connection:
        outcomes = await connection.execute(
            select(ah.participation_records.c.outcome, func.count())
            .where(ah.participation_records.c.event_id == event_id, ah.participation_records.c.outcome.is_not(None))
            .group_by(ah.participation_records.c.outcome)
        )
        outcome_counts = {str(k): int(v) for k, v in outcomes.tuples()}
    return {
        "event_id": event_id,
        "status": event.status,
        "requested": event.target_devices or 0,
        "reserved": event.reserved_count,
        "outcomes": outcome_counts,
    }


# --- the two systems agree -------------------------------------------------------------------------------


async def consistency(runtime: Runtime, event_ids: Iterable[str]) -> dict[str, bool]:
    """The checks the two systems must pass together at the end of the demo."""
    async with runtime.async_engine("assethub").connect() as connection:
        active = set(
            (
                await connection.execute(
                    select(ah.devices.c.head_end_system, ah.devices.c.nic_id)
                    .join(ah.enrollment_devices, ah.enrollment_devices.c.device_id == ah.devices.c.device_id)
                    .join(ah.enrollments, ah.enrollments.c.enrollment_id == ah.enrollment_devices.c.enrollment_id)
                    .where(ah.enrollments.c.state == "ACTIVE", ah.enrollment_devices.c.removed_at.is_(None))
                )
            ).tuples()
        )
    async with runtime.async_engine("derms").connect() as connection:
        available = set(
            (
                await connection.execute(
                    select(dm.devices.c.head_end_system, dm.devices.c.nic_id)
                    .join(dm.device_availability, dm.device_availability.c.device_id == dm.devices.c.device_id)
                    .where(dm.device_availability.c.availability == "AVAILABLE")
                )
            ).tuples()
        )
    cancelled_ok = completed_ok = True
    for event_id in event_ids:
        summary = await event_summary(runtime, event_id)
        async with runtime.async_engine("derms").connect() as connection:
            held = await connection.scalar(
                select(func.count())
                .select_from(dm.reservations)
                .where(dm.reservations.c.event_id == event_id, dm.reservations.c.status == "RESERVED")
            )
        async with runtime.async_engine("assethub").connect() as connection:
            records = (
                await connection.execute(
                    select(ah.participation_records.c.status, ah.participation_records.c.outcome).where(
                        ah.participation_records.c.event_id == event_id
                    )
                )
            ).all()
        if summary["status"] == "CANCELLED":
            cancelled_ok = cancelled_ok and held == 0 and all(r.status == "CANCELLED" for r in records)
        elif summary["status"] == "COMPLETED":
            completed_ok = (
                completed_ok and len(records) == summary["reserved"] and all(r.outcome is not None for r in records)
            )
    return {
        "programs_match": await programs_match(runtime),
        "active_enrollments_match_available_devices": active == available,
        "cancelled_event_released": cancelled_ok,
        "completed_event_has_every_outcome": completed_ok,
    }


async def programs_match(runtime: Runtime) -> bool:
    """Every Asset Hub program is in the DERMS at its latest version, with its name, status and dispatch
    settings (program sync), and the DERMS has no program of its own."""
    async with runtime.async_engine("assethub").connect() as connection:
        mine = {
            (r.program_code, r.name, r.status, r.version, r.rules.get("expected_shed_kw", 1.0))
            for r in await connection.execute(select(ah.programs))
        }
    async with runtime.async_engine("derms").connect() as connection:
        theirs = {
            (r.program_code, r.name, r.status, r.version, r.expected_shed_kw)
            for r in await connection.execute(select(dm.programs))
        }
    return mine == theirs
