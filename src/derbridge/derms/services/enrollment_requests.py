"""F1 · enrollment-request, the DERMS's end: record an aggregator's requests, forward them to Asset Hub,
and record Asset Hub's answer to each.

The edge gateway (and, until it exists, anyone with the service credential) posts requests to the DERMS
API (:mod:`derbridge.derms.api.enrollment_routes`). :func:`record_enrollment_requests` stores each one in
``enrollment_requests`` keyed by ``(head_end_system, request_id)`` and, in the same transaction, writes one
``enrollment-request.v1`` message carrying every request that was new. A request sent again is not
forwarded a second time: the caller gets what is recorded for it. Each new request is stamped with its
``previous_requests``: for each of its devices, the request recorded last for that device before it
(``device_latest_requests``), so that Asset Hub judges a device's requests in the order they were made
whatever order the bridge delivers them in. Asset Hub's ``enrollment-response.v1``
fills in each request's answer (:func:`record_answers`, called by
:func:`derbridge.derms.handlers.enrollment_requests.handle_enrollment_response`); later lifecycle changes of the
enrollment reach the DERMS by enrollment sync (F3), which keeps ``state`` current.

What the aggregator reads (:func:`request_status`): ``status`` RECEIVED until Asset Hub answered, then
ACCEPTED (with the enrollment id) or REJECTED (with the reasons); ``state`` the enrollment's lifecycle state
as the DERMS last heard it (PENDING or REJECTED from the answer, later ones from F3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts import enrollment_request as contract
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import enrollment_requests as db
from derbridge.derms.adapters import tables as t
from derbridge.derms.adapters.enrollment_requests import STATUS_COLUMNS as STATUS_COLUMNS
from derbridge.derms.adapters.enrollment_states import note_answers
from derbridge.infra.ids import new_id
from derbridge.infra.outbox import write_outbox


class RequestStatus(StrEnum):
    """Where an enrollment request is, as the aggregator sees it."""

    RECEIVED = "RECEIVED"
    """Recorded and forwarded; Asset Hub has not answered yet."""
    ACCEPTED = "ACCEPTED"
    """Asset Hub accepted it: ``enrollment_id`` names the enrollment, ``state`` its lifecycle state."""
    REJECTED = "REJECTED"
    """Asset Hub refused it: ``rejections`` say why."""


def request_status(row: dict[str, Any]) -> dict[str, Any]:
    """An ``enrollment_requests`` row as the aggregator reads it (adds ``status``, drops the payload)."""
    status = RequestStatus(row["answer"]) if row["answer"] is not None else RequestStatus.RECEIVED
    return {
        "head_end_system": row["head_end_system"],
        "request_id": row["request_id"],
        "status": status.value,
        "enrollment_id": row["enrollment_id"],
        "state": row["state"],
        "rejections": row["rejections"] or [],
        "message_id": row["message_id"],
        "received_at": row["received_at"],
        "answered_at": row["answered_at"],
        "updated_at": row["updated_at"],
    }


@dataclass(frozen=True)
class RecordedRequests:
    """What :func:`record_enrollment_requests` did."""

    message_id: str | None
    """The ``enrollment-request.v1`` written for the new requests; None when every request was a repeat."""
    new: int
    """Requests recorded and forwarded by this call."""
    requests: list[dict[str, Any]]
    """Every request of the call as recorded (see :func:`request_status`), in the order given."""

    @property
    def repeated(self) -> int:
        """Requests already recorded (earlier, or earlier in the same call): not forwarded again."""
        return len(self.requests) - self.new


def _business_key(head_end_system: str, request_ids: Sequence[str]) -> str:
    # An operator searches the bridge for one request by head_end:request_id; a batch is found by its first
    # request (each request row also keeps the message id that carried it).
    key = f"{head_end_system}:{request_ids[0]}"
    return key if len(request_ids) == 1 else f"{key}+{len(request_ids) - 1}"


async def _read(connection: AsyncConnection, head_end_system: str, request_ids: Sequence[str]) -> dict[str, Any]:
    """The requests ``request_ids`` of ``head_end_system`` recorded, as the aggregator reads them."""
    rows = await db.read_requests(connection, head_end_system, request_ids)
    return {request_id: request_status(row) for request_id, row in rows.items()}


async def record_enrollment_requests(
    engine: AsyncEngine,
    head_end_system: str,
    requests: Sequence[contract.EnrollmentRequest],
    *,
    derms_instance_id: str,
    now: datetime,
) -> RecordedRequests:
    """Record ``requests`` of ``head_end_system`` and forward the new ones to Asset Hub in one message.

    Idempotent on ``(head_end_system, request_id)``: a request recorded before (or earlier in
    ``requests``) is neither stored nor forwarded again. The rows and the message commit together.
    """
    async with engine.begin() as connection:
        return await record_enrollment_requests_in(
            connection, head_end_system, requests, derms_instance_id=derms_instance_id, now=now
        )


async def record_enrollment_requests_in(
    connection: AsyncConnection,
    head_end_system: str,
    requests: Sequence[contract.EnrollmentRequest],
    *,
    derms_instance_id: str,
    now: datetime,
) -> RecordedRequests:
    """:func:`record_enrollment_requests` in the caller's transaction: the edge gateway writes its resources
    and records their requests in one unit of work, so a failure of either leaves neither."""
    at = now
    first: dict[str, contract.EnrollmentRequest] = {}
    for request in requests:
        first.setdefault(request.request_id, request)
    envelope: Envelope | None = None
    rows = [
        {
            "head_end_system": head_end_system,
            "request_id": request_id,
            # The message is built from the rows that turn out to be new, so its id is stamped on
            # them just after, in the same transaction: no reader ever sees the blank.
            "message_id": "",
            "request": request.model_dump(mode="json"),
            "received_at": at,
            "updated_at": at,
        }
        for request_id, request in first.items()
    ]
    inserted = await db.insert_new_requests(connection, rows)
    new = [request for request_id, request in first.items() if request_id in inserted]
    if new:
        message_id = new_id()
        previous = await _chain(connection, head_end_system, new, message_id, at)
        envelope = new_envelope(
            contract.TYPE,
            contract.EnrollmentRequestBatch(
                head_end_system=head_end_system,
                requests=[r.model_copy(update={"previous_requests": previous[r.request_id]}) for r in new],
            ),
            business_key=_business_key(head_end_system, [r.request_id for r in new]),
            occurred_at=at,
            source_instance=derms_instance_id,
            message_id=message_id,
        )
        await db.stamp_message(connection, head_end_system, inserted, envelope.message_id)
        await write_outbox(connection, t.outbox, [envelope])
    recorded = await _read(connection, head_end_system, list(first))
    return RecordedRequests(
        message_id=envelope.message_id if envelope else None,
        new=len(new),
        requests=[recorded[r.request_id] for r in requests],
    )


async def _chain(
    connection: AsyncConnection,
    head_end_system: str,
    requests: Sequence[contract.EnrollmentRequest],
    message_id: str,
    now: datetime,
) -> dict[str, list[contract.PreviousRequest]]:
    """For each of ``requests`` (new, in the order made, all carried by ``message_id``), the requests recorded
    last before it for each of its devices: earlier in this call, or earlier at all (``device_latest_requests``).
    Each device's latest request becomes the last of this call that names it."""
    previous: dict[str, set[contract.PreviousRequest]] = {r.request_id: set() for r in requests}
    latest: dict[tuple[str, str], contract.PreviousRequest] = {}
    first: dict[tuple[str, str], str] = {}
    for request in requests:
        this = contract.PreviousRequest(
            head_end_system=head_end_system, request_id=request.request_id, message_id=message_id
        )
        for device in request.devices:
            key = (device.head_end_system, device.nic_id)
            before = latest.get(key)
            if before is None:
                first[key] = request.request_id
            elif before != this:
                previous[request.request_id].add(before)
            latest[key] = this
    if latest:
        rows = await db.move_latest_requests(
            connection,
            [
                {
                    "head_end_system": hes,
                    "nic_id": nic,
                    "request_head_end_system": ref.head_end_system,
                    "request_id": ref.request_id,
                    "message_id": ref.message_id,
                    "previous_head_end_system": None,
                    "previous_request_id": None,
                    "previous_message_id": None,
                    "updated_at": now,
                }
                # In key order: two calls with overlapping devices lock them in the same order.
                for (hes, nic), ref in sorted(latest.items())
            ],
        )
        for row in rows:
            if row.previous_request_id is not None:
                previous[first[(row.head_end_system, row.nic_id)]].add(
                    contract.PreviousRequest(
                        head_end_system=row.previous_head_end_system,
                        request_id=row.previous_request_id,
                        message_id=row.previous_message_id,
                    )
                )
    return {
        request_id: sorted(refs, key=lambda r: (r.head_end_system, r.request_id))
        for request_id, refs in previous.items()
    }


