"""``derbridge assethub status-check``: start an agent's status check of a device and wait (bounded) for the
DERMS's answer. The check itself is Asset Hub's (:mod:`derbridge.assethub.services.status_checks`); the
waiting is the CLI's, polling the check row until the DERMS has answered or the wait is over."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.status_checks import CheckStatus
from derbridge.assethub.services.status_checks import start_agent_status_check
from derbridge.errors import not_found
from derbridge.runtime import Runtime

DEFAULT_WAIT_SECONDS = 15.0
"""How long :func:`run_status_check` waits for the DERMS's answer by default."""


async def wait_for_status_check(
    engine: AsyncEngine, check_id: str, *, timeout_seconds: float = DEFAULT_WAIT_SECONDS, poll_seconds: float = 0.25
) -> dict[str, Any]:
    """Poll check ``check_id`` until it is no longer OPEN or ``timeout_seconds`` (wall time) have passed;
    returns the check row as it then is (still OPEN when the DERMS has not answered in time)."""
    c = t.device_status_checks
    deadline = time.monotonic() + timeout_seconds
    while True:
        async with engine.connect() as connection:
            row = (await connection.execute(select(c).where(c.c.check_id == check_id))).mappings().first()
        if row is None:
            raise not_found("status check", check_id)
        left = deadline - time.monotonic()
        if row["status"] != CheckStatus.OPEN.value or left <= 0:
            return dict(row)
        await asyncio.sleep(min(poll_seconds, left))


async def run_status_check(
    runtime: Runtime,
    head_end_system: str,
    nic_id: str,
    *,
    requested_by: str = "cli",
    timeout_seconds: float = DEFAULT_WAIT_SECONDS,
    poll_seconds: float = 0.25,
) -> dict[str, Any]:
    """``derbridge assethub status-check HEAD_END NIC_ID``: start an agent's check of the device and wait
    (bounded) for the DERMS's answer; returns the check row — ANSWERED with the answer, or still OPEN
    when no answer came within ``timeout_seconds`` (the bridge must be running to carry it)."""
    engine = runtime.async_engine("assethub")
    check = await start_agent_status_check(engine, head_end_system, nic_id, requested_by, now=runtime.clock.now())
    return await wait_for_status_check(
        engine, check["check_id"], timeout_seconds=timeout_seconds, poll_seconds=poll_seconds
    )


# --- the setup step ----------------------------------------------------------------------------------------
