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

A handler refuses a message by raising a domain error (:mod:`derbridge.errors`): the answer is the problem
the API would give for it, its status from the one table (:data:`derbridge.infra.problems.PROBLEM_STATUS`) —
:class:`~derbridge.errors.MissingPrerequisite` is the 409 that parks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts.envelope import Envelope, SystemName
from derbridge.contracts.registry import BY_TYPE
from derbridge.errors import DomainError, FieldError, Invalid
from derbridge.infra.db import utcnow
from derbridge.infra.outbox import insert_rows
from derbridge.infra.problems import PROBLEM_BASE, PROBLEM_RESPONSES, ProblemError, as_problem
from derbridge.infra.upsert import frozen, insert_for
from derbridge.infra.web import require_service_token

log = structlog.get_logger("derbridge.inbound")

MAX_BATCH = 1000
"""Messages one batch delivery may carry."""

Handler = Callable[[AsyncConnection, Envelope, Any], Awaitable[dict[str, Any]]]
"""``handler(connection, envelope, payload) -> result``: applies the message inside the open transaction."""

BatchHandler = Callable[[AsyncConnection, Sequence[tuple[Envelope, Any]]], Awaitable[list[dict[str, Any]]]]
"""``handler(connection, [(envelope, payload), …]) -> [result, …]``: applies a run of messages of one type
set-based, with exactly the effect of applying them one by one in that order, and returns one result per
message. It raises :class:`NotBatchable` for a run it cannot apply that way (an uncommon case): the inbox
then applies the run's messages one by one."""


class NotBatchable(Exception):
    """A batch handler declines a run of messages; the inbox applies them one by one instead."""


class InboundResult(BaseModel):
    """The answer to a delivered message."""

    status: str
    """``applied`` or ``already-applied``."""
    message_id: str
    result: dict[str, Any]


