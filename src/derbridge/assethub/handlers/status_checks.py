"""F2 · device-status-check, Asset Hub's inbox handlers and jobs: the DERMS's answers to status checks
(``device-status-check-response.v1``, single and batch) and the two jobs of the device-setup step
(``enrollment-setup``, ``status-check-timeouts``). The checks, the setup step and its decisions are in
:mod:`derbridge.assethub.services.status_checks`; the rules in :mod:`derbridge.assethub.domain.status_checks`.

**Answers** (:func:`handle_status_check_response`): an OPEN check answered by its ``timeout_at`` becomes
ANSWERED. An answer after ``timeout_at`` is late: it is recorded with ``late_answer = true`` and changes no
decision — a TIMED_OUT check stays TIMED_OUT, and an OPEN one past its time is timed out then and there,
exactly as the timeout job would have. A second answer to an ANSWERED check (the DERMS may answer again
after a fresh reading) replaces the stored one when it is newer; it can complete a setup, never fail one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.enrollment_requests import chunks
from derbridge.assethub.adapters.status_checks import read_setups
from derbridge.assethub.domain.status_checks import CheckStatus, confirms_online, why_not_confirmed
from derbridge.assethub.services.status_checks import (
    SetupFailure,
    activate,
    after_confirmation,
    after_failures,
    decide_setup,
    run_setup_step,
    time_out_status_checks,
)
from derbridge.contracts import device_status_check as contract
from derbridge.contracts.device_status_check import CheckReason
from derbridge.contracts.envelope import Envelope
from derbridge.errors import Invalid
from derbridge.infra.clock import Clock
from derbridge.infra.inbound import NotBatchable

# --- jobs -----------------------------------------------------------------------------------------------------


async def enrollment_setup_job(engine: AsyncEngine, now: datetime) -> int:
    """Job: the device-setup step (see :func:`run_setup_step`)."""
    async with engine.begin() as connection:
        return await run_setup_step(connection, now=now)


async def status_check_timeouts_job(engine: AsyncEngine, now: datetime) -> int:
    """Job: time out unanswered checks (see :func:`time_out_status_checks`)."""
    async with engine.begin() as connection:
        return await time_out_status_checks(connection, now=now)


# --- answers ------------------------------------------------------------------------------------------------


async def handle_status_check_response(
    connection: AsyncConnection, envelope: Envelope, payload: contract.StatusCheckResponse, *, clock: Clock
) -> dict[str, Any]:
    """Record the DERMS's answer to a check and, for a setup check answered in time, decide the setup."""
    now = clock.now()
    c = t.device_status_checks
    answer = {
        "answered_at": now,
        "result": payload.result.value,
        "communication_status": payload.communication_status.value,
        "last_communication_at": payload.last_communication_at,
        "source": payload.source,
        "detail": payload.detail,
    }
    # The common case first, in one statement: an OPEN check answered by its timeout.
    on_time = (
        await connection.execute(
            update(c)
            .where(c.c.check_id == payload.check_id, c.c.status == CheckStatus.OPEN.value, c.c.timeout_at >= now)
            .values(status=CheckStatus.ANSWERED.value, late_answer=False, **answer)
            .returning(c.c.reason, c.c.enrollment_id, c.c.device_id)
        )
    ).first()
    if on_time is not None:
        if on_time.reason == CheckReason.ENROLLMENT_SETUP.value and on_time.enrollment_id is not None:
            await decide_setup(connection, on_time.enrollment_id, on_time.device_id, payload, now)
        return {"check_id": payload.check_id, "outcome": "answered"}

    # Locked: the timeout job may be timing this very check out; what is read here then stays true.
    check = (await connection.execute(select(c).where(c.c.check_id == payload.check_id).with_for_update())).first()
    if check is None:
        raise Invalid(
            "unknown-status-check",
            "Unknown status check",
            f"Asset Hub has no status check {payload.check_id!r}, so this answer matches no question. Check "
            "that the DERMS answered the right system, then drop the message.",
        )
    is_setup = check.reason == CheckReason.ENROLLMENT_SETUP.value and check.enrollment_id is not None
    if check.status == CheckStatus.OPEN.value:
        # Past its timeout, before the timeout job ran: the check times out now, as it would have, and the
        # answer is kept as late.
        await connection.execute(
            update(c)
            .where(c.c.check_id == check.check_id)
            .values(status=CheckStatus.TIMED_OUT.value, late_answer=True, **answer)
        )
        if is_setup:
            why = f"no answer from the DERMS by {check.timeout_at.isoformat()}"
            await after_failures(connection, [SetupFailure(check.enrollment_id, check.device_id, why)], now)
        return {"check_id": check.check_id, "outcome": "late"}
    if check.status == CheckStatus.TIMED_OUT.value:
        await connection.execute(update(c).where(c.c.check_id == check.check_id).values(late_answer=True, **answer))
        return {"check_id": check.check_id, "outcome": "late"}

    # A second answer to an answered check (after a fresh reading): kept when it is newer; it may confirm a
    # device still in setup, but a decision already taken on the first answer stands.
    newer = payload.last_communication_at is not None and (
        check.last_communication_at is None or payload.last_communication_at > check.last_communication_at
    )
    if not newer:
        return {"check_id": check.check_id, "outcome": "ignored: not newer than the answer recorded"}
    await connection.execute(update(c).where(c.c.check_id == check.check_id).values(**answer))
    if is_setup:
        setup = (await read_setups(connection, [check.enrollment_id], lock=True)).get(check.enrollment_id)
        if setup is not None:
            await after_confirmation(connection, setup, now)
    return {"check_id": check.check_id, "outcome": "updated"}


