"""The edge gateway's rules, pure Python (no I/O): roles and scopes, object privacy by targets, and the
two payload vocabularies the edge defines on top of OpenADR (docs/edge.md):

- **enrollment attributes** a VEN puts on a resource to ask for its enrollment (F1), and the attributes
  the VTN fills in to tell the enrollment's status;
- **outcome payloads** a VEN puts in a report to tell what each resource did in an event (F7), and
  ``OPERATING_STATE`` for its communication status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from derbridge.contracts import enrollment_request as f1
from derbridge.contracts.event_outcome import Outcome
from derbridge.edge.roles import Role as Role  # re-exported: the roles belong to the edge's rules


class Scope(StrEnum):
    """The OAuth2 scopes of ``openadr3.yaml`` (``securitySchemes.oAuth2ClientCredentials``)."""

    READ_ALL = "read_all"
    READ_TARGETS = "read_targets"
    READ_VEN_OBJECTS = "read_ven_objects"
    READ_BL = "read_bl"
    WRITE_PROGRAMS = "write_programs"
    WRITE_EVENTS = "write_events"
    WRITE_REPORTS = "write_reports"
    WRITE_SUBSCRIPTIONS = "write_subscriptions"
    WRITE_VENS = "write_vens"


ROLE_SCOPES: Mapping[Role, frozenset[Scope]] = {
    Role.VEN: frozenset(
        {Scope.READ_TARGETS, Scope.READ_VEN_OBJECTS, Scope.WRITE_REPORTS, Scope.WRITE_SUBSCRIPTIONS, Scope.WRITE_VENS}
    ),
    Role.BL: frozenset(
        {
            Scope.READ_ALL,
            Scope.READ_BL,
            Scope.WRITE_PROGRAMS,
            Scope.WRITE_EVENTS,
            Scope.WRITE_SUBSCRIPTIONS,
            Scope.WRITE_VENS,
        }
    ),
}
"""The scopes each role may hold (the spec's descriptions: only BL writes programs and events and reads
all; only VENs write reports)."""

_READ_SCOPES = frozenset({Scope.READ_TARGETS, Scope.READ_VEN_OBJECTS, Scope.READ_BL})


class ScopeRefused(Exception):
    """None of the requested scopes may be granted to the client."""


def grant_scopes(role: Role, requested: str | None) -> list[str]:
    """The scopes to put in a token: the role's scopes, or those of them the client asked for (RFC 6749
    §3.3 lets the server grant fewer than asked). Asking only for scopes the role does not hold is refused."""
    allowed = ROLE_SCOPES[role]
    if requested is None or not requested.strip():
        return sorted(str(s.value) for s in allowed)
    asked = set(requested.split())
    granted = sorted(str(s.value) for s in allowed if s.value in asked)
    if not granted:
        raise ScopeRefused(f"none of {sorted(asked)} may be granted to a {role.value} client")
    return granted


def satisfies(held: Iterable[str], required: Scope) -> bool:
    """True when a token holding ``held`` may call an operation that requires ``required``: the scope
    itself, or ``read_all`` for any read (the business logic "can read all resources")."""
    scopes = set(held)
    return required.value in scopes or (required in _READ_SCOPES and Scope.READ_ALL.value in scopes)


# --- object privacy by targets (Definition.md, "Object Privacy") ----------------------------------------


def effective_targets(granted: Iterable[str], requested: Sequence[str] | None) -> set[str]:
    """The targets a VEN reads with: those granted to it (its ven's and resources' targets), narrowed to
    the ones it asked for when it asked (the spec's logical AND)."""
    mine = set(granted)
    return mine if not requested else mine & set(requested)


def visible_targets(object_targets: Sequence[str], effective: set[str], filtered: bool = False) -> list[str] | None:
    """The targets of a targeted program or event a VEN may see (target hiding: only matching ones), or
    None when it may not see the object at all. An object without targets is for every VEN — unless the
    VEN ``filtered`` by targets: a filter includes only objects with a matching target (Definition.md)."""
    if not object_targets:
        return None if filtered else []
    shown = [t for t in object_targets if t in effective]
    return shown or None


# --- enrollment attributes (resource.attributes) --------------------------------------------------------

ENROLLMENT_PROGRAM = "ENROLLMENT_PROGRAM"
"""The attribute whose presence makes a resource an enrollment request: the program code."""


@dataclass(frozen=True)
class AttributeSpec:
    """One enrollment attribute: where it goes in the F1 request, and whether it is required."""

    type: str
    path: str
    required: bool
    description: str


ENROLLMENT_ATTRIBUTES: tuple[AttributeSpec, ...] = (
    AttributeSpec(ENROLLMENT_PROGRAM, "program.program_code", True, "the program code, e.g. PCT_SUMMER"),
    AttributeSpec("PROGRAM_START_DATE", "program.start_date", False, "YYYY-MM-DD"),
    AttributeSpec("PROGRAM_END_DATE", "program.end_date", False, "YYYY-MM-DD"),
    AttributeSpec("CIS_SERVICE_AGREEMENT_ID", "program.cis_service_agreement_id", False, "string"),
    AttributeSpec("CIS_PERSON_ID", "customer.cis_person_id", True, "string"),
    AttributeSpec("CIS_ACCOUNT_ID", "customer.cis_account_id", True, "string"),
    AttributeSpec("CUSTOMER_NAME", "customer.name", True, "string"),
    AttributeSpec("HOME_PHONE", "customer.home_phone", False, "string"),
    AttributeSpec("BUSINESS_PHONE", "customer.business_phone", False, "string"),
    AttributeSpec("EMAIL", "customer.email", False, "string"),
    AttributeSpec("DIVISION", "location.division", True, "string"),
    AttributeSpec("CIS_PREMISE_ID", "location.cis_premise_id", True, "string"),
    AttributeSpec("CIS_SERVICE_POINT_ID", "location.cis_service_point_id", True, "string"),
    AttributeSpec("TIME_ZONE", "location.time_zone", True, "IANA name, e.g. America/Chicago"),
    AttributeSpec("ADDRESS", "location.address", True, "1 to 4 strings: address lines 1-4"),
    AttributeSpec("CITY", "location.city", True, "string"),
    AttributeSpec("COUNTY", "location.county", False, "string"),
    AttributeSpec("STATE", "location.state", True, "string"),
    AttributeSpec("POSTAL_CODE", "location.postal", True, "string"),
    AttributeSpec("COUNTRY", "location.country", True, "string"),
    AttributeSpec("DEVICE_TYPE", "device.device_type", True, "THERMOSTAT"),
    AttributeSpec("MANUFACTURER", "device.manufacturer", True, "string"),
    AttributeSpec("MODEL", "device.model", True, "string"),
    AttributeSpec("SERIAL_NUMBER", "device.serial_no", True, "string"),
    AttributeSpec("NIC_ID", "device.nic_id", True, "the device's NIC id at its head-end"),
    AttributeSpec("BADGE_NUMBER", "device.badge_no", False, "string"),
    AttributeSpec("INSTALLATION_METHOD", "installation_method", True, "e.g. CUSTOMER_INSTALLED"),
    AttributeSpec("ASSET_OWNERSHIP", "asset_ownership", True, "e.g. CUSTOMER_OWNED"),
    AttributeSpec("REQUESTED_AT", "requested_at", False, "RFC 3339 date-time; default: when the VTN got it"),
)
"""Every enrollment attribute a VEN may put on a resource (each a ``valuesMap`` with string values)."""

ENROLLMENT_STATUS = "ENROLLMENT_STATUS"
ENROLLMENT_STATE = "ENROLLMENT_STATE"
ENROLLMENT_ID = "ENROLLMENT_ID"
ENROLLMENT_REJECTION = "ENROLLMENT_REJECTION"
VTN_ATTRIBUTES = frozenset({ENROLLMENT_STATUS, ENROLLMENT_STATE, ENROLLMENT_ID, ENROLLMENT_REJECTION})
"""Attributes only the VTN writes (a client's values for them are dropped): the enrollment's status
(RECEIVED, ACCEPTED, REJECTED), its lifecycle state, its id, and one rejection per value
(``CODE|field|detail``)."""

_BY_TYPE = {a.type: a for a in ENROLLMENT_ATTRIBUTES}


class EnrollmentAttributesInvalid(Exception):
    """The enrollment attributes of a resource do not make an F1 request; ``errors`` name each problem."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


def attribute_map(attributes: Sequence[Mapping[str, Any]] | None) -> dict[str, list[Any]]:
    """``attributes`` as ``{type: values}`` (a repeated type: the last one wins)."""
    return {str(a["type"]): list(a["values"]) for a in attributes or []}


def attribute_value(attributes: Sequence[Mapping[str, Any]] | None, kind: str, default: Any) -> Any:
    """The first value of the ``kind`` attribute (the last one given wins, as in :func:`attribute_map`), or
    ``default`` when there is none; without building the whole map."""
    found: Sequence[Any] = [default]
    for a in attributes or []:
        if str(a["type"]) == kind:
            found = a["values"]
    return found[0]


def is_enrollment(attributes: Sequence[Mapping[str, Any]] | None) -> bool:
    """True when the resource asks for an enrollment."""
    return any(str(a["type"]) == ENROLLMENT_PROGRAM for a in attributes or [])


def client_attributes(attributes: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """``attributes`` without the ones only the VTN writes."""
    return [dict(a) for a in attributes or [] if a["type"] not in VTN_ATTRIBUTES]


def enrollment_attributes(attributes: Sequence[Mapping[str, Any]] | None) -> dict[str, list[Any]]:
    """Only the enrollment attributes of a resource (to tell whether a change touches them)."""
    return {k: v for k, v in attribute_map(attributes).items() if k in _BY_TYPE}


def enrollment_request(
    request_id: str,
    head_end_system: str,
    attributes: Sequence[Mapping[str, Any]] | None,
    received_at: datetime,
) -> f1.EnrollmentRequest:
    """The F1 request a resource's enrollment attributes make (one device per resource).

    Raises :class:`EnrollmentAttributesInvalid` naming every missing or malformed attribute.
    """
    return enrollment_request_of(request_id, head_end_system, attribute_map(attributes), received_at)


@lru_cache(maxsize=1024)
def _is_calendar_date(value: str) -> bool:
    # Cached: a batch's requests mostly share a few program start dates, and strptime is slow.
    try:
        datetime.strptime(value, "%Y-%m-%d")  # noqa: DTZ007 - a calendar date, no time zone
    except ValueError:
        return False
    return True


def enrollment_request_of(
    request_id: str, head_end_system: str, values: Mapping[str, list[Any]], received_at: datetime
) -> f1.EnrollmentRequest:
    """:func:`enrollment_request` from the attributes as :func:`attribute_map` gives them (a caller that
    has the map already does not build it again)."""
    errors: list[tuple[str, str]] = []
    found: dict[str, Any] = {}
    for spec in ENROLLMENT_ATTRIBUTES:
        given = values.get(spec.type)
        if not given:
            if spec.required:
                errors.append((spec.type, "is required"))
            continue
        if not all(isinstance(v, str) for v in given):
            errors.append((spec.type, "values must be strings"))
            continue
        if spec.type == "ADDRESS":
            if len(given) > 4:
                errors.append((spec.type, "has at most 4 lines"))
            found[spec.path] = given
        elif len(given) != 1:
            errors.append((spec.type, "takes exactly one value"))
        else:
            found[spec.path] = given[0]
    if errors:
        raise EnrollmentAttributesInvalid(errors)
    address = list(found["location.address"]) + [None] * 3
    device = {
        "sequence": 1,
        "device_type": found["device.device_type"],
        "manufacturer": found["device.manufacturer"],
        "model": found["device.model"],
        "serial_no": found["device.serial_no"],
        "nic_id": found["device.nic_id"],
        "head_end_system": head_end_system,
        "badge_no": found.get("device.badge_no"),
    }
    start = found.get("program.start_date")
    raw_start: str | None = None
    if start is not None and not _is_calendar_date(start):
        # Like the DERMS API: a bad start date does not fail the call; Asset Hub refuses the request.
        raw_start, start = str(start)[:32], None
    payload = {
        "request_id": request_id,
        "requested_at": found.get("requested_at", received_at.isoformat()),
        "customer": {
            "cis_person_id": found["customer.cis_person_id"],
            "cis_account_id": found["customer.cis_account_id"],
            "name": found["customer.name"],
            "home_phone": found.get("customer.home_phone"),
            "business_phone": found.get("customer.business_phone"),
            "email": found.get("customer.email"),
        },
        "program": {
            "program_code": found["program.program_code"],
            "cis_service_agreement_id": found.get("program.cis_service_agreement_id"),
            "start_date": start,
            "end_date": found.get("program.end_date"),
        },
        "location": {
            "division": found["location.division"],
            "cis_premise_id": found["location.cis_premise_id"],
            "cis_service_point_id": found["location.cis_service_point_id"],
            "time_zone": found["location.time_zone"],
            "address1": address[0],
            "address2": address[1],
            "address3": address[2],
            "address4": address[3],
            "city": found["location.city"],
            "county": found.get("location.county"),
            "state": found["location.state"],
            "postal": found["location.postal"],
            "country": found["location.country"],
        },
        "devices": [device],
        "installation_method": found["installation_method"],
        "asset_ownership": found["asset_ownership"],
        "raw_start_date": raw_start,
    }
    try:
        return f1.EnrollmentRequest.model_validate(payload)
    except ValidationError as error:
        reverse = {a.path.split(".")[-1]: a.type for a in ENROLLMENT_ATTRIBUTES}
        raise EnrollmentAttributesInvalid(
            [(reverse.get(str(e["loc"][-1]), ".".join(map(str, e["loc"]))), e["msg"]) for e in error.errors()]
        ) from None


def status_attributes(status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The attributes the VTN shows on an enrollment resource, from the DERMS's record of the request
    (:func:`derbridge.derms.services.enrollment_requests.request_status`); none before it is recorded."""
    if status is None:
        return []
    shown = [{"type": ENROLLMENT_STATUS, "values": [status["status"]]}]
    if status.get("state"):
        shown.append({"type": ENROLLMENT_STATE, "values": [status["state"]]})
    if status.get("enrollment_id"):
        shown.append({"type": ENROLLMENT_ID, "values": [status["enrollment_id"]]})
    rejections = [f"{r['code']}|{r.get('field') or ''}|{r['detail']}" for r in status.get("rejections") or []]
    if rejections:
        shown.append({"type": ENROLLMENT_REJECTION, "values": rejections})
    return shown


# --- outcome and state payloads (report.resources[].intervals[].payloads) --------------------------------

PARTICIPATION = "PARTICIPATION"
"""String: SUCCESSFUL_PARTICIPATION, IN_FLIGHT_OVERRIDE, NON_RESPONSIVE or ERROR."""
OVERRIDE = "OVERRIDE"
"""Boolean: the customer overrode the event while it ran (IN_FLIGHT_OVERRIDE when no PARTICIPATION)."""
OPT_OUT = "OPT_OUT"
"""Boolean: the customer opted out before the event started (preemptive opt-out)."""
SHED_KW = "SHED_KW"
"""Number: the load the resource shed, in kW (0 to 1000)."""
ERROR_MESSAGE = "ERROR_MESSAGE"
"""String: what went wrong, with PARTICIPATION ERROR."""
OPERATING_STATE = "OPERATING_STATE"
"""The spec's payload type: the resource's operating state (an enumeration string, e.g. NORMAL)."""

COMMUNICATION_STATUS = "COMMUNICATION_STATUS"
"""String ONLINE, OFFLINE or UNKNOWN: whether the head-end reaches the device (default for a resource named
in a report: ONLINE). An offline device is said so in a status report."""
COMMUNICATION_STATUSES = frozenset({"ONLINE", "OFFLINE", "UNKNOWN"})

OUTCOME_PAYLOADS = frozenset({PARTICIPATION, OVERRIDE, OPT_OUT, SHED_KW, ERROR_MESSAGE})
_REPORTABLE = {o.value for o in Outcome if o is not Outcome.CANCELLED}


class ReportPayloadsInvalid(Exception):
    """A report's payloads do not say what the resource did; ``errors`` name each one."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


@dataclass(frozen=True)
class ResourceReport:
    """What one resource of a report says, in DERMS terms."""

    resource_name: str
    outcome: dict[str, Any] | None
    """The F7 outcome fields (``outcome``, ``preemptive_opt_out``, ``shed_kw`` …) or None when the
    resource carried no outcome payload."""
    operating_state: str | None
    communication_status: str | None = None
    """ONLINE, OFFLINE or UNKNOWN when the report said (``COMMUNICATION_STATUS``), else None."""


def _one(values: list[Any], kind: type | tuple[type, ...], field: str, errors: list[tuple[str, str]]) -> Any:
    if len(values) != 1 or not isinstance(values[0], kind) or (kind is not bool and isinstance(values[0], bool)):
        errors.append((field, f"takes exactly one {getattr(kind, '__name__', 'number')} value"))
        return None
    return values[0]


def read_resource_report(
    index: int,
    resource: Mapping[str, Any],
    default_period: Mapping[str, Any] | None,
) -> ResourceReport:
    """The outcome and operating state one ``report.resources[index]`` carries (the last interval that has
    each payload wins). Participation start and end come from the interval's (or the resource's, or the
    report's) ``intervalPeriod``: ``start``, and ``start + duration`` when a duration is given."""
    errors: list[tuple[str, str]] = []
    outcome: dict[str, Any] = {}
    state: str | None = None
    reach: str | None = None
    period: Mapping[str, Any] | None = resource.get("intervalPeriod") or default_period
    for i, interval in enumerate(resource.get("intervals") or []):
        where = f"resources.{index}.intervals.{i}"
        payloads = {p["type"]: list(p["values"]) for p in interval.get("payloads") or []}
        if any(k in payloads for k in OUTCOME_PAYLOADS):
            period = interval.get("intervalPeriod") or period
        if PARTICIPATION in payloads:
            value = _one(payloads[PARTICIPATION], str, f"{where}.{PARTICIPATION}", errors)
            if value is not None and value not in _REPORTABLE:
                errors.append((f"{where}.{PARTICIPATION}", f"must be one of {sorted(_REPORTABLE)}"))
            elif value is not None:
                outcome["outcome"] = value
        if OVERRIDE in payloads and _one(payloads[OVERRIDE], bool, f"{where}.{OVERRIDE}", errors):
            outcome.setdefault("override", True)
        if OPT_OUT in payloads:
            value = _one(payloads[OPT_OUT], bool, f"{where}.{OPT_OUT}", errors)
            if value is not None:
                outcome["preemptive_opt_out"] = value
        if SHED_KW in payloads:
            value = _one(payloads[SHED_KW], (int, float), f"{where}.{SHED_KW}", errors)
            if value is not None and not 0 <= value <= 1000:
                errors.append((f"{where}.{SHED_KW}", "must be between 0 and 1000 kW"))
            elif value is not None:
                outcome["shed_kw"] = float(value)
        if ERROR_MESSAGE in payloads:
            value = _one(payloads[ERROR_MESSAGE], str, f"{where}.{ERROR_MESSAGE}", errors)
            if value is not None:
                outcome["error_message"] = value[:2000]
        if OPERATING_STATE in payloads:
            value = _one(payloads[OPERATING_STATE], str, f"{where}.{OPERATING_STATE}", errors)
            if value is not None:
                state = value[:32]
        if COMMUNICATION_STATUS in payloads:
            value = _one(payloads[COMMUNICATION_STATUS], str, f"{where}.{COMMUNICATION_STATUS}", errors)
            if value is not None and value not in COMMUNICATION_STATUSES:
                errors.append((f"{where}.{COMMUNICATION_STATUS}", f"must be one of {sorted(COMMUNICATION_STATUSES)}"))
            elif value is not None:
                reach = value
    if errors:
        raise ReportPayloadsInvalid(errors)
    if not outcome:
        return ResourceReport(str(resource["resourceName"]), None, state, reach)
    override = outcome.pop("override", False)
    if "outcome" not in outcome:
        outcome["outcome"] = Outcome.IN_FLIGHT_OVERRIDE.value if override else Outcome.SUCCESSFUL_PARTICIPATION.value
    if period and period.get("start"):
        start, end = _window(str(period["start"]), str(period["duration"]) if period.get("duration") else None)
        outcome["participation_start_at"] = start
        if end is not None:
            outcome["participation_end_at"] = end
    return ResourceReport(str(resource["resourceName"]), outcome, state, reach)


@lru_cache(maxsize=1024)
def _window(start: str, duration: str | None) -> tuple[datetime | None, datetime | None]:
    """A participation window's start and end (None: no end given, or no valid start). Remembered: the
    resources of one report mostly share one window, and parsing it per resource was a fifth of reading
    a report of 10,000."""
    begins = _parse_time(start)
    if begins is None or duration is None:
        return begins, None
    return begins, begins + parse_duration(duration)


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None and parsed.year > 1 else None


def parse_duration(value: str) -> timedelta:
    """An ISO 8601 duration (the spec's ``duration`` pattern, without years and months) as a timedelta."""
    match = re.fullmatch(
        r"(-?)P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?", value
    )
    if match is None:
        return timedelta(0)
    sign, years, months, days, unit, hours, minutes, seconds = match.groups()
    total = timedelta(
        days=int(years or 0) * 365 + int(months or 0) * 30 + int(days or 0) * (7 if unit == "W" else 1),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=float(seconds or 0),
    )
    return -total if sign else total


def iso_duration(seconds: float) -> str:
    """``seconds`` as an ISO 8601 duration, e.g. ``PT2H``."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT"
    text += f"{hours}H" if hours else ""
    text += f"{minutes}M" if minutes else ""
    text += f"{secs}S" if secs or text == "PT" else ""
    return text


# --- events that ask for readings rather than outcomes --------------------------------------------------

STATUS_EVENT_KEY = "status/"
"""``derms_key`` prefix of a program's standing status event: VENs report ``OPERATING_STATE`` and
``COMMUNICATION_STATUS`` of their resources on it (heartbeats)."""
CHECK_EVENT_KEY = "check/"
"""``derms_key`` prefix of an event asking one resource for a fresh reading for a status check (F2)."""
READING_REPORTS = (OPERATING_STATE, COMMUNICATION_STATUS)


def is_reading_event(derms_key: str | None) -> bool:
    """True for the VTN's events that ask for status readings (outcomes may not be reported on them)."""
    return derms_key is not None and derms_key.startswith((STATUS_EVENT_KEY, CHECK_EVENT_KEY))


def reading_descriptors(repeat: int) -> list[dict[str, Any]]:
    """The ``reportDescriptors`` of a reading event: an ``OPERATING_STATE`` and a ``COMMUNICATION_STATUS``
    reading per resource, reported ``repeat`` times (-1: again and again — a heartbeat)."""
    return [
        {
            "payloadType": kind,
            "readingType": "DIRECT_READ",
            "aggregate": False,
            "startInterval": -1,
            "numIntervals": -1,
            "historical": False,
            "frequency": -1,
            "repeat": repeat,
            "reportIntervals": "INTERVALS",
        }
        for kind in READING_REPORTS
    ]


def check_event_key(check_id: str, reply_from: str, reply_to: str) -> str:
    """The ``derms_key`` of a fresh-reading event: the check and the instances its answer travels between."""
    return CHECK_EVENT_KEY + json.dumps([check_id, reply_from, reply_to], separators=(",", ":"))


def parse_check_event_key(derms_key: str | None) -> tuple[str, str, str] | None:
    """``(check_id, reply_from, reply_to)`` of a fresh-reading event, or None for any other event."""
    if derms_key is None or not derms_key.startswith(CHECK_EVENT_KEY):
        return None
    try:
        parts = json.loads(derms_key[len(CHECK_EVENT_KEY) :])
    except ValueError:
        return None
    if not isinstance(parts, list) or len(parts) != 3 or not all(isinstance(p, str) and p for p in parts):
        return None
    return parts[0], parts[1], parts[2]
