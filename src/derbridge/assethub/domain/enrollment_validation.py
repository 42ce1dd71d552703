"""Validation of one F1 enrollment request against what Asset Hub knows (flows.md F1).

:func:`validate_enrollment_request` returns every :class:`Rejection` that applies, not only the first, so
an aggregator can fix a request in one round trip. An empty result means the request is accepted.

The inputs are plain values. A service reads the facts for a whole batch of requests at once (accounts,
programs, the non-terminal enrollments of every device in the batch), then calls this function per request;
nothing here does I/O. Replays of the same ``(head_end_system, request_id)`` are the service's concern:
it answers them from the first result without validating again.

Decisions where flows.md is open:

* A blank identifier is INVALID_REQUEST only; the checks that would look it up (UNKNOWN_ACCOUNT,
  UNKNOWN_PROGRAM, the device checks) are skipped for it, so one mistake is not reported twice.
* A ``cis_person_id`` that is not the holder of the account is INVALID_REQUEST on
  ``customer.cis_person_id``: the account exists and may be fine, the request just names the wrong person.
  The detail does not reveal who the holder is, because the answer goes back to the aggregator.
* A device that appears twice in the request (same head-end and nic_id) is reported once, on the later
  entry, and that entry is not checked further.
* Besides the ids, ``manufacturer``, ``model``, ``installation_method`` and ``asset_ownership`` must not be
  blank (F2 and F3 send them on), and ``requested_at`` must be UTC; an ``end_date`` equal to the
  ``start_date`` is a valid one-day enrollment.
* DEVICE_ALREADY_ENROLLED looks at every enrollment of the device that is not terminal (PENDING,
  DEVICE_SETUP, ACTIVE): a device on its way into a program is as taken as one already in it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Final

from derbridge.assethub.domain.enrollment import DeviceRef
from derbridge.assethub.domain.program import DeviceType, Program, ProgramStatus
from derbridge.cis.extract import AccountStatus


class RejectionReason(StrEnum):
    """Why an enrollment request is refused (flows.md F1). One request may have several."""

    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    """No CIS account with this ``cis_account_id`` has been imported (P0)."""
    ACCOUNT_NOT_ACTIVE = "ACCOUNT_NOT_ACTIVE"
    """The account exists but is not ACTIVE (pending start, suspended or closed)."""
    PREMISE_NOT_ON_ACCOUNT = "PREMISE_NOT_ON_ACCOUNT"
    """The premise is not served by the account, or the service point is not on that premise."""
    UNKNOWN_PROGRAM = "UNKNOWN_PROGRAM"
    """No program has this ``program_code``."""
    PROGRAM_NOT_OPEN = "PROGRAM_NOT_OPEN"
    """The program is not ACTIVE (draft, suspended, closed) or the time is outside its enrollment window."""
    DEVICE_TYPE_NOT_ELIGIBLE = "DEVICE_TYPE_NOT_ELIGIBLE"
    """A device's type is not one the program enrolls (an unknown type string included)."""
    DEVICE_ALREADY_ENROLLED = "DEVICE_ALREADY_ENROLLED"
    """A device already has a non-terminal enrollment in the same program, or in a program that excludes
    this one or that this one excludes."""
    INVALID_REQUEST = "INVALID_REQUEST"
    """A field-level problem: a missing or blank value, inconsistent values, duplicates; ``field`` says
    which."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One reason to refuse a request: the code, the F1 payload path of the field at fault (None when no
    single field is), and a detail that says what is wrong and what to do."""

    code: RejectionReason
    field: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class EnrollmentRequestDevice:
    """One entry of an F1 request's ``devices[]``, as received (not yet validated)."""

    sequence: int
    device_type: str
    manufacturer: str
    model: str
    serial_no: str
    nic_id: str
    head_end_system: str
    badge_no: str | None = None

    @property
    def device_ref(self) -> DeviceRef:
        """The device's identity, ``(head_end_system, nic_id)``."""
        return DeviceRef(head_end_system=self.head_end_system, nic_id=self.nic_id)


