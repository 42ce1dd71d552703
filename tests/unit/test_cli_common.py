"""What every command shares: the choices equal the domain's values, problems map to exit codes and options."""

from __future__ import annotations

import pytest
import typer

from derbridge.api.app import ALL_COMPONENTS
from derbridge.assethub.domain.program import DeviceType, ProgramStatus
from derbridge.bridge.tracking import MessageState
from derbridge.cli.common import (
    AvailabilityChoice,
    CommunicationStatusChoice,
    ComponentChoice,
    DeviceTypeChoice,
    EventTypeChoice,
    ExitCode,
    FlowChoice,
    MessageStateChoice,
    ProgramStatusChoice,
    exit_code_for_status,
    fail,
    option_for_field,
)
from derbridge.contracts.device_status_check import CommunicationStatus
from derbridge.contracts.envelope import Flow
from derbridge.derms.domain.availability import Availability
from derbridge.derms.domain.event import EventType


def test_the_cli_choices_are_the_domain_values() -> None:
    assert [c.value for c in FlowChoice] == [f.value for f in Flow]
    assert [c.value for c in MessageStateChoice] == [s.value for s in MessageState]
    assert tuple(c.value for c in ComponentChoice) == ALL_COMPONENTS
    assert [c.value for c in EventTypeChoice] == [t.value for t in EventType]
    assert [c.value for c in DeviceTypeChoice] == [t.value for t in DeviceType]
    assert [c.value for c in ProgramStatusChoice] == [s.value for s in ProgramStatus]
    assert [c.value for c in AvailabilityChoice] == [a.value for a in Availability]
    assert [c.value for c in CommunicationStatusChoice] == [s.value for s in CommunicationStatus]


def test_exit_codes_are_distinct_and_fixed() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "NOT_FOUND": 3,
        "WAITING": 4,
        "UNREACHABLE": 5,
        "CONFLICT": 6,
    }


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, ExitCode.USAGE),
        (422, ExitCode.USAGE),
        (404, ExitCode.NOT_FOUND),
        (409, ExitCode.CONFLICT),
        (401, ExitCode.CONFLICT),
        (503, ExitCode.WAITING),
        (500, ExitCode.FAILED),
    ],
)
def test_a_problem_status_maps_to_its_exit_code(status: int, code: ExitCode) -> None:
    assert exit_code_for_status(status) is code


def test_a_request_field_is_named_by_its_option() -> None:
    fields = {"target_kw": "--kw", "start_at": "--start"}
    assert option_for_field("body.target_kw", fields) == "--kw"
    assert option_for_field("target_kw", fields) == "--kw"
    assert option_for_field("body.reason", fields) == "body.reason"


def test_fail_prints_one_line_and_exits_with_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as ended:
        fail("no event [x]: list them", ExitCode.NOT_FOUND)
    assert ended.value.exit_code == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "error: no event [x]: list them"


@pytest.mark.parametrize(
    ("typed", "seconds"),
    [("+30s", 30), ("+15m", 900), ("+2h", 7200), ("+1d", 86400), ("+1.5m", 90), ("now", 0), ("NOW", 0)],
)
def test_a_time_from_now(typed: str, seconds: int) -> None:
    from datetime import UTC, datetime, timedelta

    from derbridge.cli.common import parse_when

    before = datetime.now(UTC)
    moment = parse_when(typed)
    after = datetime.now(UTC)
    assert before + timedelta(seconds=seconds) <= moment <= after + timedelta(seconds=seconds)


def test_an_iso_time_without_an_offset_is_utc_and_one_with_an_offset_keeps_it() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from derbridge.cli.common import parse_when

    assert parse_when("2027-07-15T18:00:00") == datetime(2027, 7, 15, 18, tzinfo=UTC)
    assert parse_when("2027-07-15T18:00:00Z") == datetime(2027, 7, 15, 18, tzinfo=UTC)
    assert parse_when("2027-07-15T11:00:00-07:00") == datetime(2027, 7, 15, 11, tzinfo=timezone(timedelta(hours=-7)))


@pytest.mark.parametrize("typed", ["tomorrow", "+5", "-5m", "+m", "2027-13-01"])
def test_a_time_that_is_not_one_says_what_to_give(typed: str) -> None:
    import typer

    from derbridge.cli.common import parse_when

    with pytest.raises(typer.BadParameter, match=r"give ISO 8601 .*\+30s"):
        parse_when(typed)
