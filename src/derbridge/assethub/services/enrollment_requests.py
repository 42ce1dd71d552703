"""F1 · enrollment-request, Asset Hub's end: validate each request of a batch, record it, answer it.

The DERMS forwards an aggregator's requests as one ``enrollment-request.v1`` message (one request or a
batch of up to 10,000 from one head-end). :func:`apply_enrollment_requests` handles the batch in the inbox
transaction:

1. requests already seen — same ``(head_end_system, request_id)``, in an earlier message or earlier in this
   one — get their first answer back, never a second enrollment;
2. the new requests are put in chain order: each after the requests the DERMS recorded before it for its
   devices (``previous_requests``); one of those neither judged yet nor in this message parks the message
   (``wake_on = enrollment-request:<its message id>``) until the bridge delivers it;
3. the facts every new request needs are read set-based, a few queries for the whole batch
   (:mod:`derbridge.assethub.adapters.enrollment_requests`): the accounts with their premises and service
   points, the programs, and the non-terminal enrollments of every requested device;
4. each request is validated on its own by the pure
   :func:`~derbridge.assethub.domain.enrollment_validation.validate_enrollment_request`, in that order; an
   accepted request holds its devices from then on, so a device requested twice in one batch is
   DEVICE_ALREADY_ENROLLED the second time;
5. accepted requests insert their devices (upsert by ``(head_end_system, nic_id)``), an enrollment in
   PENDING, its devices and its transition; refused ones an enrollment in REJECTED with its rejections and
   the transition ``None → REJECTED`` — all with bulk statements;
6. one ``enrollment-response.v1`` with every answer, in request order, goes to Asset Hub's outbox (the
   inbox handler, :mod:`derbridge.assethub.handlers.enrollment_requests`, writes it).

Decisions where flows.md is open:

* ``start_date``: the DERMS API takes it as text and forwards an unparseable one in ``raw_start_date``
  (``start_date`` empty); Asset Hub refuses that request alone with INVALID_REQUEST on
  ``program.start_date``.
* The answer's ``state`` is the state the enrollment was created in (PENDING or REJECTED): a repeated
  request gets that first answer even when the enrollment has moved on since; the later lifecycle reaches
  the DERMS by enrollment sync (F3).
* A rejected request's transition reason lists its codes and fields, e.g.
  ``UNKNOWN_ACCOUNT (customer.cis_account_id)``; the details are on the enrollment's ``rejections``.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.enrollment_requests import (
    BatchWrites,
    chunks,
    lock_device_holdings,
    read_accounts,
    read_holdings,
    read_judged,
    read_programs,
    write_batch,
)
from derbridge.assethub.domain.enrollment import (
    DeviceRef,
    EnrollmentState,
    plan_transition,
)
from derbridge.assethub.domain.enrollment_validation import (
    ActiveEnrollment,
    EnrollmentFacts,
    EnrollmentRequest,
    EnrollmentRequestDevice,
    Rejection,
    RejectionReason,
    validate_enrollment_request,
)
from derbridge.contracts import enrollment_request as contract
from derbridge.errors import MissingPrerequisite
from derbridge.infra.ids import new_id


def first_answer(
    request_id: str, enrollment_id: str, state: str, rejections: Iterable[Mapping[str, Any]]
) -> contract.EnrollmentAnswer:
    """The answer Asset Hub gave when it first saw a request, rebuilt from the enrollment it recorded."""
    if state == EnrollmentState.REJECTED.value:
        return contract.EnrollmentAnswer(
            request_id=request_id,
            answer=contract.Answer.REJECTED,
            enrollment_id=enrollment_id,
            state=EnrollmentState.REJECTED.value,
            rejections=[contract.RejectionDetail.model_validate(r) for r in rejections],
        )
    # Every other state was reached from PENDING, the state an accepted request is created in.
    return contract.EnrollmentAnswer(
        request_id=request_id,
        answer=contract.Answer.ACCEPTED,
        enrollment_id=enrollment_id,
        state=EnrollmentState.PENDING.value,
    )


def to_domain(head_end_system: str, request: contract.EnrollmentRequest) -> EnrollmentRequest:
    """The validation input of one contract request sent by ``head_end_system``."""
    return EnrollmentRequest(
        head_end_system=head_end_system,
        request_id=request.request_id,
        requested_at=request.requested_at,
        cis_person_id=request.customer.cis_person_id,
        cis_account_id=request.customer.cis_account_id,
        program_code=request.program.program_code,
        cis_premise_id=request.location.cis_premise_id,
        cis_service_point_id=request.location.cis_service_point_id,
        start_date=request.program.start_date,
        end_date=request.program.end_date,
        devices=tuple(
            EnrollmentRequestDevice(
                sequence=d.sequence,
                device_type=d.device_type,
                manufacturer=d.manufacturer,
                model=d.model,
                serial_no=d.serial_no,
                nic_id=d.nic_id,
                head_end_system=d.head_end_system,
                badge_no=d.badge_no,
            )
            for d in request.devices
        ),
        installation_method=request.installation_method,
        asset_ownership=request.asset_ownership,
    )


def _with_start_date_check(request: contract.EnrollmentRequest, rejections: tuple[Rejection, ...]) -> list[Rejection]:
    """``rejections`` plus INVALID_REQUEST for a start date that was not a date, kept in payload order
    (before the program's other fields and the devices)."""
    out = list(rejections)
    if request.raw_start_date is None:
        return out
    bad_date = Rejection(
        RejectionReason.INVALID_REQUEST,
        "program.start_date",
        f"start_date {request.raw_start_date!r} is not a date; send it as YYYY-MM-DD, or leave it out",
    )
    position = next(
        (i for i, r in enumerate(out) if r.field is not None and r.field.startswith(("program.", "devices"))),
        len(out),
    )
    out.insert(position, bad_date)
    return out


# --- facts, read set-based --------------------------------------------------------------------------------


async def _seen_before(
    connection: AsyncConnection, head_end_system: str, request_ids: Sequence[str]
) -> dict[str, contract.EnrollmentAnswer]:
    e = t.enrollments
    seen: dict[str, contract.EnrollmentAnswer] = {}
    for part in chunks(request_ids):
        rows = await connection.execute(
            select(e.c.request_id, e.c.enrollment_id, e.c.state, e.c.rejections).where(
                e.c.head_end_system == head_end_system, e.c.request_id.in_(part)
            )
        )
        for row in rows:
            seen[row.request_id] = first_answer(row.request_id, row.enrollment_id, row.state, row.rejections)
    return seen


async def _judging_order(
    connection: AsyncConnection,
    head_end: str,
    requests: Sequence[contract.EnrollmentRequest],
    new: list[int],
    first_of: Mapping[str, int],
) -> list[int]:
    """The new requests of a pass (indices into ``requests``) in the order to judge them: each after the
    requests the DERMS recorded before it for its devices (``previous_requests``), batch order otherwise.

    A predecessor must be judged already or be in this pass; else the message parks
    (:class:`MissingPrerequisite`, ``wake_on = enrollment-request:<its message id>``) until the bridge
    delivers that message, so that a request held back by a stalled worker is still judged first."""
    named = [(i, ref) for i in new for ref in requests[i].previous_requests]
    if not named:
        return new
    in_pass = {r.request_id for r in requests}
    outside = sorted(
        {(ref.head_end_system, ref.request_id) for _, ref in named} - {(head_end, request_id) for request_id in in_pass}
    )
    judged = await read_judged(connection, outside) if outside else set()
    for i, ref in named:
        key = (ref.head_end_system, ref.request_id)
        if key in outside and key not in judged:
            raise MissingPrerequisite(
                f"enrollment-request:{ref.message_id}",
                f"request {ref.head_end_system}:{ref.request_id} (message {ref.message_id}) was made before "
                f"request {head_end}:{requests[i].request_id} for one of its devices and has not been judged yet: "
                "requests about a device are judged in the order they were made. This message goes again when "
                "that one is delivered (or at its park backoff); if that message is dead, replay it: "
                f"derbridge messages replay {ref.message_id}",
            )
    # Kahn's algorithm over the predecessors that are new in this pass; ties in batch order.
    position = set(new)
    after: dict[int, list[int]] = defaultdict(list)
    waiting: dict[int, int] = dict.fromkeys(new, 0)
    for i, ref in named:
        j = first_of.get(ref.request_id) if ref.head_end_system == head_end else None
        if j is not None and j != i and j in position:
            after[j].append(i)
            waiting[i] += 1
    ready = [i for i in new if waiting[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for k in after[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, k)
    if len(order) < len(new):  # a cycle: never made by the DERMS (a predecessor is recorded first)
        placed = set(order)
        order += [i for i in new if i not in placed]
    return order


# --- the batch ---------------------------------------------------------------------------------------------


def _enrollment_row(
    head_end_system: str,
    request: contract.EnrollmentRequest,
    enrollment_id: str,
    state: EnrollmentState,
    rejections: Sequence[Rejection],
    now: datetime,
) -> dict[str, Any]:
    return {
        "enrollment_id": enrollment_id,
        "head_end_system": head_end_system,
        "request_id": request.request_id,
        "program_code": request.program.program_code,
        "cis_person_id": request.customer.cis_person_id,
        "cis_account_id": request.customer.cis_account_id,
        "cis_premise_id": request.location.cis_premise_id,
        "cis_service_point_id": request.location.cis_service_point_id,
        "state": state.value,
        "installation_method": request.installation_method,
        "asset_ownership": request.asset_ownership,
        "start_date": request.program.start_date.isoformat() if request.program.start_date else None,
        "end_date": request.program.end_date.isoformat() if request.program.end_date else None,
        "rejections": [{"code": r.code.value, "field": r.field, "detail": r.detail} for r in rejections],
        "requested_at": request.requested_at,
        "created_at": now,
        "updated_at": now,
        "setup_started_at": None,
        "next_check_at": None,
    }


def _rejection_reason(rejections: Sequence[Rejection]) -> str:
    return "; ".join(f"{r.code.value} ({r.field})" if r.field else r.code.value for r in rejections)


async def apply_enrollment_requests(
    connection: AsyncConnection, batch: contract.EnrollmentRequestBatch, *, now: datetime
) -> list[contract.EnrollmentAnswer]:
    """Validate and record every request of ``batch`` at business time ``now``; one answer per request, in
    batch order. Runs inside the caller's transaction (the inbox's)."""
    return await apply_requests(connection, batch.head_end_system, batch.requests, now)


async def apply_requests(
    connection: AsyncConnection, head_end: str, requests: Sequence[contract.EnrollmentRequest], now: datetime
) -> list[contract.EnrollmentAnswer]:
    """:func:`apply_enrollment_requests` for ``requests`` of one head-end, which may come from several
    messages (the batch handler passes a run's requests in one pass); one answer per request, in order."""
    await lock_device_holdings(connection)
    seen = await _seen_before(connection, head_end, sorted({r.request_id for r in requests}))

    first_of: dict[str, int] = {}
    new: list[int] = []
    for index, request in enumerate(requests):
        if request.request_id not in seen and request.request_id not in first_of:
            first_of[request.request_id] = index
            new.append(index)

    answers: dict[int, contract.EnrollmentAnswer] = {}
    if new:
        new = await _judging_order(connection, head_end, requests, new, first_of)
        domain = {i: to_domain(head_end, requests[i]) for i in new}
        refs = sorted(
            {d.device_ref for i in new for d in domain[i].devices}, key=lambda r: (r.head_end_system, r.nic_id)
        )
        holdings = await read_holdings(connection, refs)
        accounts = await read_accounts(connection, sorted({requests[i].customer.cis_account_id for i in new}))
        codes = {requests[i].program.program_code for i in new}
        codes |= {held.program_code for enrollments in holdings.values() for held in enrollments}
        programs = await read_programs(connection, sorted(codes))

        writes = BatchWrites([], [], {}, [])
        for i in new:
            request = requests[i]
            checked = domain[i]
            facts = EnrollmentFacts(
                account=accounts.get(checked.cis_account_id),
                program=programs.get(checked.program_code),
                active_enrollments_of_devices={d.device_ref: tuple(holdings[d.device_ref]) for d in checked.devices},
                programs_by_code=programs,
            )
            rejections = _with_start_date_check(request, validate_enrollment_request(checked, facts, now))
            enrollment_id = new_id()
            if rejections:
                state = EnrollmentState.REJECTED
                writes.transitions.append(
                    plan_transition(enrollment_id, None, state, now, _rejection_reason(rejections))
                )
            else:
                state = EnrollmentState.PENDING
                writes.transitions.append(plan_transition(enrollment_id, None, state, now))
                for device in request.devices:
                    ref = DeviceRef(device.head_end_system, device.nic_id)
                    # From now on this request holds the device: a later request of the batch for it is
                    # judged against this enrollment exactly as against one already stored.
                    holdings[ref].append(ActiveEnrollment(enrollment_id, checked.program_code, ref))
                    writes.devices[ref] = {
                        "head_end_system": device.head_end_system,
                        "nic_id": device.nic_id,
                        "device_type": device.device_type,
                        "manufacturer": device.manufacturer,
                        "model": device.model,
                        "serial_no": device.serial_no,
                        "badge_no": device.badge_no,
                        "created_at": now,
                    }
                    writes.enrollment_devices.append((enrollment_id, ref, device.sequence))
            row = _enrollment_row(head_end, request, enrollment_id, state, rejections, now)
            writes.enrollments.append(row)
            answers[i] = first_answer(request.request_id, enrollment_id, state.value, row["rejections"])
        await write_batch(connection, writes)

    return [seen.get(r.request_id) or answers.get(i) or answers[first_of[r.request_id]] for i, r in enumerate(requests)]
