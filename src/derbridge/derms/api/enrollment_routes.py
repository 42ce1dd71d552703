"""F1 · enrollment-request at the DERMS API: where the edge gateway (for an aggregator) sends enrollment
requests, and where it reads each request's answer and state.

- ``POST /derms/v1/enrollment-requests``: one request (the F1 request shape plus ``head_end_system``);
- ``POST /derms/v1/enrollment-requests/batch``: up to 10,000 requests of one head-end;
- ``GET /derms/v1/enrollment-requests?head_end_system=…``: a head-end's requests, with their status;
- ``GET /derms/v1/enrollment-requests/{head_end_system}/{request_id}``: one request's status and answer.

Both POSTs answer 202: the request is recorded and forwarded, and Asset Hub answers asynchronously. A
request sent again is not forwarded twice; the 202 carries what is recorded for it.

``program.start_date`` is taken as it comes: a value that is not a ``YYYY-MM-DD`` date does not fail the
call (a batch must not fail for one request's bad field) but travels as ``raw_start_date``, and Asset Hub
refuses that one request with INVALID_REQUEST.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy import select

from derbridge.contracts import enrollment_request as contract
from derbridge.contracts.common import HeadEnd, Id, ProgramCode
from derbridge.derms.adapters import tables as t
from derbridge.derms.services import enrollment_requests as service
from derbridge.derms.services.enrollment_requests import RequestStatus
from derbridge.errors import not_found
from derbridge.infra.listing import list_page
from derbridge.infra.problems import PROBLEM_RESPONSES
from derbridge.infra.web import (
    NO_NUL,
    BusinessNow,
    IdPath,
    Page,
    Paging,
    SystemEngine,
    require_service_token,
)

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RAW_MAX = 32  # contract.EnrollmentRequest.raw_start_date's length


Engine = SystemEngine


def parse_start_date(value: JsonValue) -> tuple[date | None, str | None]:
    """``(start_date, raw_start_date)`` of a start date as the aggregator sent it: a ``YYYY-MM-DD`` date
    gives the date; absent, null or blank gives neither; anything else gives the text as sent (JSON of a
    non-string, cut to the contract's 32 characters) for Asset Hub to refuse."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            return date.fromisoformat(value), None
        except ValueError:  # e.g. 2027-13-45: the right shape, not a date
            pass
    text = value if isinstance(value, str) else json.dumps(value)
    return None, text if len(text) <= _RAW_MAX else text[: _RAW_MAX - 1] + "…"


class ProgramRefIn(BaseModel):
    """The program part of a request, as the aggregator sends it."""

    model_config = ConfigDict(extra="forbid")

    program_code: ProgramCode
    cis_service_agreement_id: str | None = Field(None, max_length=64, description="(mapping)")
    start_date: JsonValue = Field(
        None,
        description="YYYY-MM-DD. A value that is not a date does not fail the call: Asset Hub refuses that "
        "request with INVALID_REQUEST on program.start_date.",
        examples=["2027-06-15"],
    )
    end_date: date | None = None


class EnrollmentRequestIn(BaseModel):
    """One enrollment request: the F1 ``EnrollmentRequest`` shape."""

    model_config = ConfigDict(extra="forbid")

    request_id: Id = Field(description="The aggregator's id, unique per head-end: the idempotency key.")
    requested_at: AwareDatetime
    customer: contract.Customer
    program: ProgramRefIn
    location: contract.Location
    devices: list[contract.RequestedDevice] = Field(max_length=50)
    installation_method: str = Field(max_length=32, examples=["CUSTOMER_INSTALLED"])
    asset_ownership: str = Field(max_length=32, examples=["CUSTOMER_OWNED"])

    def to_contract(self) -> contract.EnrollmentRequest:
        """The request as the F1 message carries it."""
        start_date, raw_start_date = parse_start_date(self.program.start_date)
        return contract.EnrollmentRequest(
            request_id=self.request_id,
            requested_at=self.requested_at,
            customer=self.customer,
            program=contract.ProgramRef(
                program_code=self.program.program_code,
                cis_service_agreement_id=self.program.cis_service_agreement_id,
                start_date=start_date,
                end_date=self.program.end_date,
            ),
            location=self.location,
            devices=self.devices,
            installation_method=self.installation_method,
            asset_ownership=self.asset_ownership,
            raw_start_date=raw_start_date,
        )


class SingleEnrollmentRequestIn(EnrollmentRequestIn):
    """One enrollment request and the head-end that sends it."""

    head_end_system: HeadEnd


class EnrollmentRequestBatchIn(BaseModel):
    """Many enrollment requests of one head-end; each is answered on its own."""

    model_config = ConfigDict(extra="forbid")

    head_end_system: HeadEnd
    requests: list[EnrollmentRequestIn] = Field(min_length=1, max_length=10_000)


class RejectionOut(BaseModel):
    """One reason Asset Hub refused a request."""

    code: str = Field(examples=["UNKNOWN_ACCOUNT"])
    field: str | None = Field(None, description="The request field at fault, e.g. customer.cis_account_id.")
    detail: str


class EnrollmentRequestOut(BaseModel):
    """An enrollment request as recorded: RECEIVED, then ACCEPTED or REJECTED, and the enrollment's state."""

    head_end_system: str
    request_id: str
    status: RequestStatus
    enrollment_id: str | None = Field(description="Asset Hub's enrollment id, once answered.")
    state: str | None = Field(
        description="The enrollment's lifecycle state as the DERMS last heard: PENDING or REJECTED from the "
        "answer, then ACTIVE, UNENROLLED … from enrollment sync."
    )
    rejections: list[RejectionOut]
    message_id: str = Field(description="The enrollment-request.v1 message that carried it to Asset Hub.")
    received_at: datetime
    answered_at: datetime | None
    updated_at: datetime


class EnrollmentBatchOut(BaseModel):
    """What a batch did: how many requests were new (forwarded) or repeats, and each one as recorded."""

    head_end_system: str
    message_id: str | None = Field(description="The message that forwarded the new requests; null if none was new.")
    new: int
    repeated: int
    requests: list[EnrollmentRequestOut]


@router.post("/enrollment-requests", status_code=202, tags=["enrollment requests"])
async def post_enrollment_request(
    request: Request, engine: Engine, now: BusinessNow, body: SingleEnrollmentRequestIn
) -> EnrollmentRequestOut:
    """Record one enrollment request and forward it to Asset Hub. A request sent again (same head-end and
    request id) is not forwarded twice: the answer is what is recorded for it."""
    recorded = await service.record_enrollment_requests(
        engine,
        body.head_end_system,
        [body.to_contract()],
        derms_instance_id=request.app.state.derms_instance_id,
        now=now,
    )
    return EnrollmentRequestOut.model_validate(recorded.requests[0])


@router.post("/enrollment-requests/batch", status_code=202, tags=["enrollment requests"])
async def post_enrollment_request_batch(
    request: Request, engine: Engine, now: BusinessNow, body: EnrollmentRequestBatchIn
) -> EnrollmentBatchOut:
    """Record up to 10,000 requests of one head-end and forward the new ones to Asset Hub in one message.
    Each request is answered on its own; repeats are not forwarded again."""
    recorded = await service.record_enrollment_requests(
        engine,
        body.head_end_system,
        [r.to_contract() for r in body.requests],
        derms_instance_id=request.app.state.derms_instance_id,
        now=now,
    )
    return EnrollmentBatchOut(
        head_end_system=body.head_end_system,
        message_id=recorded.message_id,
        new=recorded.new,
        repeated=recorded.repeated,
        requests=[EnrollmentRequestOut.model_validate(r) for r in recorded.requests],
    )


@router.get("/enrollment-requests", tags=["enrollment requests"])
async def list_enrollment_requests(
    engine: Engine,
    page: Paging,
    head_end_system: Annotated[str, Query(max_length=64, pattern=NO_NUL, description="The head-end's requests.")],
    status: RequestStatus | None = None,
) -> Page[EnrollmentRequestOut]:
    """One head-end's enrollment requests, by request id; filter by status."""
    table = t.enrollment_requests
    where: list[Any] = []
    if status is RequestStatus.RECEIVED:
        where.append(table.c.answer.is_(None))
    elif status is not None:
        where.append(table.c.answer == status.value)
    async with engine.connect() as connection:
        rows, after = await list_page(
            connection,
            table,
            "request_id",
            page,
            {"head_end_system": head_end_system},
            where=where,
            query=select(*service.STATUS_COLUMNS),
        )
    return Page[EnrollmentRequestOut](
        items=[EnrollmentRequestOut.model_validate(service.request_status(r)) for r in rows], next_after=after
    )


@router.get("/enrollment-requests/{head_end_system}/{request_id}", tags=["enrollment requests"])
async def get_enrollment_request(engine: Engine, head_end_system: IdPath, request_id: IdPath) -> EnrollmentRequestOut:
    """One request's status: RECEIVED, then ACCEPTED with the enrollment id or REJECTED with the reasons,
    and the enrollment's lifecycle state as the DERMS last heard it."""
    found = await service.get_enrollment_request(engine, head_end_system, request_id)
    if found is None:
        raise not_found("enrollment request", f"{head_end_system}:{request_id}")
    return EnrollmentRequestOut.model_validate(found)
