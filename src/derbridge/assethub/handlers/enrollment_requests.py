"""F1 · enrollment-request, Asset Hub's inbox handlers: an ``enrollment-request.v1`` batch (or a run of
them) is validated and recorded by :mod:`derbridge.assethub.services.enrollment_requests` and answered with
one ``enrollment-response.v1`` per message, in the inbox's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.services.enrollment_requests import apply_enrollment_requests, apply_requests
from derbridge.contracts import enrollment_request as contract
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.infra.clock import Clock
from derbridge.infra.outbox import write_outbox

PASS_REQUESTS = 10_000
"""Requests one set-based pass of a run of messages validates together (a bulk message's worth)."""


async def handle_enrollment_request(
    connection: AsyncConnection, envelope: Envelope, payload: contract.EnrollmentRequestBatch, *, clock: Clock
) -> dict[str, Any]:
    """Answer an ``enrollment-request.v1`` batch with one ``enrollment-response.v1`` (same order, same
    correlation id, caused by the request message)."""
    now = clock.now()
    answers = await apply_enrollment_requests(connection, payload, now=now)
    reply = _reply(envelope, payload, answers, now)
    await write_outbox(connection, t.outbox, [reply])
    return _summary(answers, reply)


async def handle_enrollment_requests(
    connection: AsyncConnection, messages: Sequence[tuple[Envelope, contract.EnrollmentRequestBatch]], *, clock: Clock
) -> list[dict[str, Any]]:
    """:func:`handle_enrollment_request` for a run of messages (the edge forwards each single resource as
    its own message), set-based: the requests of consecutive messages of one head-end are validated and
    recorded in one :func:`apply_enrollment_requests` pass, then each message gets its own reply with its
    own answers. The effect is that of one by one in order, because one pass already judges each request
    after the ones before it: a request repeated from an earlier message gets that first answer, and a
    device accepted earlier is held for the later ones. A request whose predecessor (``previous_requests``)
    comes later in the run is judged after it in the pass, where one by one would park it until then."""
    now = clock.now()
    answers: list[contract.EnrollmentAnswer] = []
    start = 0
    while start < len(messages):
        head_end = messages[start][1].head_end_system
        end, size = start + 1, len(messages[start][1].requests)
        # One pass per head-end, of at most a batch's worth of requests (bulk messages carry thousands).
        while (
            end < len(messages)
            and messages[end][1].head_end_system == head_end
            and size + len(messages[end][1].requests) <= PASS_REQUESTS
        ):
            size += len(messages[end][1].requests)
            end += 1
        requests = [r for _, payload in messages[start:end] for r in payload.requests]
        answers += await apply_requests(connection, head_end, requests, now)
        start = end
    replies: list[Envelope] = []
    results: list[dict[str, Any]] = []
    taken = 0
    for envelope, payload in messages:
        own = answers[taken : taken + len(payload.requests)]
        taken += len(payload.requests)
        reply = _reply(envelope, payload, own, now)
        replies.append(reply)
        results.append(_summary(own, reply))
    await write_outbox(connection, t.outbox, replies)
    return results


def _reply(
    envelope: Envelope,
    payload: contract.EnrollmentRequestBatch,
    answers: list[contract.EnrollmentAnswer],
    now: datetime,
) -> Envelope:
    return new_envelope(
        contract.RESPONSE_TYPE,
        contract.EnrollmentResponseBatch(head_end_system=payload.head_end_system, answers=answers),
        business_key=envelope.business_key,
        correlation_id=envelope.correlation_id,
        causation_id=envelope.message_id,
        occurred_at=now,
        source_instance=envelope.target.instance,
        target_instance=envelope.source.instance,
    )


def _summary(answers: Sequence[contract.EnrollmentAnswer], reply: Envelope) -> dict[str, Any]:
    accepted = sum(1 for a in answers if a.answer is contract.Answer.ACCEPTED)
    # The inbox keeps this summary, not the answers: they travel in the reply, and a batch may hold 10,000.
    return {
        "requests": len(answers),
        "accepted": accepted,
        "rejected": len(answers) - accepted,
        "reply_message_id": reply.message_id,
    }
