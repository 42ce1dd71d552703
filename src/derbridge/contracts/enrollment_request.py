"""F1 · enrollment-request (DERMS → Asset Hub) and its per-request answers (Asset Hub → DERMS)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import AwareDatetime, Field

from derbridge.contracts.common import Contract, HeadEnd, Id, ProgramCode

TYPE = "enrollment-request.v1"
RESPONSE_TYPE = "enrollment-response.v1"


class Customer(Contract):
    cis_person_id: Id
    cis_account_id: Id
    name: str = Field(max_length=200)
    home_phone: str | None = Field(None, max_length=40)
    business_phone: str | None = Field(None, max_length=40)
    email: str | None = Field(None, max_length=200)


class ProgramRef(Contract):
    program_code: ProgramCode
    cis_service_agreement_id: str | None = Field(None, max_length=64, description="(mapping)")
    start_date: date | None = None
    end_date: date | None = None


class Location(Contract):
    division: str = Field(max_length=64)
    cis_premise_id: Id
    cis_service_point_id: str = Field(max_length=64, description="May be empty in a bad request: then rejected.")
    time_zone: str = Field(max_length=64)
    address1: str = Field(max_length=200)
    address2: str | None = Field(None, max_length=200)
    address3: str | None = Field(None, max_length=200)
    address4: str | None = Field(None, max_length=200)
    city: str = Field(max_length=200)
    county: str | None = Field(None, max_length=200)
    state: str = Field(max_length=32)
    postal: str = Field(max_length=16)
    country: str = Field(max_length=32)


class RequestedDevice(Contract):
    sequence: int = Field(ge=1, le=100)
    device_type: str = Field(max_length=32, description="THERMOSTAT in v1; others are refused as not eligible.")
    manufacturer: str = Field(max_length=100)
    model: str = Field(max_length=100)
    serial_no: str = Field(max_length=100)
    nic_id: str = Field(max_length=64)
    head_end_system: HeadEnd
    badge_no: str | None = Field(None, max_length=64)


class PreviousRequest(Contract):
    """A request the DERMS recorded before this one for one of its devices (the latest such request)."""

    head_end_system: HeadEnd
    request_id: Id
    message_id: Id = Field(description="The enrollment-request message that carried it: what to wait for.")


class EnrollmentRequest(Contract):
    """One aggregator request: a customer's devices into a program at a location."""

    request_id: Id
    requested_at: AwareDatetime
    customer: Customer
    program: ProgramRef
    location: Location
    devices: list[RequestedDevice] = Field(max_length=50)
    installation_method: str = Field(max_length=32, examples=["CUSTOMER_INSTALLED"])
    asset_ownership: str = Field(max_length=32, examples=["CUSTOMER_OWNED"])
    raw_start_date: str | None = Field(
        None, max_length=32, description="The start date as the aggregator sent it, when it was not a valid date."
    )
    previous_requests: list[PreviousRequest] = Field(
        default_factory=list,
        max_length=50,
        description="Stamped by the DERMS: for each device, the request it recorded last before this one. Asset "
        "Hub judges this request only after those (requests about one device in the aggregator's order).",
    )


class EnrollmentRequestBatch(Contract):
    """F1 payload: many requests of one head-end; Asset Hub applies each independently."""

    head_end_system: HeadEnd
    requests: list[EnrollmentRequest] = Field(min_length=1, max_length=10_000)


class Answer(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


class RejectionDetail(Contract):
    code: str = Field(max_length=40)
    field: str | None = Field(None, max_length=200)
    detail: str = Field(max_length=2000)


class EnrollmentAnswer(Contract):
    """Asset Hub's answer to one request. A request sent again gets its first answer."""

    request_id: Id
    answer: Answer
    enrollment_id: str | None = Field(None, max_length=36)
    state: str = Field(max_length=16, description="PENDING when accepted, REJECTED otherwise.")
    rejections: list[RejectionDetail] = Field(default_factory=list)


class EnrollmentResponseBatch(Contract):
    """F1 reply payload: one answer per request of the batch, in the same order."""

    head_end_system: HeadEnd
    answers: list[EnrollmentAnswer]
