"""Validation of one F1 enrollment request: each reason code alone, several at once, and a valid request."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, cast

import pytest

from derbridge.assethub.domain.enrollment import DeviceRef
from derbridge.assethub.domain.enrollment_validation import (
    AccountFacts,
    ActiveEnrollment,
    EnrollmentFacts,
    EnrollmentRequest,
    EnrollmentRequestDevice,
    Rejection,
    RejectionReason,
    validate_enrollment_request,
)
from derbridge.assethub.domain.program import DeviceType, Program, ProgramRules, ProgramStatus
from derbridge.cis.extract import AccountStatus

R = RejectionReason
NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)

PROGRAM = Program(
    program_code="BYOT27",
    name="Summer BYOT 2027",
    status=ProgramStatus.ACTIVE,
    enrollment_opens_at=NOW - timedelta(days=30),
    enrollment_closes_at=NOW + timedelta(days=30),
    eligible_device_types=frozenset({DeviceType.THERMOSTAT}),
    excluded_program_codes=frozenset(),
    rules=ProgramRules(),
)
OTHER = replace(PROGRAM, program_code="WINTER27", name="Winter BYOT 2027")
ACCOUNT = AccountFacts(
    cis_account_id="A-100",
    cis_person_id="P-1",
    status=AccountStatus.ACTIVE,
    premise_ids=frozenset({"PR-1", "PR-2"}),
    service_point_ids=frozenset({("PR-1", "SP-1"), ("PR-2", "SP-2")}),
)
DEVICE = EnrollmentRequestDevice(
    sequence=1,
    device_type="THERMOSTAT",
    manufacturer="ecobee",
    model="Smart Thermostat Premium",
    serial_no="SN-1",
    nic_id="NIC-1",
    head_end_system="ECOBEE",
    badge_no=None,
)
SECOND_DEVICE = replace(DEVICE, sequence=2, serial_no="SN-2", nic_id="NIC-2")
REF = DeviceRef("ECOBEE", "NIC-1")
REQUEST = EnrollmentRequest(
    head_end_system="ECOBEE",
    request_id="REQ-1",
    requested_at=NOW - timedelta(minutes=1),
    cis_person_id="P-1",
    cis_account_id="A-100",
    program_code="BYOT27",
    cis_premise_id="PR-1",
    cis_service_point_id="SP-1",
    start_date=date(2027, 6, 1),
    end_date=None,
    devices=(DEVICE,),
    installation_method="CUSTOMER_INSTALLED",
    asset_ownership="CUSTOMER_OWNED",
)
FACTS = EnrollmentFacts(
    account=ACCOUNT,
    program=PROGRAM,
    active_enrollments_of_devices={},
    programs_by_code={"BYOT27": PROGRAM, "WINTER27": OTHER},
)


def _found(rejections: tuple[Rejection, ...]) -> list[tuple[RejectionReason, str | None]]:
    return [(r.code, r.field) for r in rejections]


def _device_with_blank(name: str) -> EnrollmentRequestDevice:
    changes: dict[str, Any] = {name: ""}
    return replace(DEVICE, **changes)


def _held_by(program_code: str) -> dict[DeviceRef, tuple[ActiveEnrollment, ...]]:
    return {REF: (ActiveEnrollment("ENR-9", program_code, REF),)}


def test_reason_codes_are_exactly_those_of_f1() -> None:
    assert {r.value for r in RejectionReason} == {
        "UNKNOWN_ACCOUNT",
        "ACCOUNT_NOT_ACTIVE",
        "PREMISE_NOT_ON_ACCOUNT",
        "UNKNOWN_PROGRAM",
        "PROGRAM_NOT_OPEN",
        "DEVICE_TYPE_NOT_ELIGIBLE",
        "DEVICE_ALREADY_ENROLLED",
        "INVALID_REQUEST",
    }


def test_a_valid_request_is_accepted() -> None:
    assert validate_enrollment_request(REQUEST, FACTS, NOW) == ()


@pytest.mark.parametrize(
    ("request_", "facts"),
    [
        pytest.param(replace(REQUEST, devices=(DEVICE, SECOND_DEVICE)), FACTS, id="two-devices"),
        pytest.param(replace(REQUEST, end_date=date(2027, 6, 1)), FACTS, id="one-day"),
        pytest.param(replace(REQUEST, start_date=None, end_date=date(2027, 1, 1)), FACTS, id="end-only"),
        pytest.param(replace(REQUEST, cis_premise_id="PR-2", cis_service_point_id="SP-2"), FACTS, id="second-premise"),
        pytest.param(REQUEST, replace(FACTS, active_enrollments_of_devices=_held_by("WINTER27")), id="other-program"),
        pytest.param(
            REQUEST,
            replace(FACTS, active_enrollments_of_devices={DeviceRef("NEST", "NIC-1"): ()}),
            id="same-nic-other-head-end",
        ),
        pytest.param(replace(REQUEST, devices=(replace(DEVICE, badge_no="B-7"),)), FACTS, id="with-badge"),
        pytest.param(
            REQUEST,
            replace(FACTS, program=replace(PROGRAM, enrollment_opens_at=None, enrollment_closes_at=None)),
            id="no-window",
        ),
    ],
)
def test_other_valid_requests_are_accepted(request_: EnrollmentRequest, facts: EnrollmentFacts) -> None:
    assert validate_enrollment_request(request_, facts, NOW) == ()


CASES = [
    # UNKNOWN_ACCOUNT
    pytest.param(
        REQUEST,
        replace(FACTS, account=None),
        [(R.UNKNOWN_ACCOUNT, "customer.cis_account_id")],
        id="unknown-account",
    ),
    # ACCOUNT_NOT_ACTIVE, for every status but ACTIVE
    *[
        pytest.param(
            REQUEST,
            replace(FACTS, account=replace(ACCOUNT, status=status)),
            [(R.ACCOUNT_NOT_ACTIVE, "customer.cis_account_id")],
            id=f"account-{status.value}",
        )
        for status in AccountStatus
        if status is not AccountStatus.ACTIVE
    ],
    # PREMISE_NOT_ON_ACCOUNT
    pytest.param(
        replace(REQUEST, cis_premise_id="PR-9"),
        FACTS,
        [(R.PREMISE_NOT_ON_ACCOUNT, "location.cis_premise_id")],
        id="premise-not-on-account",
    ),
    pytest.param(
        replace(REQUEST, cis_service_point_id="SP-9"),
        FACTS,
        [(R.PREMISE_NOT_ON_ACCOUNT, "location.cis_service_point_id")],
        id="unknown-service-point",
    ),
    pytest.param(
        replace(REQUEST, cis_service_point_id="SP-2"),
        FACTS,
        [(R.PREMISE_NOT_ON_ACCOUNT, "location.cis_service_point_id")],
        id="service-point-of-another-premise",
    ),
    # UNKNOWN_PROGRAM
    pytest.param(
        REQUEST,
        replace(FACTS, program=None),
        [(R.UNKNOWN_PROGRAM, "program.program_code")],
        id="unknown-program",
    ),
    # PROGRAM_NOT_OPEN: status, or outside the window (the close is exclusive)
    *[
        pytest.param(
            REQUEST,
            replace(FACTS, program=replace(PROGRAM, status=status)),
            [(R.PROGRAM_NOT_OPEN, "program.program_code")],
            id=f"program-{status.value}",
        )
        for status in ProgramStatus
        if status is not ProgramStatus.ACTIVE
    ],
    pytest.param(
        REQUEST,
        replace(FACTS, program=replace(PROGRAM, enrollment_opens_at=NOW + timedelta(seconds=1))),
        [(R.PROGRAM_NOT_OPEN, "program.program_code")],
        id="window-not-open-yet",
    ),
    pytest.param(
        REQUEST,
        replace(FACTS, program=replace(PROGRAM, enrollment_closes_at=NOW)),
        [(R.PROGRAM_NOT_OPEN, "program.program_code")],
        id="window-closed",
    ),
    # DEVICE_TYPE_NOT_ELIGIBLE: a known type the program does not take, and an unknown type
    pytest.param(
        replace(REQUEST, devices=(replace(DEVICE, device_type="BATTERY"),)),
        FACTS,
        [(R.DEVICE_TYPE_NOT_ELIGIBLE, "devices[0].device_type")],
        id="battery-in-thermostat-program",
    ),
    pytest.param(
        replace(REQUEST, devices=(replace(DEVICE, device_type="SOLAR_PANEL"),)),
        FACTS,
        [(R.DEVICE_TYPE_NOT_ELIGIBLE, "devices[0].device_type")],
        id="unknown-device-type",
    ),
    # DEVICE_ALREADY_ENROLLED: same program; this program excludes the other; the other excludes this
    pytest.param(
        REQUEST,
        replace(FACTS, active_enrollments_of_devices=_held_by("BYOT27")),
        [(R.DEVICE_ALREADY_ENROLLED, "devices[0].nic_id")],
        id="already-in-same-program",
    ),
    pytest.param(
        REQUEST,
        replace(
            FACTS,
            program=replace(PROGRAM, excluded_program_codes=frozenset({"WINTER27"})),
            active_enrollments_of_devices=_held_by("WINTER27"),
        ),
        [(R.DEVICE_ALREADY_ENROLLED, "devices[0].nic_id")],
        id="this-program-excludes-the-other",
    ),
    pytest.param(
        REQUEST,
        replace(
            FACTS,
            active_enrollments_of_devices=_held_by("WINTER27"),
            programs_by_code={
                "BYOT27": PROGRAM,
                "WINTER27": replace(OTHER, excluded_program_codes=frozenset({"BYOT27"})),
            },
        ),
        [(R.DEVICE_ALREADY_ENROLLED, "devices[0].nic_id")],
        id="the-other-program-excludes-this",
    ),
    # INVALID_REQUEST: field-level problems
    pytest.param(replace(REQUEST, devices=()), FACTS, [(R.INVALID_REQUEST, "devices")], id="no-devices"),
    pytest.param(
        replace(REQUEST, devices=(DEVICE, replace(DEVICE, sequence=2))),
        FACTS,
        [(R.INVALID_REQUEST, "devices[1].nic_id")],
        id="duplicate-device",
    ),
    pytest.param(
        replace(REQUEST, devices=(DEVICE, replace(SECOND_DEVICE, sequence=1))),
        FACTS,
        [(R.INVALID_REQUEST, "devices[1].sequence")],
        id="duplicate-sequence",
    ),
    pytest.param(
        replace(REQUEST, devices=(replace(DEVICE, head_end_system="NEST"),)),
        FACTS,
        [(R.INVALID_REQUEST, "devices[0].head_end_system")],
        id="device-of-another-head-end",
    ),
    *[
        pytest.param(
            replace(REQUEST, devices=(_device_with_blank(name),)),
            FACTS,
            [(R.INVALID_REQUEST, f"devices[0].{name}")],
            id=f"blank-device-{name}",
        )
        for name in ("nic_id", "serial_no", "manufacturer", "model", "device_type", "head_end_system")
    ],
    pytest.param(
        replace(REQUEST, devices=(replace(DEVICE, nic_id="   "),)),
        FACTS,
        [(R.INVALID_REQUEST, "devices[0].nic_id")],
        id="whitespace-nic-id",
    ),
    pytest.param(replace(REQUEST, request_id=""), FACTS, [(R.INVALID_REQUEST, "request_id")], id="blank-request-id"),
    pytest.param(
        replace(REQUEST, requested_at=NOW.replace(tzinfo=None)),
        FACTS,
        [(R.INVALID_REQUEST, "requested_at")],
        id="naive-requested-at",
    ),
    pytest.param(
        replace(REQUEST, end_date=date(2027, 5, 31)),
        FACTS,
        [(R.INVALID_REQUEST, "program.end_date")],
        id="end-before-start",
    ),
    pytest.param(
        replace(REQUEST, cis_person_id="P-2"),
        FACTS,
        [(R.INVALID_REQUEST, "customer.cis_person_id")],
        id="person-not-account-holder",
    ),
    pytest.param(
        replace(REQUEST, cis_person_id=""),
        FACTS,
        [(R.INVALID_REQUEST, "customer.cis_person_id")],
        id="blank-person",
    ),
    # A blank id is reported once, as INVALID_REQUEST, not also as unknown.
    pytest.param(
        replace(REQUEST, cis_account_id=""),
        replace(FACTS, account=None),
        [(R.INVALID_REQUEST, "customer.cis_account_id")],
        id="blank-account",
    ),
    pytest.param(
        replace(REQUEST, program_code=""),
        replace(FACTS, program=None),
        [(R.INVALID_REQUEST, "program.program_code")],
        id="blank-program",
    ),
    pytest.param(
        replace(REQUEST, cis_premise_id=""),
        FACTS,
        [(R.INVALID_REQUEST, "location.cis_premise_id")],
        id="blank-premise",
    ),
    pytest.param(
        replace(REQUEST, cis_service_point_id=""),
        FACTS,
        [(R.INVALID_REQUEST, "location.cis_service_point_id")],
        id="blank-service-point",
    ),
    pytest.param(
        replace(REQUEST, installation_method=""),
        FACTS,
        [(R.INVALID_REQUEST, "installation_method")],
        id="blank-installation-method",
    ),
    pytest.param(
        replace(REQUEST, asset_ownership=" "),
        FACTS,
        [(R.INVALID_REQUEST, "asset_ownership")],
        id="blank-asset-ownership",
    ),
]


@pytest.mark.parametrize(("request_", "facts", "expected"), CASES)
def test_a_single_defect_gives_exactly_its_reason(
    request_: EnrollmentRequest,
    facts: EnrollmentFacts,
    expected: list[tuple[RejectionReason, str | None]],
) -> None:
    rejections = validate_enrollment_request(request_, facts, NOW)
    assert _found(rejections) == expected
    for rejection in rejections:
        assert rejection.detail.strip()


def test_every_reason_code_is_covered_by_a_single_defect_case() -> None:
    expected = (cast(list[tuple[RejectionReason, str | None]], case.values[2]) for case in CASES)
    covered = {code for pairs in expected for code, _ in pairs}
    assert covered == set(RejectionReason)


def test_several_defects_are_all_reported() -> None:
    request = replace(
        REQUEST,
        request_id="",
        end_date=date(2027, 1, 1),
        devices=(
            replace(DEVICE, device_type="BATTERY"),
            replace(SECOND_DEVICE, sequence=1, serial_no=""),
            replace(DEVICE, sequence=3),
        ),
    )
    facts = replace(
        FACTS,
        account=replace(ACCOUNT, status=AccountStatus.CLOSED, premise_ids=frozenset({"PR-2"})),
        program=replace(PROGRAM, status=ProgramStatus.SUSPENDED),
        active_enrollments_of_devices=_held_by("BYOT27"),
    )
    assert _found(validate_enrollment_request(request, facts, NOW)) == [
        (R.INVALID_REQUEST, "request_id"),
        (R.ACCOUNT_NOT_ACTIVE, "customer.cis_account_id"),
        (R.PREMISE_NOT_ON_ACCOUNT, "location.cis_premise_id"),
        (R.INVALID_REQUEST, "program.end_date"),
        (R.PROGRAM_NOT_OPEN, "program.program_code"),
        (R.DEVICE_TYPE_NOT_ELIGIBLE, "devices[0].device_type"),
        (R.DEVICE_ALREADY_ENROLLED, "devices[0].nic_id"),
        (R.INVALID_REQUEST, "devices[1].sequence"),
        (R.INVALID_REQUEST, "devices[1].serial_no"),
        (R.INVALID_REQUEST, "devices[2].nic_id"),
    ]


def test_unknown_account_and_unknown_program_together() -> None:
    facts = replace(FACTS, account=None, program=None)
    assert _found(validate_enrollment_request(REQUEST, facts, NOW)) == [
        (R.UNKNOWN_ACCOUNT, "customer.cis_account_id"),
        (R.UNKNOWN_PROGRAM, "program.program_code"),
    ]


def test_each_conflicting_enrollment_is_named() -> None:
    held = (
        ActiveEnrollment("ENR-1", "BYOT27", REF),
        ActiveEnrollment("ENR-2", "WINTER27", REF),
    )
    facts = replace(
        FACTS,
        program=replace(PROGRAM, excluded_program_codes=frozenset({"WINTER27"})),
        active_enrollments_of_devices={REF: held},
    )
    rejections = validate_enrollment_request(REQUEST, facts, NOW)
    assert [r.code for r in rejections] == [R.DEVICE_ALREADY_ENROLLED, R.DEVICE_ALREADY_ENROLLED]
    assert "ENR-1" in rejections[0].detail
    assert "ENR-2" in rejections[1].detail
    assert "ECOBEE:NIC-1" in rejections[0].detail


def test_details_say_what_is_wrong_and_what_to_do() -> None:
    request = replace(REQUEST, devices=(replace(DEVICE, device_type="SOLAR_PANEL"),))
    facts = replace(
        FACTS,
        program=replace(PROGRAM, eligible_device_types=frozenset({DeviceType.THERMOSTAT, DeviceType.BATTERY})),
    )
    (rejection,) = validate_enrollment_request(request, facts, NOW)
    assert "'SOLAR_PANEL'" in rejection.detail
    assert "BATTERY, THERMOSTAT" in rejection.detail

    (closed,) = validate_enrollment_request(
        REQUEST, replace(FACTS, program=replace(PROGRAM, status=ProgramStatus.SUSPENDED)), NOW
    )
    assert "SUSPENDED" in closed.detail
    (early,) = validate_enrollment_request(
        REQUEST, replace(FACTS, program=replace(PROGRAM, enrollment_opens_at=NOW + timedelta(days=1))), NOW
    )
    assert "opens at 2027-06-02" in early.detail
    (late,) = validate_enrollment_request(
        REQUEST, replace(FACTS, program=replace(PROGRAM, enrollment_closes_at=NOW - timedelta(days=1))), NOW
    )
    assert "closed at 2027-05-31" in late.detail


def test_the_account_holder_is_not_revealed() -> None:
    (rejection,) = validate_enrollment_request(replace(REQUEST, cis_person_id="P-2"), FACTS, NOW)
    assert "P-1" not in rejection.detail


def test_a_naive_or_non_utc_now_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="now"):
        validate_enrollment_request(REQUEST, FACTS, NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="now"):
        validate_enrollment_request(REQUEST, FACTS, NOW.astimezone(timezone(timedelta(hours=2))))


def test_facts_for_another_account_or_program_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="account"):
        validate_enrollment_request(REQUEST, replace(FACTS, account=replace(ACCOUNT, cis_account_id="A-9")), NOW)
    with pytest.raises(ValueError, match="program"):
        validate_enrollment_request(REQUEST, replace(FACTS, program=OTHER), NOW)
