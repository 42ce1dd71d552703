"""F2 · device-status-check, the DERMS's inbox: answer a check at once from the stored communication status
(:mod:`derbridge.derms.services.status_checks`), then let the port
:attr:`~derbridge.derms.ports.DermsPorts.fresh_readings` ask the aggregator for a fresh reading, in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import device_status_check as contract
from derbridge.contracts.envelope import Envelope
from derbridge.derms.ports import DermsPorts
from derbridge.derms.services.status_checks import answer_status_check, answer_status_checks
from derbridge.infra.clock import Clock


def _answered(answer: contract.StatusCheckResponse) -> dict[str, Any]:
    return {
        "check_id": answer.check_id,
        "result": answer.result.value,
        "communication_status": answer.communication_status.value,
    }


async def handle_status_check(
    connection: AsyncConnection,
    envelope: Envelope,
    payload: contract.StatusCheckRequest,
    *,
    clock: Clock,
    ports: DermsPorts,
) -> dict[str, Any]:
    """Answer a status check at once from the stored status, then let the port's requesters ask the
    aggregator for a fresh reading."""
    now = clock.now()
    answer = await answer_status_check(
        connection,
        payload.check_id,
        payload.device.head_end_system,
        payload.device.nic_id,
        causation_id=envelope.message_id,
        now=now,
        source_instance=envelope.target.instance,
        target_instance=envelope.source.instance,
    )
    for requester in ports.fresh_readings:
        await requester(connection, [(envelope, payload)], now)
    return _answered(answer)


async def handle_status_checks(
    connection: AsyncConnection,
    messages: Sequence[tuple[Envelope, contract.StatusCheckRequest]],
    *,
    clock: Clock,
    ports: DermsPorts,
) -> list[dict[str, Any]]:
    """:func:`handle_status_check` for a run of checks, set-based
    (:func:`~derbridge.derms.services.status_checks.answer_status_checks`): the same answers, in the same
    order; then the port's requesters once for the whole run."""
    now = clock.now()
    answers = await answer_status_checks(connection, messages, now)
    for requester in ports.fresh_readings:
        await requester(connection, messages, now)
    return [_answered(answer) for answer in answers]