@dataclass(frozen=True)
class Inbox:
    """One system's inbound side: its inbox table and a handler per message type it accepts, given by the
    system's composition root (``build()``); nothing is added after."""

    system: SystemName
    table: Table
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    batch_handlers: Mapping[str, BatchHandler] = field(default_factory=dict)
    """Set-based handlers of runs of one message type in a batch delivery (such a type keeps its one-message
    handler for single deliveries and fallbacks)."""

    def __post_init__(self) -> None:
        for message_type in [*self.handlers, *self.batch_handlers]:
            contract = BY_TYPE.get(message_type)
            if contract is None:
                raise ValueError(f"no contract for message type {message_type!r}")
            if contract.target is not self.system:
                raise ValueError(f"{message_type!r} goes to {contract.target.value}, not {self.system.value}")
        alone = set(self.batch_handlers) - set(self.handlers)
        if alone:
            raise ValueError(f"a batch handler needs its one-message handler too: {sorted(alone)}")

    def _prepare(self, envelope: Envelope) -> tuple[Handler, BaseModel]:
        """The handler and the validated payload of ``envelope``; :class:`Invalid` when it has neither."""
        handler = self.handlers.get(envelope.type)
        contract = BY_TYPE.get(envelope.type)
        if handler is None or contract is None or contract.target is not self.system:
            raise Invalid(
                "unknown-message-type",
                "Message type not accepted here",
                f"{self.system.value} does not accept {envelope.type!r} messages; check the route.",
                errors=[FieldError(field="body.type", message="not accepted by this system")],
            )
        try:
            return handler, contract.payload.model_validate(envelope.payload)
        except ValidationError as error:
            raise Invalid(
                "invalid-payload",
                "The message payload is not valid",
                f"The {envelope.type} payload does not match its contract; fix the sender, then replay.",
                errors=[
                    FieldError(field="body.payload." + ".".join(str(p) for p in e["loc"]), message=e["msg"])
                    for e in error.errors()
                ],
            ) from None

    async def _apply(
        self, connection: AsyncConnection, envelope: Envelope, handler: Handler, payload: BaseModel
    ) -> InboundResult:
        """Claim the message id, then apply — inside the caller's transaction (or savepoint)."""
        table = self.table
        # Claim the message id first: a concurrent duplicate blocks here (PostgreSQL) or waits for the
        # write lock (SQLite) until this transaction ends, then sees the row and answers from it.
        claimed = await connection.execute(
            frozen(connection.dialect, ("inbox-claim", table.fullname), lambda dialect: _claim(dialect, table)),
            _claim_values(envelope),
        )
        if claimed.first() is None:
            stored = await connection.scalar(select(table.c.response).where(table.c.message_id == envelope.message_id))
            return InboundResult(status="already-applied", message_id=envelope.message_id, result=stored or {})
        result = await handler(connection, envelope, payload)
        await connection.execute(
            update(table).where(table.c.message_id == envelope.message_id).values(status_code=200, response=result)
        )
        return InboundResult(status="applied", message_id=envelope.message_id, result=result)

    async def receive(self, engine: AsyncEngine, envelope: Envelope) -> InboundResult:
        """Apply ``envelope`` once; a repeat returns the stored answer."""
        handler, payload = self._prepare(envelope)
        async with engine.begin() as connection:
            return await self._apply(connection, envelope, handler, payload)

    async def receive_many(self, engine: AsyncEngine, envelopes: Sequence[Envelope]) -> list[BatchItem]:
        """Apply many messages in one transaction: every message gets its own answer (in order), and one
        message's refusal or failure rolls back that message alone. A run of consecutive messages of a type
        with a batch handler is applied set-based in one savepoint; when that fails or is declined, the
        run is applied again one message at a time, each in its own savepoint."""
        items: list[BatchItem] = []
        async with engine.begin() as connection:
            for run in _runs(envelopes):
                batch_handler = self.batch_handlers.get(run[0].type)
                if batch_handler is not None and len(run) > 1:
                    answered = await self._apply_run(connection, run, batch_handler)
                    if answered is not None:
                        items += answered
                        continue
                for envelope in run:
                    items.append(await self._apply_alone(connection, envelope))
        return items

    async def _apply_alone(self, connection: AsyncConnection, envelope: Envelope) -> BatchItem:
        """Apply one message of a batch in its own savepoint; its answer, or the problem it met."""
        try:
            handler, payload = self._prepare(envelope)
            async with connection.begin_nested():
                applied = await self._apply(connection, envelope, handler, payload)
            return BatchItem(message_id=envelope.message_id, status_code=200, answer=applied)
        except DomainError as refused:
            return _problem_item(envelope, as_problem(refused))
        except ProblemError as problem:
            return _problem_item(envelope, problem)
        except Exception:  # one message's failure must not fail its neighbours: answered 500, retried
            log.exception("message failed", message_id=envelope.message_id, type=envelope.type)
            return _problem_item(
                envelope, ProblemError(500, "internal-error", "Internal error", "The message failed; retry later.")
            )

    async def _apply_run(
        self, connection: AsyncConnection, run: Sequence[Envelope], handler: BatchHandler
    ) -> list[BatchItem] | None:
        """Apply ``run`` set-based in one savepoint; None (and nothing applied) when it must go one by one:
        a message is invalid, a message id repeats, or the handler declines or fails."""
        if len({e.message_id for e in run}) != len(run):
            return None
        try:
            prepared = [(envelope, self._prepare(envelope)[1]) for envelope in run]
        except Invalid:
            return None
        table = self.table
        try:
            async with connection.begin_nested():
                # One statement claims the whole run (:func:`insert_rows`: executemany on SQLite, the rows as
                # one JSON parameter on PostgreSQL); RETURNING names the ids claimed now.
                received_at = utcnow()
                statement, parameters = insert_rows(
                    connection.dialect.name, table, [_claim_values(e, received_at) for e, _ in prepared]
                )
                claimed = {
                    row.message_id
                    for row in await connection.execute(
                        statement.on_conflict_do_nothing(index_elements=[table.c.message_id]).returning(
                            table.c.message_id
                        ),
                        parameters,
                    )
                }
                fresh = [(e, p) for e, p in prepared if e.message_id in claimed]
                repeated = [e.message_id for e, _ in prepared if e.message_id not in claimed]
                results = await handler(connection, fresh) if fresh else []
                if len(results) != len(fresh):
                    raise RuntimeError(f"a batch handler answered {len(results)} of {len(fresh)} messages")
                if fresh:
                    await connection.execute(
                        update(table)
                        .where(table.c.message_id == bindparam("b_message_id"))
                        .values(status_code=200, response=bindparam("b_response")),
                        [
                            {"b_message_id": envelope.message_id, "b_response": result}
                            for (envelope, _), result in zip(fresh, results, strict=True)
                        ],
                    )
                stored: dict[str, Any] = {}
                if repeated:
                    rows = await connection.execute(
                        select(table.c.message_id, table.c.response).where(table.c.message_id.in_(repeated))
                    )
                    stored = {row.message_id: row.response for row in rows}
        except (NotBatchable, DomainError, ProblemError) as declined:
            # A message the run cannot take set-based, or one the system refuses: one by one, each message
            # then gets its own answer.
            log.debug("batch declined", type=run[0].type, messages=len(run), reason=str(declined))
            return None
        except Exception:  # the run is applied again one by one, where each message gets its own answer
            log.warning("batch failed; applying its messages one by one", type=run[0].type, exc_info=True)
            return None
        answers = dict(zip((e.message_id for e, _ in fresh), results, strict=True))
        return [
            BatchItem(
                message_id=envelope.message_id,
                status_code=200,
                answer=InboundResult(
                    status="applied" if envelope.message_id in answers else "already-applied",
                    message_id=envelope.message_id,
                    result=answers[envelope.message_id]
                    if envelope.message_id in answers
                    else stored.get(envelope.message_id) or {},
                ),
            )
            for envelope in run
        ]


