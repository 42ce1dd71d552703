"""The OpenADR 3.1.0 object representations (``openadr3.yaml`` components), as pydantic models.

Request models validate what clients send (a missing required property is a 400, as the spec says);
the object models (``Program``, ``Event`` …) are what the VTN answers: the request's properties plus the
VTN's metadata. Properties a client sends that the schema does not describe are ignored (the spec allows
it). Optional properties at their null default are left out of answers (also allowed).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ObjectID = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]*$")]
Name128 = Annotated[str, Field(min_length=1, max_length=128)]
MAX_OBJECT_OPERATIONS = 8
"""Most ``objectOperations`` in one subscription (a deviation from the spec, which sets none: docs/edge.md)."""
Target = Annotated[str, Field(min_length=1, max_length=128)]
Duration = Annotated[
    str,
    Field(
        pattern=r"^(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$",
        examples=["PT1H"],
    ),
]
Uri = Annotated[str, Field(min_length=2, max_length=8000)]


class ObjectType(StrEnum):
    """``objectTypes``."""

    PROGRAM = "PROGRAM"
    EVENT = "EVENT"
    REPORT = "REPORT"
    SUBSCRIPTION = "SUBSCRIPTION"
    VEN = "VEN"
    RESOURCE = "RESOURCE"


class Operation(StrEnum):
    """Operations a subscription names and a notification carries."""

    READ = "READ"
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class _Model(BaseModel):
    # extra="ignore": content the schema does not describe may be ignored (Definition, Message validation).
    model_config = ConfigDict(extra="ignore", populate_by_name=True, regex_engine="python-re")


class Point(_Model):
    x: float
    y: float


class ValuesMap(_Model):
    """``valuesMap``: values of one type."""

    type: Name128
    values: list[float | int | str | bool | Point]


class IntervalPeriod(_Model):
    start: datetime | None = None
    duration: Duration | None = None
    randomizeStart: Duration | None = None


class Interval(_Model):
    id: int = Field(ge=-(2**31), le=2**31 - 1)
    intervalPeriod: IntervalPeriod | None = None
    payloads: list[ValuesMap]


class EventPayloadDescriptor(_Model):
    objectType: Literal["EVENT_PAYLOAD_DESCRIPTOR"]
    payloadType: Name128
    units: Name128 | None = None
    currency: str | None = None


class ReportPayloadDescriptor(_Model):
    objectType: Literal["REPORT_PAYLOAD_DESCRIPTOR"]
    payloadType: Name128
    readingType: Name128 | None = None
    units: Name128 | None = None
    accuracy: float | None = None
    confidence: int | None = Field(None, ge=0, le=100)


class ReportDescriptor(_Model):
    payloadType: Name128
    readingType: Name128 | None = None
    units: Name128 | None = None
    targets: list[Target] | None = None
    aggregate: bool = False
    startInterval: int = -1
    numIntervals: int = -1
    historical: bool = True
    frequency: int = -1
    repeat: int = 1
    reportIntervals: Literal["INTERVALS", "SUB_INTERVALS", "OPEN_INTERVALS"] = "INTERVALS"


class ProgramDescription(_Model):
    URL: Uri


class ProgramRequest(_Model):
    """``programRequest``."""

    programName: Name128
    intervalPeriod: IntervalPeriod | None = None
    programDescriptions: list[ProgramDescription] | None = None
    payloadDescriptors: list[EventPayloadDescriptor | ReportPayloadDescriptor] | None = None
    attributes: list[ValuesMap] | None = None
    targets: list[Target] | None = None


class EventRequest(_Model):
    """``eventRequest``."""

    programID: ObjectID
    eventName: str | None = None
    duration: Duration | None = None
    priority: int | None = Field(None, ge=0)
    targets: list[Target] | None = None
    reportDescriptors: list[ReportDescriptor] | None = None
    payloadDescriptors: list[EventPayloadDescriptor] | None = None
    intervalPeriod: IntervalPeriod | None = None
    intervals: list[Interval] = Field(default_factory=list)


class ReportResource(_Model):
    resourceName: Name128
    intervalPeriod: IntervalPeriod | None = None
    intervals: list[Interval]


class ReportRequest(_Model):
    """``reportRequest``."""

    eventID: ObjectID
    clientName: Name128
    reportName: str | None = None
    payloadDescriptors: list[ReportPayloadDescriptor] | None = None
    resources: list[ReportResource]


class ObjectOperation(_Model):
    objects: list[ObjectType]
    operations: list[Operation]
    callbackUrl: Uri
    bearerToken: str | None = None


class SubscriptionRequest(_Model):
    """``subscriptionRequest``."""

    clientName: Name128
    programID: ObjectID | None = None
    # Each operation's callback gets an echo request (up to edge.webhook_timeout_seconds) before the answer:
    # unbounded, one request made the VTN send 200 of them in a row (issue 15). The spec sets no maximum.
    objectOperations: list[ObjectOperation] = Field(max_length=MAX_OBJECT_OPERATIONS)
    targets: list[Target] | None = None


class BlVenRequest(_Model):
    """``BlVenRequest``: the business logic names the VEN's client and may grant it targets."""

    objectType: Literal["BL_VEN_REQUEST"]
    clientID: Name128
    targets: list[Target] | None = None
    venName: Name128
    attributes: list[ValuesMap] | None = None


