"""F2 · device-status-check, Asset Hub's end: ask the DERMS for a device's communication status, time the
question out, and run the enrollment device-setup step on the answers.

**Checks.** :func:`start_status_checks` inserts OPEN checks (``timeout_at`` = now + the program's
``status_check_timeout_minutes``, or the default :class:`ProgramRules` for a check outside an enrollment)
and writes one ``device-status-check.v1`` per check (``check_id`` = ``correlation_id``) in the same
transaction. Agents start one through ``POST /assethub/v1/status-checks`` or the CLI
(:func:`derbridge.usecases.status_checks.run_status_check`, which also waits for the answer).

**Answers** are taken by the inbox handlers (:mod:`derbridge.assethub.handlers.status_checks`), which call
:func:`decide_setup`, :func:`after_failures` and :func:`activate` here.

**Device setup** (job ``enrollment-setup``, every 5 s, :func:`run_setup_step`): every PENDING enrollment
moves to DEVICE_SETUP (``setup_started_at`` = now) and each of its active devices gets an ENROLLMENT_SETUP
check; DEVICE_SETUP enrollments whose ``next_check_at`` is due get a check for each device not yet confirmed
and not already being checked. When every active device of an enrollment is confirmed, it becomes ACTIVE
and the enrollment sync (F3) is queued. Any other answer, or a timeout (job ``status-check-timeouts``, every
5 s, :func:`time_out_status_checks`), schedules a re-check with backoff, or, at or after the end of the setup
period, makes the enrollment SETUP_FAILED with the device and the reason. The rules (when a device is
confirmed, the backoff, the end of the period) are pure, in :mod:`derbridge.assethub.domain.status_checks`.
Every state change keeps its transition.

Decisions where flows.md is open: an enrollment with several devices needs each of them confirmed; an
agent's check is not tied to an enrollment (default rules, no decision); the business clock
(:mod:`derbridge.infra.clock`) dates checks, answers and transitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.enrollment_requests import chunks, transition_rows
from derbridge.assethub.adapters.status_checks import (
    read_device_divisions,
    read_devices,
    read_enrollment_rules,
    read_setups,
)
from derbridge.assethub.domain.enrollment import EnrollmentState, plan_transition
from derbridge.assethub.domain.program import ProgramRules
from derbridge.assethub.domain.status_checks import (
    CheckStatus,
    EnrollmentSetup,
    confirms_online,
    next_setup_check,
    why_not_confirmed,
)
from derbridge.assethub.services import enrollment_sync
from derbridge.contracts import device_status_check as contract
from derbridge.contracts.device_status_check import CheckReason
from derbridge.contracts.enrollment_sync import SyncChange
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.errors import NotFound, not_found
from derbridge.infra.ids import new_ids
from derbridge.infra.outbox import write_outbox

SETUP_BATCH = 5000
"""Enrollments the setup step moves (and re-checks) per run: bounds one transaction; the job runs again."""


@dataclass(frozen=True, slots=True)
class CheckToStart:
    """A status check to start: which device, why, for whom, and the enrollment it serves (if any)."""

    device_id: int
    reason: CheckReason
    requested_by: str
    enrollment_id: str | None = None


# --- starting checks --------------------------------------------------------------------------------------


async def start_status_checks(
    connection: AsyncConnection, checks: Sequence[CheckToStart], *, now: datetime
) -> list[dict[str, Any]]:
    """Insert ``checks`` as OPEN checks and write their ``device-status-check.v1`` messages, in the
    caller's transaction; returns the check rows in the order given. Set-based: a few reads, one insert,
    one outbox write, whatever the number of checks. An unknown device id is a 404 problem."""
    if not checks:
        return []
    devices = await read_devices(connection, sorted({c.device_id for c in checks}))
    for check in checks:
        if check.device_id not in devices:
            raise not_found("device", str(check.device_id))
    rules, division = await read_enrollment_rules(
        connection, sorted({c.enrollment_id for c in checks if c.enrollment_id is not None})
    )
    # A check outside an enrollment names the division of the device's latest enrollment, if it has one.
    device_division = await read_device_divisions(
        connection, sorted({c.device_id for c in checks if c.enrollment_id is None})
    )

    default_rules = ProgramRules()
    timeouts: dict[int, datetime] = {}  # by id() of the rules: a few distinct rules serve every check
    rows_out: list[dict[str, Any]] = []
    envelopes: list[Envelope] = []
    for check, check_id in zip(checks, new_ids(len(checks)), strict=True):
        device = devices[check.device_id]
        enrollment = check.enrollment_id
        check_rules = rules.get(enrollment, default_rules) if enrollment else default_rules
        timeout_at = timeouts.get(id(check_rules))
        if timeout_at is None:
            timeout_at = timeouts[id(check_rules)] = now + timedelta(minutes=check_rules.status_check_timeout_minutes)
        rows_out.append(
            {
                "check_id": check_id,
                "device_id": check.device_id,
                "enrollment_id": enrollment,
                "reason": check.reason.value,
                "requested_by": check.requested_by,
                "status": CheckStatus.OPEN.value,
                "requested_at": now,
                "timeout_at": timeout_at,
                "answered_at": None,
                "result": None,
                "communication_status": None,
                "last_communication_at": None,
                "source": None,
                "detail": None,
                "late_answer": False,
            }
        )
        envelopes.append(
            new_envelope(
                contract.TYPE,
                contract.StatusCheckRequest(
                    check_id=check_id,
                    reason=check.reason,
                    requested_by=check.requested_by,
                    device=contract.CheckedDevice(
                        head_end_system=device.head_end_system,
                        nic_id=device.nic_id,
                        device_type=device.device_type,
                        manufacturer=device.manufacturer,
                        model=device.model,
                        division=division.get(enrollment) if enrollment else device_division.get(check.device_id),
                    ),
                ),
                business_key=f"{device.head_end_system}:{device.nic_id}",
                correlation_id=check_id,
                occurred_at=now,
            )
        )
    await connection.execute(t.device_status_checks.insert(), rows_out)
    await write_outbox(connection, t.outbox, envelopes)
    return rows_out


async def start_status_check(
    connection: AsyncConnection,
    device_id: int,
    reason: CheckReason,
    requested_by: str,
    enrollment_id: str | None = None,
    *,
    now: datetime,
) -> dict[str, Any]:
    """Start one status check of ``device_id`` (see :func:`start_status_checks`); returns the check row."""
    started = await start_status_checks(
        connection, [CheckToStart(device_id, reason, requested_by, enrollment_id)], now=now
    )
    return started[0]


async def start_agent_status_check(
    engine: AsyncEngine, head_end_system: str, nic_id: str, requested_by: str, *, now: datetime
) -> dict[str, Any]:
    """Start an AGENT_TROUBLESHOOT check of the device ``head_end_system:nic_id`` in its own transaction;
    a 404 problem when Asset Hub does not know the device."""
    d = t.devices
    async with engine.begin() as connection:
        device_id = await connection.scalar(
            select(d.c.device_id).where(d.c.head_end_system == head_end_system, d.c.nic_id == nic_id)
        )
        if device_id is None:
            raise NotFound(
                "not-found",
                "device not found",
                f"Asset Hub knows no device {head_end_system}:{nic_id}. Check the head-end system and nic id "
                "(GET /assethub/v1/devices?head_end_system=…); a device is known once an enrollment request "
                "for it was accepted.",
            )
        return await start_status_check(connection, device_id, CheckReason.AGENT_TROUBLESHOOT, requested_by, now=now)


# --- the setup step ----------------------------------------------------------------------------------------


def _transition_rows(
    moves: Sequence[tuple[str, str | None]], from_state: EnrollmentState, to_state: EnrollmentState, now: datetime
) -> list[dict[str, Any]]:
    return transition_rows(plan_transition(eid, from_state, to_state, now, reason) for eid, reason in moves)


async def _move(
    connection: AsyncConnection,
    moves: dict[str, str | None],
    from_state: EnrollmentState,
    to_state: EnrollmentState,
    now: datetime,
    **values: Any,
) -> list[str]:
    """Move the enrollments ``moves`` names from ``from_state`` to ``to_state`` (with each one's reason) and
    keep the transitions; an enrollment that is no longer in ``from_state`` is left alone. Returns the ids
    moved."""
    e = t.enrollments
    moved: list[str] = []
    for part in chunks(sorted(moves)):
        result = await connection.execute(
            update(e)
            .where(e.c.enrollment_id.in_(part), e.c.state == from_state.value)
            .values(state=to_state.value, updated_at=now, **values)
            .returning(e.c.enrollment_id)
        )
        moved += [r.enrollment_id for r in result]
    if moved:
        await connection.execute(
            t.enrollment_transitions.insert(),
            _transition_rows([(m, moves[m]) for m in sorted(moved)], from_state, to_state, now),
        )
    return sorted(moved)


def _checks_needed(setups: Sequence[EnrollmentSetup]) -> list[CheckToStart]:
    return [
        CheckToStart(device_id, CheckReason.ENROLLMENT_SETUP, "enrollment-setup", setup.enrollment_id)
        for setup in setups
        for device_id in sorted(setup.devices)
        if not setup.confirmed(device_id) and not setup.being_checked(device_id)
    ]


async def run_setup_step(connection: AsyncConnection, *, now: datetime, limit: int = SETUP_BATCH) -> int:
    """The device-setup step at ``now``: PENDING enrollments start their setup, due re-checks start; returns
    how many enrollments had checks started."""
    e = t.enrollments
    pending = [
        r.enrollment_id
        for r in await connection.execute(
            select(e.c.enrollment_id)
            .where(e.c.state == EnrollmentState.PENDING.value)
            .order_by(e.c.enrollment_id)
            .limit(limit)
        )
    ]
    started = await _move(
        connection,
        dict.fromkeys(pending, "device setup started: checking that the device communicates"),
        EnrollmentState.PENDING,
        EnrollmentState.DEVICE_SETUP,
        now,
        setup_started_at=now,
        next_check_at=None,
    )
    due = [
        r.enrollment_id
        for r in await connection.execute(
            select(e.c.enrollment_id)
            .where(e.c.state == EnrollmentState.DEVICE_SETUP.value, e.c.next_check_at <= now)
            .order_by(e.c.next_check_at, e.c.enrollment_id)
            .limit(limit)
        )
    ]
    rechecked: list[str] = []
    for part in chunks(due):
        result = await connection.execute(
            update(e)
            .where(
                e.c.enrollment_id.in_(part), e.c.state == EnrollmentState.DEVICE_SETUP.value, e.c.next_check_at <= now
            )
            .values(next_check_at=None, updated_at=now)
            .returning(e.c.enrollment_id)
        )
        rechecked += [r.enrollment_id for r in result]
    setups = await read_setups(connection, started + rechecked)
    await start_status_checks(connection, _checks_needed([setups[i] for i in sorted(setups)]), now=now)
    return len(started) + len(rechecked)


@dataclass(frozen=True, slots=True)
class SetupFailure:
    """A setup check that did not confirm its device."""

    enrollment_id: str
    device_id: int
    why: str


async def after_failures(
    connection: AsyncConnection,
    failures: Sequence[SetupFailure],
    now: datetime,
    setups: dict[str, EnrollmentSetup] | None = None,
) -> None:
    """Schedule the re-check of each enrollment with a failed setup check, or fail its setup when the setup
    period is over. Set-based over all ``failures`` (the timeout job passes many); ``setups`` are the
    enrollments' facts when the caller has already read them (locked)."""
    if not failures:
        return
    if setups is None:
        setups = await read_setups(connection, [f.enrollment_id for f in failures], lock=True)
    schedule: dict[str, datetime] = {}
    failed: dict[str, str | None] = {}
    for failure in failures:
        setup = setups.get(failure.enrollment_id)
        if setup is None or setup.state != EnrollmentState.DEVICE_SETUP.value or failure.enrollment_id in failed:
            continue
        started = setup.setup_started_at or now
        at = next_setup_check(started, max(1, setup.failed_checks(failure.device_id)), setup.rules, now)
        if at is None:
            device = setup.devices.get(failure.device_id)
            failed[failure.enrollment_id] = (
                f"{device.key if device else failure.device_id}: {failure.why}; not seen online within "
                f"{setup.rules.status_freshness_hours:g} h of a check during the "
                f"{setup.rules.setup_recheck_period_hours:g} h setup period that started {started.isoformat()}"
            )
        elif setup.next_check_at is None:
            schedule[failure.enrollment_id] = min(at, schedule.get(failure.enrollment_id, at))
    await _move(connection, failed, EnrollmentState.DEVICE_SETUP, EnrollmentState.SETUP_FAILED, now, next_check_at=None)
    planned = [(eid, at) for eid, at in sorted(schedule.items()) if eid not in failed]
    if planned:
        e = t.enrollments
        # Only an enrollment with no re-check planned takes one: the first failure of a round plans it.
        await connection.execute(
            update(e)
            .where(
                e.c.enrollment_id == bindparam("b_enrollment_id"),
                e.c.state == EnrollmentState.DEVICE_SETUP.value,
                e.c.next_check_at.is_(None),
            )
            .values(next_check_at=bindparam("b_next_check_at"), updated_at=now),
            [{"b_enrollment_id": eid, "b_next_check_at": at} for eid, at in planned],
        )


async def after_confirmation(connection: AsyncConnection, setup: EnrollmentSetup, now: datetime) -> bool:
    """Make the enrollment of ``setup`` (read, locked, after the confirming answer was stored) ACTIVE if
    every one of its devices is now confirmed online, and queue its enrollment sync (F3); returns whether
    it became ACTIVE."""
    return bool(await activate(connection, [setup], now))


async def activate(connection: AsyncConnection, setups: Sequence[EnrollmentSetup], now: datetime) -> list[str]:
    """Make ACTIVE each enrollment of ``setups`` (read, locked, after the confirming answers were stored)
    that is in DEVICE_SETUP with every one of its devices confirmed online, and queue their enrollment syncs
    (F3), set-based; returns the ids activated."""
    moves: dict[str, str | None] = {
        setup.enrollment_id: "device setup complete: seen online ("
        + ", ".join(sorted(ref.key for ref in setup.devices.values()))
        + ")"
        for setup in setups
        if setup.state == EnrollmentState.DEVICE_SETUP.value
        and setup.devices
        and all(setup.confirmed(device_id) for device_id in setup.devices)
    }
    if not moves:
        return []
    moved = await _move(
        connection, moves, EnrollmentState.DEVICE_SETUP, EnrollmentState.ACTIVE, now, next_check_at=None
    )
    if moved:
        await enrollment_sync.queue_enrollment_sync(connection, moved, change=SyncChange.ENROLLED, now=now)
    return moved


async def time_out_status_checks(connection: AsyncConnection, *, now: datetime) -> int:
    """OPEN checks past their ``timeout_at`` become TIMED_OUT; a timed-out setup check counts as a failed
    one (re-check or setup failure). Returns how many checks timed out."""
    c = t.device_status_checks
    timed_out = list(
        await connection.execute(
            update(c)
            .where(c.c.status == CheckStatus.OPEN.value, c.c.timeout_at < now)
            .values(status=CheckStatus.TIMED_OUT.value)
            .returning(c.c.check_id, c.c.enrollment_id, c.c.device_id, c.c.reason, c.c.timeout_at)
        )
    )
    await after_failures(
        connection,
        [
            SetupFailure(row.enrollment_id, row.device_id, f"no answer from the DERMS by {row.timeout_at.isoformat()}")
            for row in timed_out
            if row.reason == CheckReason.ENROLLMENT_SETUP.value and row.enrollment_id is not None
        ],
        now,
    )
    return len(timed_out)


async def decide_setup(
    connection: AsyncConnection,
    enrollment_id: str,
    device_id: int,
    payload: contract.StatusCheckResponse,
    now: datetime,
) -> None:
    """After a setup check of ``device_id`` was answered in time: confirm it (and maybe activate the
    enrollment) or count it as failed (re-check or setup failure)."""
    setups = await read_setups(connection, [enrollment_id], lock=True)
    setup = setups.get(enrollment_id)
    if setup is None:
        return
    status, seen = payload.communication_status.value, payload.last_communication_at
    if confirms_online(status, seen, now, setup.rules):
        await after_confirmation(connection, setup, now)
    else:
        why = why_not_confirmed(status, seen, payload.detail, setup.rules)
        await after_failures(connection, [SetupFailure(enrollment_id, device_id, why)], now, setups)