async def get_enrollment_request(engine: AsyncEngine, head_end_system: str, request_id: str) -> dict[str, Any] | None:
    """One request as the aggregator reads it (see :func:`request_status`), or None when never received."""
    async with engine.connect() as connection:
        return (await _read(connection, head_end_system, [request_id])).get(request_id)


def _answer_rows(payload: contract.EnrollmentResponseBatch, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "b_head_end_system": payload.head_end_system,
            "b_request_id": a.request_id,
            "b_answer": a.answer.value,
            "b_enrollment_id": a.enrollment_id,
            "b_state": a.state,
            "b_rejections": [r.model_dump(mode="json") for r in a.rejections],
            "b_now": now,
        }
        for a in payload.answers
    ]


def _accepted(payload: contract.EnrollmentResponseBatch) -> list[tuple[str, str]]:
    """``(enrollment_id, state)`` of the accepted answers: revision 0 of their enrollments."""
    return [
        (a.enrollment_id, a.state)
        for a in payload.answers
        if a.answer is contract.Answer.ACCEPTED and a.enrollment_id is not None
    ]


async def record_answers(
    connection: AsyncConnection, payloads: Sequence[contract.EnrollmentResponseBatch], now: datetime
) -> None:
    """Record Asset Hub's answers of ``payloads`` (one ``executemany`` for all of them).

    Only an unanswered request takes an answer: Asset Hub answers a request once (a repeat gets the same
    first answer), and a late copy must not put back PENDING over a state F3 has moved on since. The state
    it takes is its enrollment's newest known one: a sync that overtook the answer (another flow, another
    worker) has already recorded ACTIVE or UNENROLLED, and the answer does not set it back to PENDING. Run
    in order, the first answer to a request wins, as it would one message at a time.
    """
    rows = [row for payload in payloads for row in _answer_rows(payload, now)]
    if rows:
        await note_answers(connection, [a for payload in payloads for a in _accepted(payload)], now)
        await db.answer_requests(connection, rows)