class VenVenRequest(_Model):
    """``VenVenRequest``: a VEN registers itself; the VTN takes its clientID from the token."""

    objectType: Literal["VEN_VEN_REQUEST"]
    venName: Name128
    attributes: list[ValuesMap] | None = None


VenRequest = Annotated[BlVenRequest | VenVenRequest, Field(discriminator="objectType")]


class BlResourceRequest(_Model):
    """``BlResourceRequest``."""

    objectType: Literal["BL_RESOURCE_REQUEST"]
    clientID: Name128
    targets: list[Target] | None = None
    resourceName: Name128
    venID: ObjectID
    attributes: list[ValuesMap] | None = None


class VenResourceRequest(_Model):
    """``VenResourceRequest``: a VEN registers a resource (a device) under its ven."""

    objectType: Literal["VEN_RESOURCE_REQUEST"]
    resourceName: Name128
    venID: ObjectID
    attributes: list[ValuesMap] | None = None


ResourceRequest = Annotated[BlResourceRequest | VenResourceRequest, Field(discriminator="objectType")]


class ObjectMetadata(_Model):
    id: ObjectID
    createdDateTime: datetime
    modificationDateTime: datetime
    objectType: ObjectType


class Program(ObjectMetadata, ProgramRequest):
    """``program``."""


class Event(ObjectMetadata, EventRequest):
    """``event``."""


class Report(ObjectMetadata, ReportRequest):
    """``report``."""

    clientID: Name128


class Subscription(ObjectMetadata, SubscriptionRequest):
    """``subscription``."""

    clientID: Name128


class Ven(ObjectMetadata):
    """``ven``."""

    clientID: Name128
    targets: list[Target] | None = None
    venName: Name128
    attributes: list[ValuesMap] | None = None


class Resource(ObjectMetadata):
    """``resource``."""

    clientID: Name128
    targets: list[Target] | None = None
    resourceName: Name128
    venID: ObjectID
    attributes: list[ValuesMap] | None = None


class AuthServerInfo(_Model):
    tokenURL: Uri


class ClientCredentialResponse(_Model):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    scope: str


class NotifiersResponse(_Model):
    WEBHOOK: bool


class ResourceBatchOut(_Model):
    """What ``POST /resources/batch`` did: each resource as created, in the order given."""

    resources: list[Resource]


class ResourceBatchIn(_Model):
    """Many resources of one VEN at once (bulk onboarding, a derbridge extension)."""

    resources: list[VenResourceRequest | BlResourceRequest] = Field(min_length=1, max_length=5000)


def dump(model: BaseModel) -> dict[str, Any]:
    """A representation as the VTN stores and answers it: JSON types, nulls left out."""
    return model.model_dump(mode="json", exclude_none=True)