@dataclass(frozen=True, slots=True)
class EnrollmentRequest:
    """One F1 enrollment request, as received from the head-end ``head_end_system`` (not yet validated).

    The service converts it from the message contract; the fields keep flows.md's names.
    """

    head_end_system: str
    """The head-end (aggregator) that sent the request; with ``request_id``, the idempotency key."""
    request_id: str
    requested_at: datetime
    cis_person_id: str
    cis_account_id: str
    program_code: str
    cis_premise_id: str
    cis_service_point_id: str
    start_date: date | None
    end_date: date | None
    devices: tuple[EnrollmentRequestDevice, ...]
    installation_method: str
    asset_ownership: str


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What Asset Hub knows of the requested CIS account (loaded by P0)."""

    cis_account_id: str
    cis_person_id: str
    """The person who holds the account."""
    status: AccountStatus
    premise_ids: frozenset[str]
    """The premises the account serves."""
    service_point_ids: frozenset[tuple[str, str]]
    """The service points of those premises, as ``(cis_premise_id, cis_service_point_id)`` pairs."""


@dataclass(frozen=True, slots=True)
class ActiveEnrollment:
    """A non-terminal enrollment (PENDING, DEVICE_SETUP or ACTIVE) that holds ``device``."""

    enrollment_id: str
    program_code: str
    device: DeviceRef


@dataclass(frozen=True, slots=True)
class EnrollmentFacts:
    """Everything validation needs to know about one request, filled by the service.

    ``account`` and ``program`` are the request's account and program, None when unknown.
    ``active_enrollments_of_devices`` maps each requested device to its non-terminal enrollments (a device
    with none may be absent). ``programs_by_code`` holds the programs of those enrollments, so the rule
    "a program that excludes it" can read the other program's exclusions too.
    """

    account: AccountFacts | None
    program: Program | None
    active_enrollments_of_devices: Mapping[DeviceRef, tuple[ActiveEnrollment, ...]] = dataclasses.field(
        default_factory=dict
    )
    programs_by_code: Mapping[str, Program] = dataclasses.field(default_factory=dict)


_ZERO: Final = timedelta(0)


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _is_utc(at: datetime) -> bool:
    return at.tzinfo is not None and at.utcoffset() == _ZERO


def _invalid(path: str, detail: str) -> Rejection:
    return Rejection(RejectionReason.INVALID_REQUEST, path, detail)


def _missing(path: str) -> Rejection:
    return _invalid(path, f"{path} is missing or blank; send a non-empty value")


def validate_enrollment_request(
    request: EnrollmentRequest, facts: EnrollmentFacts, now: datetime
) -> tuple[Rejection, ...]:
    """Every reason to refuse ``request`` given ``facts`` at ``now``; empty when it is accepted.

    ``now`` (timezone-aware UTC) decides whether the program is open. The rejections come in payload
    order: request fields, customer, location, program, then each device.

    Raises ``ValueError`` when ``now`` is naive or not UTC, or when ``facts`` describe another account or
    program than the request names: those are bugs in the caller, not in the request.
    """
    if not _is_utc(now):
        raise ValueError(f"now must be timezone-aware UTC, got {now.isoformat()}")
    if facts.account is not None and facts.account.cis_account_id != request.cis_account_id:
        raise ValueError(
            f"facts are for account {facts.account.cis_account_id!r}, the request names {request.cis_account_id!r}"
        )
    if facts.program is not None and facts.program.program_code != request.program_code:
        raise ValueError(
            f"facts are for program {facts.program.program_code!r}, the request names {request.program_code!r}"
        )

    rejections: list[Rejection] = []
    rejections += _request_fields(request)
    rejections += _customer(request, facts.account)
    rejections += _location(request, facts.account)
    rejections += _program(request, facts.program, now)
    rejections += _devices(request, facts)
    return tuple(rejections)


def _request_fields(request: EnrollmentRequest) -> list[Rejection]:
    out: list[Rejection] = []
    if _blank(request.head_end_system):
        out.append(_missing("head_end_system"))
    if _blank(request.request_id):
        out.append(_missing("request_id"))
    if not _is_utc(request.requested_at):
        out.append(
            _invalid(
                "requested_at",
                f"requested_at {request.requested_at.isoformat()} has no UTC offset; send UTC with 'Z'",
            )
        )
    if _blank(request.installation_method):
        out.append(_missing("installation_method"))
    if _blank(request.asset_ownership):
        out.append(_missing("asset_ownership"))
    return out


def _customer(request: EnrollmentRequest, account: AccountFacts | None) -> list[Rejection]:
    out: list[Rejection] = []
    if _blank(request.cis_person_id):
        out.append(_missing("customer.cis_person_id"))
    if _blank(request.cis_account_id):
        out.append(_missing("customer.cis_account_id"))
        return out
    if account is None:
        out.append(
            Rejection(
                RejectionReason.UNKNOWN_ACCOUNT,
                "customer.cis_account_id",
                f"no CIS account {request.cis_account_id!r} is known; check the account number with the "
                "customer's bill, or wait for the next CIS import if the account is new",
            )
        )
        return out
    if account.status is not AccountStatus.ACTIVE:
        out.append(
            Rejection(
                RejectionReason.ACCOUNT_NOT_ACTIVE,
                "customer.cis_account_id",
                f"account {request.cis_account_id!r} is {account.status.value}; only an ACTIVE account can "
                "enroll: enroll once service has started, or use the customer's current account",
            )
        )
    if not _blank(request.cis_person_id) and request.cis_person_id != account.cis_person_id:
        # Deliberately not naming the real holder: this detail is sent back to the aggregator.
        out.append(
            _invalid(
                "customer.cis_person_id",
                f"person {request.cis_person_id!r} does not hold account {request.cis_account_id!r}; "
                "send the cis_person_id of the account holder",
            )
        )
    return out


def _location(request: EnrollmentRequest, account: AccountFacts | None) -> list[Rejection]:
    out: list[Rejection] = []
    premise_blank = _blank(request.cis_premise_id)
    if premise_blank:
        out.append(_missing("location.cis_premise_id"))
    sp_blank = _blank(request.cis_service_point_id)
    if sp_blank:
        out.append(_missing("location.cis_service_point_id"))
    if account is None or premise_blank:
        return out
    if request.cis_premise_id not in account.premise_ids:
        out.append(
            Rejection(
                RejectionReason.PREMISE_NOT_ON_ACCOUNT,
                "location.cis_premise_id",
                f"premise {request.cis_premise_id!r} is not served by account {request.cis_account_id!r}; "
                "send the premise where the device is installed, under the account that pays for it",
            )
        )
    elif not sp_blank and (request.cis_premise_id, request.cis_service_point_id) not in (account.service_point_ids):
        out.append(
            Rejection(
                RejectionReason.PREMISE_NOT_ON_ACCOUNT,
                "location.cis_service_point_id",
                f"service point {request.cis_service_point_id!r} is not on premise "
                f"{request.cis_premise_id!r}; send a service point of that premise",
            )
        )
    return out


def _program(request: EnrollmentRequest, program: Program | None, now: datetime) -> list[Rejection]:
    out: list[Rejection] = []
    if request.start_date is not None and request.end_date is not None and request.end_date < request.start_date:
        out.append(
            _invalid(
                "program.end_date",
                f"end_date {request.end_date.isoformat()} is before start_date "
                f"{request.start_date.isoformat()}; send an end_date on or after the start_date, or none",
            )
        )
    if _blank(request.program_code):
        out.append(_missing("program.program_code"))
        return out
    if program is None:
        out.append(
            Rejection(
                RejectionReason.UNKNOWN_PROGRAM,
                "program.program_code",
                f"no program {request.program_code!r} exists; use the code of a program the utility offers",
            )
        )
        return out
    if not program.is_open_for_enrollment(now):
        out.append(
            Rejection(
                RejectionReason.PROGRAM_NOT_OPEN,
                "program.program_code",
                f"program {program.program_code!r} is not open for enrollment: {_why_closed(program, now)}",
            )
        )
    return out


def _why_closed(program: Program, now: datetime) -> str:
    if program.status is not ProgramStatus.ACTIVE:
        return f"it is {program.status.value}; enroll only while it is ACTIVE"
    if program.enrollment_opens_at is not None and now < program.enrollment_opens_at:
        return f"enrollment opens at {program.enrollment_opens_at.isoformat()}; send the request then"
    closes = program.enrollment_closes_at
    closed_at = closes.isoformat() if closes is not None else "an earlier time"
    return f"enrollment closed at {closed_at}; choose a program that is open"


def _devices(request: EnrollmentRequest, facts: EnrollmentFacts) -> list[Rejection]:
    if not request.devices:
        return [_invalid("devices", "the request has no devices; send at least one device")]
    out: list[Rejection] = []
    first_of_sequence: dict[int, int] = {}
    first_of_device: dict[DeviceRef, int] = {}
    for index, device in enumerate(request.devices):
        path = f"devices[{index}]"
        if device.sequence in first_of_sequence:
            first = first_of_sequence[device.sequence]
            out.append(
                _invalid(
                    f"{path}.sequence",
                    f"sequence {device.sequence} is also used by devices[{first}]; give each device its own sequence",
                )
            )
        else:
            first_of_sequence[device.sequence] = index

        ids_ok = True
        for name in ("head_end_system", "nic_id"):
            if _blank(getattr(device, name)):
                out.append(_missing(f"{path}.{name}"))
                ids_ok = False
        for name in ("serial_no", "manufacturer", "model"):
            if _blank(getattr(device, name)):
                out.append(_missing(f"{path}.{name}"))
        if not _blank(device.head_end_system) and device.head_end_system != request.head_end_system:
            out.append(
                _invalid(
                    f"{path}.head_end_system",
                    f"the device's head_end_system {device.head_end_system!r} differs from the request's "
                    f"{request.head_end_system!r}; a head-end enrolls only devices it talks to",
                )
            )
        if ids_ok:
            ref = device.device_ref
            if ref in first_of_device:
                out.append(
                    _invalid(
                        f"{path}.nic_id",
                        f"device {ref.key} is also devices[{first_of_device[ref]}]; list each device once",
                    )
                )
                continue
            first_of_device[ref] = index

        if _blank(device.device_type):
            out.append(_missing(f"{path}.device_type"))
        elif facts.program is not None:
            out += _device_type(path, device.device_type, facts.program)
        if ids_ok and not _blank(request.program_code):
            out += _already_enrolled(path, device.device_ref, request.program_code, facts)
    return out


def _device_type(path: str, device_type: str, program: Program) -> list[Rejection]:
    try:
        known: DeviceType | None = DeviceType(device_type)
    except ValueError:
        known = None
    if known is not None and known in program.eligible_device_types:
        return []
    allowed = ", ".join(sorted(t.value for t in program.eligible_device_types)) or "none"
    what = "is not a known device type" if known is None else "is not eligible"
    return [
        Rejection(
            RejectionReason.DEVICE_TYPE_NOT_ELIGIBLE,
            f"{path}.device_type",
            f"device_type {device_type!r} {what} in program {program.program_code!r}; the program enrolls: {allowed}",
        )
    ]


def _already_enrolled(path: str, ref: DeviceRef, program_code: str, facts: EnrollmentFacts) -> list[Rejection]:
    out: list[Rejection] = []
    excluded_here = facts.program.excluded_program_codes if facts.program is not None else frozenset()
    for held in facts.active_enrollments_of_devices.get(ref, ()):
        if held.program_code == program_code:
            why = f"it is already in program {program_code!r} (enrollment {held.enrollment_id})"
        elif held.program_code in excluded_here:
            why = (
                f"program {program_code!r} excludes program {held.program_code!r}, where it is enrolled "
                f"(enrollment {held.enrollment_id})"
            )
        else:
            other = facts.programs_by_code.get(held.program_code)
            if other is None or program_code not in other.excluded_program_codes:
                continue
            why = (
                f"it is enrolled in program {held.program_code!r} (enrollment {held.enrollment_id}), which "
                f"excludes program {program_code!r}"
            )
        out.append(
            Rejection(
                RejectionReason.DEVICE_ALREADY_ENROLLED,
                f"{path}.nic_id",
                f"device {ref.key} cannot be enrolled: {why}; unenroll it there first",
            )
        )
    return out
