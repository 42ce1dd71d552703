"""A system's inbound message endpoint: apply a message and record it in the inbox, in one transaction.

``POST /<system>/v1/messages`` takes an envelope with ``Idempotency-Key: <message_id>``. The first delivery
runs the handler registered for the message's ``type``; the handler's effect, any reply it writes to the
system's outbox, and the inbox row commit together. A second delivery of the same ``message_id`` finds the
inbox row and gets the first answer back with ``"status": "already-applied"`` — no second effect.

What the bridge reads from the answer:

- 200 → delivered (applied now, or already applied).
- 409 with problem type ``missing-prerequisite`` and ``wake_on`` → parked until that condition is met.
- other 4xx → dead letter, with the problem detail (the message itself is wrong: fix, then replay).
- 5xx → retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.envelope import Envelope, SystemName
from derbridge.contracts.registry import BY_TYPE
from derbridge.infra.db import utcnow
from derbridge.infra.problems import PROBLEM_RESPONSES, FieldError, ProblemError
from derbridge.infra.upsert import insert_for
from derbridge.infra.web import require_service_token

Handler = Callable[[AsyncConnection, Envelope, Any], Awaitable[dict[str, Any]]]
"""``handler(connection, envelope, payload) -> result``: applies the message inside the open transaction."""


class MissingPrerequisite(Exception):
    """Raised by a handler when the message needs something that has not arrived yet (e.g. the CIS
    customer). The bridge parks the message and delivers it again when ``wake_on`` is announced."""

    def __init__(self, wake_on: str, detail: str) -> None:
        super().__init__(detail)
        self.wake_on = wake_on
        self.detail = detail


class InboundResult(BaseModel):
    """The answer to a delivered message."""

    status: str
    """``applied`` or ``already-applied``."""
    message_id: str
    result: dict[str, Any]


@dataclass
class Inbox:
    """One system's inbound side: its inbox table and a handler per message type it accepts."""

    system: SystemName
    table: Table
    handlers: dict[str, Handler] = field(default_factory=dict)

    def handles(self, message_type: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of ``message_type``."""

        def register(handler: Handler) -> Handler:
            if message_type not in BY_TYPE:
                raise ValueError(f"no contract for message type {message_type!r}")
            self.handlers[message_type] = handler
            return handler

        return register

    async def receive(self, engine: AsyncEngine, envelope: Envelope) -> InboundResult:
        """Apply ``envelope`` once; a repeat returns the stored answer."""
        handler = self.handlers.get(envelope.type)
        contract = BY_TYPE.get(envelope.type)
        if handler is None or contract is None or contract.target is not self.system:
            raise ProblemError(
                422,
                "unknown-message-type",
                "Message type not accepted here",
                f"{self.system.value} does not accept {envelope.type!r} messages; check the route.",
                errors=[FieldError(field="body.type", message="not accepted by this system")],
            )
        try:
            payload = contract.payload.model_validate(envelope.payload)
        except ValidationError as error:
            raise ProblemError(
                422,
                "invalid-payload",
                "The message payload is not valid",
                f"The {envelope.type} payload does not match its contract; fix the sender, then replay.",
                errors=[
                    FieldError(field="body.payload." + ".".join(str(p) for p in e["loc"]), message=e["msg"])
                    for e in error.errors()
                ],
            ) from None

        table = self.table
        async with engine.begin() as connection:
            # Claim the message id first: a concurrent duplicate blocks here (PostgreSQL) or waits for the
            # write lock (SQLite) until this transaction ends, then sees the row and answers from it.
            claim = insert_for(connection.dialect.name, table).values(
                message_id=envelope.message_id,
                type=envelope.type,
                source=envelope.source.system.value,
                received_at=utcnow(),
            )
            # RETURNING, not rowcount: psycopg reports -1 for an INSERT … ON CONFLICT that did nothing.
            claimed = await connection.execute(
                claim.on_conflict_do_nothing(index_elements=[table.c.message_id]).returning(table.c.message_id)
            )
            if claimed.first() is None:
                stored = await connection.scalar(
                    select(table.c.response).where(table.c.message_id == envelope.message_id)
                )
                return InboundResult(status="already-applied", message_id=envelope.message_id, result=stored or {})
            result = await handler(connection, envelope, payload)
            await connection.execute(
                update(table).where(table.c.message_id == envelope.message_id).values(status_code=200, response=result)
            )
        return InboundResult(status="applied", message_id=envelope.message_id, result=result)


def inbound_router(inbox: Inbox) -> APIRouter:
    """``POST /messages`` for ``inbox``'s system (mounted under the system's API prefix)."""
    router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)

    @router.post("/messages", tags=["messages"])
    async def receive_message(
        request: Request,
        envelope: Envelope,
        idempotency_key: Annotated[str, Header(alias="Idempotency-Key", max_length=64)],
    ) -> InboundResult:
        """Apply one message from the bridge, exactly once per ``message_id``."""
        if idempotency_key != envelope.message_id:
            raise ProblemError(
                422,
                "validation-error",
                "Idempotency-Key does not match",
                "Send the message's message_id as the Idempotency-Key header.",
                errors=[FieldError(field="header.Idempotency-Key", message="must equal body.message_id")],
            )
        engine: AsyncEngine = request.app.state.engine
        try:
            return await inbox.receive(engine, envelope)
        except MissingPrerequisite as missing:
            raise ProblemError(
                409,
                "missing-prerequisite",
                "A prerequisite has not arrived yet",
                missing.detail,
                extensions={"wake_on": missing.wake_on},
            ) from None

    return router