def _runs(envelopes: Sequence[Envelope]) -> list[list[Envelope]]:
    """``envelopes`` cut into runs of consecutive messages of the same type, in order."""
    runs: list[list[Envelope]] = []
    for envelope in envelopes:
        if runs and runs[-1][0].type == envelope.type:
            runs[-1].append(envelope)
        else:
            runs.append([envelope])
    return runs


def _claim(dialect_name: str, table: Table) -> Any:
    """Record a message id in ``table`` unless it is there; RETURNING, not rowcount: psycopg reports -1 for
    an ``INSERT … ON CONFLICT`` that did nothing."""
    return (
        insert_for(dialect_name, table)
        .values(
            message_id=bindparam("message_id"),
            type=bindparam("type"),
            source=bindparam("source"),
            received_at=bindparam("received_at"),
        )
        .on_conflict_do_nothing(index_elements=[table.c.message_id])
        .returning(table.c.message_id)
    )


def _claim_values(envelope: Envelope, received_at: datetime | None = None) -> dict[str, Any]:
    return {
        "message_id": envelope.message_id,
        "type": envelope.type,
        "source": envelope.source.system.value,
        "received_at": received_at or utcnow(),
    }


class BatchItem(BaseModel):
    """The answer to one message of a batch: 200 with its answer, or a problem with its status code."""

    message_id: str
    status_code: int
    answer: InboundResult | None = None
    problem: dict[str, Any] | None = None


class MessageBatch(BaseModel):
    """Messages for one system, applied in one transaction (each alone in a savepoint)."""

    messages: list[Envelope] = Field(min_length=1, max_length=MAX_BATCH)


class BatchAnswer(BaseModel):
    """One answer per message, in the order sent."""

    results: list[BatchItem]


def _problem_item(envelope: Envelope, problem: ProblemError) -> BatchItem:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors:
        body["errors"] = [e.model_dump() for e in problem.errors]
    body |= problem.extensions
    return BatchItem(message_id=envelope.message_id, status_code=problem.status, problem=body)


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
            raise Invalid(
                "validation-error",
                "Idempotency-Key does not match",
                "Send the message's message_id as the Idempotency-Key header.",
                errors=[FieldError(field="header.Idempotency-Key", message="must equal body.message_id")],
            )
        engine: AsyncEngine = request.app.state.engine
        return await inbox.receive(engine, envelope)  # a domain error: the app's problem handlers answer it

    @router.post("/messages/batch", tags=["messages"])
    async def receive_messages(request: Request, batch: MessageBatch) -> BatchAnswer:
        """Apply many messages from the bridge in one transaction, exactly once per ``message_id`` each;
        every message gets its own answer (200, or the problem that a single delivery would have got)."""
        engine: AsyncEngine = request.app.state.engine
        return BatchAnswer(results=await inbox.receive_many(engine, batch.messages))

    return router
