"""Callback URLs that would make the VTN call into private networks are refused (SSRF), and the edge's pure
rules: scopes, target hiding, enrollment attributes, report payloads, the reading events' keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from derbridge.edge import domain
from derbridge.edge.webhooks import CallbackChecker
from derbridge.settings import EdgeSettings
from tests.support.vtn import enrollment_attributes


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[::1]/x"]
)
async def test_callbacks_to_non_public_addresses_are_refused(url: str) -> None:
    checker = CallbackChecker(EdgeSettings(allow_http_callbacks=True))
    refused = await checker.check(url)
    assert refused is not None
    assert "non-public" in refused


async def test_private_callbacks_only_with_the_explicit_setting() -> None:
    checker = CallbackChecker(
        EdgeSettings(allow_http_callbacks=True, allow_private_callbacks=True, webhook_timeout_seconds=1)
    )
    # Allowed past the address rule; nothing listens on port 9, so the echo challenge fails instead.
    refused = await checker.check("http://127.0.0.1:9/hook")
    assert refused is not None
    assert "echo challenge" in refused
    assert await CallbackChecker(EdgeSettings()).check("http://example.org/hook") == "must be an https URL"


def test_scopes_by_role() -> None:
    assert "write_reports" in domain.grant_scopes(domain.Role.VEN, None)
    assert domain.grant_scopes(domain.Role.VEN, "write_reports write_programs") == ["write_reports"]
    with pytest.raises(domain.ScopeRefused):
        domain.grant_scopes(domain.Role.VEN, "write_programs")
    assert domain.satisfies(["read_all"], domain.Scope.READ_TARGETS)
    assert not domain.satisfies(["read_all"], domain.Scope.WRITE_EVENTS)


def test_target_hiding() -> None:
    effective = domain.effective_targets({"a", "b"}, None)
    assert domain.visible_targets([], effective) == []  # untargeted: for everyone
    assert domain.visible_targets(["a", "z"], effective) == ["a"]  # others' targets hidden
    assert domain.visible_targets(["z"], effective) is None
    assert domain.effective_targets({"a", "b"}, ["b", "c"]) == {"b"}


def test_enrollment_attributes_make_an_f1_request() -> None:
    at = datetime(2027, 6, 1, tzinfo=UTC)
    request = domain.enrollment_request("R1", "ECOBEE", enrollment_attributes(1), at)
    assert (request.request_id, request.devices[0].nic_id, request.devices[0].head_end_system) == (
        "R1",
        "NIC1",
        "ECOBEE",
    )
    bad_date = [a | {"values": ["June"]} if a["type"] == "PROGRAM_START_DATE" else a for a in enrollment_attributes(1)]
    assert domain.enrollment_request("R2", "ECOBEE", bad_date, at).raw_start_date == "June"
    missing = [a for a in enrollment_attributes(1) if a["type"] not in {"CUSTOMER_NAME", "NIC_ID"}]
    with pytest.raises(domain.EnrollmentAttributesInvalid) as invalid:
        domain.enrollment_request("R3", "ECOBEE", missing, at)
    assert {f for f, _ in invalid.value.errors} == {"CUSTOMER_NAME", "NIC_ID"}
    # The VTN's own attributes are dropped from what a client sends.
    sent = [*enrollment_attributes(1), {"type": "ENROLLMENT_STATUS", "values": ["ACCEPTED"]}]
    assert all(a["type"] != "ENROLLMENT_STATUS" for a in domain.client_attributes(sent))


def test_report_payloads_make_outcomes() -> None:
    start = "2027-06-01T14:00:00Z"
    resource = {
        "resourceName": "r",
        "intervals": [
            {
                "id": 0,
                "intervalPeriod": {"start": start, "duration": "PT1H30M"},
                "payloads": [{"type": "OVERRIDE", "values": [True]}, {"type": "SHED_KW", "values": [0.5]}],
            }
        ],
    }
    read = domain.read_resource_report(0, resource, None)
    assert read.outcome is not None
    assert read.outcome["outcome"] == "IN_FLIGHT_OVERRIDE"
    assert read.outcome["participation_end_at"] - read.outcome["participation_start_at"] == timedelta(minutes=90)
    offline = domain.read_resource_report(
        0,
        {
            "resourceName": "r",
            "intervals": [{"id": 0, "payloads": [{"type": "COMMUNICATION_STATUS", "values": ["OFFLINE"]}]}],
        },
        None,
    )
    assert (offline.outcome, offline.communication_status) == (None, "OFFLINE")
    with pytest.raises(domain.ReportPayloadsInvalid) as invalid:
        domain.read_resource_report(
            0,
            {"resourceName": "r", "intervals": [{"id": 0, "payloads": [
                {"type": "SHED_KW", "values": [5000]},
                {"type": "PARTICIPATION", "values": ["MAYBE"]},
                {"type": "COMMUNICATION_STATUS", "values": ["ASLEEP"]},
            ]}]},
            None,
        )  # fmt: skip
    assert len(invalid.value.errors) == 3


def test_reading_event_keys() -> None:
    key = domain.check_event_key("c/1", "derms-a", "assethub-b")
    assert domain.is_reading_event(key)
    assert domain.is_reading_event(domain.STATUS_EVENT_KEY + "X")
    assert not domain.is_reading_event("01ab/ven")
    assert not domain.is_reading_event(None)
    assert domain.parse_check_event_key(key) == ("c/1", "derms-a", "assethub-b")
    assert domain.parse_check_event_key("check/not json") is None
    assert domain.parse_duration("PT2H") == timedelta(hours=2)
    assert domain.iso_duration(5400) == "PT1H30M"