async def handle_status_check_responses(
    connection: AsyncConnection, messages: Sequence[tuple[Envelope, contract.StatusCheckResponse]], *, clock: Clock
) -> list[dict[str, Any]]:
    """:func:`handle_status_check_response` for a run of answers, set-based, when every answer is the common
    case — an OPEN check answered by its timeout, no check answered twice in the run. Anything else is
    declined (:class:`NotBatchable`) and applied one by one. The effect is that of applying the answers one
    by one in order: a failure plans the re-check from the first failed device of an enrollment, and an
    enrollment whose devices the run confirms all becomes ACTIVE with its sync queued."""
    now = clock.now()
    c = t.device_status_checks
    check_ids = [p.check_id for _, p in messages]
    if len(set(check_ids)) != len(check_ids):
        raise NotBatchable("a check is answered twice in the run")
    checks = {
        row.check_id: row
        for part in chunks(sorted(check_ids))
        for row in await connection.execute(
            select(c.c.check_id, c.c.status, c.c.timeout_at, c.c.reason, c.c.enrollment_id, c.c.device_id)
            .where(c.c.check_id.in_(part))
            .with_for_update()
        )
    }
    for check_id in check_ids:
        check = checks.get(check_id)
        if check is None or check.status != CheckStatus.OPEN.value or check.timeout_at < now:
            raise NotBatchable(f"check {check_id} is unknown, answered or late")
    await connection.execute(
        update(c)
        .where(c.c.check_id == bindparam("b_check_id"), c.c.status == CheckStatus.OPEN.value)
        .values(
            status=CheckStatus.ANSWERED.value,
            late_answer=False,
            answered_at=now,
            result=bindparam("b_result"),
            communication_status=bindparam("b_communication_status"),
            last_communication_at=bindparam("b_last_communication_at"),
            source=bindparam("b_source"),
            detail=bindparam("b_detail"),
        ),
        [
            {
                "b_check_id": p.check_id,
                "b_result": p.result.value,
                "b_communication_status": p.communication_status.value,
                "b_last_communication_at": p.last_communication_at,
                "b_source": p.source,
                "b_detail": p.detail,
            }
            for _, p in messages
        ],
    )
    setup_answers = [
        (checks[p.check_id], p)
        for _, p in messages
        if checks[p.check_id].reason == CheckReason.ENROLLMENT_SETUP.value and checks[p.check_id].enrollment_id
    ]
    if setup_answers:
        setups = await read_setups(connection, [check.enrollment_id for check, _ in setup_answers], lock=True)
        confirmed: set[str] = set()
        failures: dict[str, SetupFailure] = {}  # the first failure of each enrollment, as one by one would plan
        for check, p in setup_answers:
            setup = setups.get(check.enrollment_id)
            if setup is None:
                continue
            status, seen = p.communication_status.value, p.last_communication_at
            if confirms_online(status, seen, now, setup.rules):
                confirmed.add(check.enrollment_id)
            elif check.enrollment_id not in failures:
                why = why_not_confirmed(status, seen, p.detail, setup.rules)
                failures[check.enrollment_id] = SetupFailure(check.enrollment_id, check.device_id, why)
        # One by one, a failed device stays unconfirmed for the rest of the run (setup checks only the
        # unconfirmed devices), so an enrollment with a failure in the run is never activated by it: its
        # confirmations only store their answers. Were a failed device confirmed by an earlier check, the
        # order would matter: one by one then.
        if any(setups[f.enrollment_id].confirmed(f.device_id) for f in failures.values()):
            raise NotBatchable("a device failed in the run is confirmed by an earlier check")
        await after_failures(connection, list(failures.values()), now, setups)
        await activate(connection, [setups[e] for e in sorted(confirmed - failures.keys())], now)
    return [{"check_id": p.check_id, "outcome": "answered"} for _, p in messages]
