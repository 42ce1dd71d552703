"""F1 · enrollment-request, the DERMS's inbox: Asset Hub's answers (``enrollment-response.v1``).

Each answer is recorded on the request the DERMS forwarded
(:func:`derbridge.derms.services.enrollment_requests.record_answers`), then the edge is told through the
port :attr:`~derbridge.derms.ports.DermsPorts.requests_answered`, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import enrollment_request as contract
from derbridge.contracts.envelope import Envelope
from derbridge.derms.ports import DermsPorts
from derbridge.derms.services.enrollment_requests import record_answers
from derbridge.infra.clock import Clock


def _answered(payload: contract.EnrollmentResponseBatch) -> dict[str, Any]:
    accepted = sum(1 for a in payload.answers if a.answer is contract.Answer.ACCEPTED)
    return {"answers": len(payload.answers), "accepted": accepted, "rejected": len(payload.answers) - accepted}


async def handle_enrollment_response(
    connection: AsyncConnection,
    envelope: Envelope,
    payload: contract.EnrollmentResponseBatch,
    *,
    clock: Clock,
    ports: DermsPorts,
) -> dict[str, Any]:
    """Record Asset Hub's answer to each request of a batch (only an unanswered request takes one, see
    :func:`~derbridge.derms.services.enrollment_requests.record_answers`), then tell the port's listeners."""
    now = clock.now()
    if payload.answers:
        await record_answers(connection, [payload], now)
        for listener in ports.requests_answered:
            await listener(connection, payload.head_end_system, [a.request_id for a in payload.answers], now)
    return _answered(payload)


async def handle_enrollment_responses(
    connection: AsyncConnection,
    messages: Sequence[tuple[Envelope, contract.EnrollmentResponseBatch]],
    *,
    clock: Clock,
    ports: DermsPorts,
) -> list[dict[str, Any]]:
    """:func:`handle_enrollment_response` for a run of messages (Asset Hub answers each single request the
    edge forwarded in its own message): every answer of the run in one ``executemany``, then the listeners
    message by message, in order. The effect is that of one by one: each answer is conditional on the
    request being unanswered, so the first answer in order wins either way, and a listener reads only its
    own message's requests, which no later answer of the run changes."""
    now = clock.now()
    await record_answers(connection, [payload for _, payload in messages], now)
    for _, payload in messages:
        if payload.answers:
            for listener in ports.requests_answered:
                await listener(connection, payload.head_end_system, [a.request_id for a in payload.answers], now)
    return [_answered(payload) for _, payload in messages]
