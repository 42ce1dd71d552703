"""The AsyncAPI document of the bridge's messages: complete, true to the pydantic contracts, valid AsyncAPI 3.0
by the official parser (Node, ``tests/tools/asyncapi``), and written by ``derbridge contracts asyncapi``.

The parser check needs ``node`` and ``npm ci --prefix tests/tools/asyncapi``; without them it skips visibly,
and fails under ``DERBRIDGE_REQUIRE_SERVICES`` (CI) so that it can never silently stop running.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from referencing import Registry
from referencing.jsonschema import DRAFT7

from derbridge import __version__
from derbridge.contracts import (
    device_score_transfer,
    device_status_check,
    enrollment_request,
    enrollment_sync,
    event_cancellation,
    event_outcome,
    event_reservation,
    program_sync,
)
from derbridge.contracts.asyncapi import (
    ASYNCAPI_VERSION,
    REPLIES,
    build_asyncapi,
    operation_id,
    render,
)
from derbridge.contracts.common import Acknowledgement, AckStatus, DeviceIdentity
from derbridge.contracts.envelope import Endpoint, Envelope, Flow
from derbridge.contracts.registry import BY_TYPE, CONTRACTS, parse_payload
from tests.support.embedded import derbridge

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "asyncapi"
REQUIRE_ENV = "DERBRIDGE_REQUIRE_SERVICES"
DOC_URI = "urn:derbridge:test:asyncapi"

AT = datetime(2025, 6, 1, 14, 30, tzinfo=UTC)
ECOBEE = DeviceIdentity(head_end_system="ECOBEE", nic_id="NIC-1")
MANIFEST = {
    "file_id": "F-20250601",
    "generated_at": AT,
    "row_count": 2,
    "sha256": "0" * 64,
    "byte_size": 120,
}
LOCATION = device_score_transfer.FileLocation(store="local", key="scores/F-20250601.csv")


def ack(status: AckStatus = AckStatus.APPLIED) -> Acknowledgement:
    return Acknowledgement(acknowledged_message_id="0197c1a0-0000-7000-8000-000000000001", status=status)


EXAMPLES: dict[str, BaseModel] = {
    enrollment_request.TYPE: enrollment_request.EnrollmentRequestBatch(
        head_end_system="ECOBEE",
        requests=[
            enrollment_request.EnrollmentRequest(
                request_id="R-1",
                requested_at=AT,
                customer=enrollment_request.Customer(cis_person_id="P1", cis_account_id="A1", name="Ada Lovelace"),
                program=enrollment_request.ProgramRef(program_code="SUMMER-BYOT", start_date=date(2025, 6, 1)),
                location=enrollment_request.Location(
                    division="NORTH",
                    cis_premise_id="PR1",
                    cis_service_point_id="SP1",
                    time_zone="America/Chicago",
                    address1="1 Main St",
                    city="Springfield",
                    state="IL",
                    postal="62701",
                    country="US",
                ),
                devices=[
                    enrollment_request.RequestedDevice(
                        sequence=1,
                        device_type="THERMOSTAT",
                        manufacturer="ecobee",
                        model="Smart Thermostat Premium",
                        serial_no="SN-1",
                        nic_id="NIC-1",
                        head_end_system="ECOBEE",
                    )
                ],
                installation_method="CUSTOMER_INSTALLED",
                asset_ownership="CUSTOMER_OWNED",
            )
        ],
    ),
    enrollment_request.RESPONSE_TYPE: enrollment_request.EnrollmentResponseBatch(
        head_end_system="ECOBEE",
        answers=[
            enrollment_request.EnrollmentAnswer(
                request_id="R-1", answer=enrollment_request.Answer.ACCEPTED, enrollment_id="E-1", state="PENDING"
            ),
            enrollment_request.EnrollmentAnswer(
                request_id="R-2",
                answer=enrollment_request.Answer.REJECTED,
                state="REJECTED",
                rejections=[enrollment_request.RejectionDetail(code="UNKNOWN_ACCOUNT", detail="no account A9")],
            ),
        ],
    ),
    device_status_check.TYPE: device_status_check.StatusCheckRequest(
        check_id="C-1",
        reason=device_status_check.CheckReason.ENROLLMENT_SETUP,
        requested_by="enrollment-setup",
        device=device_status_check.CheckedDevice(
            head_end_system="ECOBEE", nic_id="NIC-1", device_type="THERMOSTAT", manufacturer="ecobee", model="Premium"
        ),
    ),
    device_status_check.RESPONSE_TYPE: device_status_check.StatusCheckResponse(
        check_id="C-1",
        result=device_status_check.CheckResult.SUCCESS,
        communication_status=device_status_check.CommunicationStatus.ONLINE,
        last_communication_at=AT,
        source="ECOBEE",
    ),
    enrollment_sync.TYPE: enrollment_sync.EnrollmentSync(
        sync_id="S-1",
        change=enrollment_sync.SyncChange.ENROLLED,
        contact=enrollment_sync.Contact(contact_id="CT-1", cis_person_id="P1"),
        subscription=enrollment_sync.Subscription(
            subscription_id="E-1",
            cis_account_id="A1",
            program_code="SUMMER-BYOT",
            status=enrollment_sync.SubscriptionStatus.ACTIVE,
            start_at=AT,
        ),
        location=enrollment_sync.SyncLocation(division="NORTH", cis_premise_id="PR1", cis_service_point_id="SP1"),
        devices=[
            enrollment_sync.SyncedDevice(
                head_end_system="ECOBEE",
                nic_id="NIC-1",
                device_type="THERMOSTAT",
                manufacturer="ecobee",
                model="Premium",
                availability=enrollment_sync.DeviceAvailability.AVAILABLE,
            )
        ],
    ),
    enrollment_sync.ACK_TYPE: ack(AckStatus.STALE),
    device_score_transfer.TYPE: device_score_transfer.ScoreTransfer(
        manifest=device_score_transfer.ScoreFileManifest(
            **MANIFEST, scoring_model_version="1.0", programs=["SUMMER-BYOT"]
        ),
        location=LOCATION,
    ),
    device_score_transfer.ACK_TYPE: Acknowledgement(
        acknowledged_message_id="0197c1a0-0000-7000-8000-000000000002",
        status=AckStatus.APPLIED,
        unknown_devices=[ECOBEE],
    ),
    event_reservation.TYPE: event_reservation.EventReservation(
        event_id="EV-1",
        derms_instance_id="derms-1",
        program_code="SUMMER-BYOT",
        event_type=event_reservation.EventType.ECONOMIC,
        start_at=AT,
        end_at=AT.replace(hour=18),
        status=event_reservation.EventStatus.SCHEDULED,
        devices=[
            event_reservation.ReservedDevice(
                record_id="RS-1",
                head_end_system="ECOBEE",
                nic_id="NIC-1",
                reservation_start_at=AT,
                reservation_end_at=AT.replace(hour=18),
            )
        ],
        devices_file=device_score_transfer.FileManifest(**MANIFEST),
        devices_location=LOCATION,
    ),
    event_reservation.ACK_TYPE: ack(),
    event_cancellation.TYPE: event_cancellation.EventCancellation(
        event_id="EV-1", derms_instance_id="derms-1", cancelled_at=AT, reason_text="Forecast changed."
    ),
    event_cancellation.ACK_TYPE: ack(),
    event_outcome.TYPE: event_outcome.EventOutcomeBatch(
        event_id="EV-1",
        outcomes=[
            event_outcome.DeviceOutcome(
                head_end_system="ECOBEE",
                nic_id="NIC-1",
                outcome=event_outcome.Outcome.SUCCESSFUL_PARTICIPATION,
                participation_start_at=AT,
                participation_end_at=AT.replace(hour=18),
                shed_kw=1.2,
            ),
            event_outcome.DeviceOutcome(
                head_end_system="ECOBEE", nic_id="NIC-2", outcome=event_outcome.Outcome.ERROR, error_message="offline"
            ),
        ],
    ),
    event_outcome.ACK_TYPE: ack(),
    program_sync.TYPE: program_sync.ProgramSync(
        program_code="SUMMER-BYOT",
        version=3,
        name="Summer bring-your-own-thermostat",
        status=program_sync.ProgramStatus.CLOSED,
        expected_shed_kw=1.5,
        outcome_grace_hours=24.0,
    ),
    program_sync.ACK_TYPE: ack(AckStatus.STALE),
}
"""One real payload per message type, built from the pydantic models."""


def example_envelope(message_type: str) -> dict[str, Any]:
    """The wire form of a real envelope carrying :data:`EXAMPLES`'s payload of ``message_type``."""
    contract = BY_TYPE[message_type]
    envelope = Envelope(
        type=message_type,
        flow=contract.flow,
        correlation_id="0197c1a0-0000-7000-8000-0000000000c0",
        causation_id=None,
        source=Endpoint(system=contract.source),
        target=Endpoint(system=contract.target, instance="derms-1"),
        business_key="ECOBEE:NIC-1",
        sequence=3,
        occurred_at=AT,
        payload=EXAMPLES[message_type].model_dump(mode="json"),
    )
    parse_payload(envelope)  # the example is a valid message of its type by the code's own rules
    wire: dict[str, Any] = json.loads(envelope.model_dump_json())
    return wire


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_asyncapi(__version__)


def validator_for(document: dict[str, Any], message_type: str) -> jsonschema.Draft7Validator:
    """A validator of ``message_type``'s payload schema whose ``#/components/...`` references resolve in
    ``document`` (AsyncAPI's schema format is a superset of JSON Schema draft 07)."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT7.create_resource(document))
    schema = {"$ref": f"{DOC_URI}#/components/messages/{message_type}/payload"}
    return jsonschema.Draft7Validator(
        schema, registry=registry, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


# --- the document, in Python -------------------------------------------------------------------------------------


def test_every_contract_is_a_message_and_every_flow_a_channel(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == ASYNCAPI_VERSION == "3.0.0"
    assert document["info"]["title"] == "derbridge bridge messages"
    assert document["info"]["version"] == __version__
    assert document["defaultContentType"] == "application/json"
    assert document["servers"]["amqp"]["protocol"] == "amqp"
    assert document["servers"]["sql"]["protocol"] == "sql"

    messages = document["components"]["messages"]
    assert set(messages) == {c.type for c in CONTRACTS}
    assert set(document["channels"]) == {flow.value for flow in Flow}
    for flow in Flow:
        channel = document["channels"][flow.value]
        assert channel["address"] == flow.value
        assert set(channel["messages"]) == {c.type for c in CONTRACTS if c.flow is flow}
    for contract in CONTRACTS:
        message = messages[contract.type]
        assert message["name"] == contract.type
        assert message["summary"] == contract.summary
        assert message["contentType"] == "application/json"
        assert message["title"]
        properties = message["payload"]["properties"]
        assert properties["type"]["const"] == contract.type
        assert properties["flow"]["const"] == contract.flow.value
        assert "message_id" in message["payload"]["required"]


def test_envelope_fields_are_all_in_the_schema_and_described(document: dict[str, Any]) -> None:
    description = document["info"]["description"]
    for message in document["components"]["messages"].values():
        assert list(message["payload"]["properties"]) == list(Envelope.model_fields)
    for field in Envelope.model_fields:
        assert f"`{field}`" in description, field
    correlation = document["components"]["correlationIds"]["correlation_id"]
    assert correlation["location"] == "$message.payload#/correlation_id"


def test_each_contract_is_sent_by_its_source_and_requests_name_their_reply(document: dict[str, Any]) -> None:
    operations = document["operations"]
    assert set(operations) == {operation_id(c) for c in CONTRACTS}
    assert operations["assethub.send.enrollment-sync.v1"]["channel"] == {"$ref": "#/channels/enrollment-sync"}
    for contract in CONTRACTS:
        operation = operations[operation_id(contract)]
        assert operation_id(contract).startswith(f"{contract.source.value}.send.")
        assert operation["action"] == "send"
        assert operation["channel"] == {"$ref": f"#/channels/{contract.flow.value}"}
        assert operation["messages"] == [{"$ref": f"#/channels/{contract.flow.value}/messages/{contract.type}"}]
        reply = REPLIES.get(contract.type)
        if reply is None:
            assert "reply" not in operation
            continue
        answer = BY_TYPE[reply]
        assert (answer.flow, answer.source, answer.target) == (contract.flow, contract.target, contract.source)
        assert operation["reply"]["messages"] == [{"$ref": f"#/channels/{contract.flow.value}/messages/{reply}"}]
    assert set(REPLIES) | set(REPLIES.values()) == set(BY_TYPE), "every message is a request or an answer"
    assert REPLIES[enrollment_request.TYPE] == enrollment_request.RESPONSE_TYPE
    assert REPLIES[device_status_check.TYPE] == device_status_check.RESPONSE_TYPE


def test_every_reference_resolves_and_every_schema_is_used(document: dict[str, Any]) -> None:
    def pointer(ref: str) -> Any:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    refs: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                refs.append(item) if key == "$ref" else collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(document)
    for ref in refs:
        pointer(ref)
    used = {ref.removeprefix("#/components/schemas/") for ref in refs if ref.startswith("#/components/schemas/")}
    assert used == set(document["components"]["schemas"])
    assert not any("$defs" in json.dumps(schema) for schema in document["components"]["schemas"].values())


def test_the_document_is_deterministic_json() -> None:
    first, second = render(build_asyncapi("1.2.3")), render(build_asyncapi("1.2.3"))
    assert first == second
    assert json.loads(first) == build_asyncapi("1.2.3")
    schemas = list(json.loads(first)["components"]["schemas"])
    assert schemas == sorted(schemas)


def test_examples_cover_every_contract() -> None:
    missing = set(BY_TYPE) - set(EXAMPLES)
    assert not missing, f"add an example payload to EXAMPLES for {sorted(missing)}"
    for message_type, example in EXAMPLES.items():
        assert isinstance(example, BY_TYPE[message_type].payload), message_type


@pytest.mark.parametrize("message_type", [c.type for c in CONTRACTS])
def test_each_message_schema_accepts_a_real_envelope(document: dict[str, Any], message_type: str) -> None:
    validator_for(document, message_type).validate(example_envelope(message_type))


@pytest.mark.parametrize("message_type", [c.type for c in CONTRACTS])
def test_each_message_schema_rejects_a_payload_without_a_required_field(
    document: dict[str, Any], message_type: str
) -> None:
    envelope = example_envelope(message_type)
    required = next(name for name, field in BY_TYPE[message_type].payload.model_fields.items() if field.is_required())
    del envelope["payload"][required]
    errors = list(validator_for(document, message_type).iter_errors(envelope))
    assert any(error.validator == "required" and required in error.message for error in errors), errors


def test_a_message_schema_rejects_another_type_or_flow_or_an_unknown_field(document: dict[str, Any]) -> None:
    validator = validator_for(document, enrollment_sync.TYPE)
    envelope = example_envelope(enrollment_sync.TYPE)
    assert validator.is_valid(envelope)
    assert not validator.is_valid({**envelope, "type": enrollment_sync.ACK_TYPE})
    assert not validator.is_valid({**envelope, "flow": Flow.EVENT_OUTCOME.value})
    assert not validator.is_valid({**envelope, "payload": {**envelope["payload"], "sync_idd": "typo"}})
    assert not validator.is_valid({k: v for k, v in envelope.items() if k != "message_id"})
    assert not validator.is_valid(example_envelope(enrollment_sync.ACK_TYPE))


# --- the official AsyncAPI parser ---------------------------------------------------------------------------------


def _tool_unavailable(what: str) -> None:
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{what}, and {REQUIRE_ENV} says tool tests must run")
    pytest.skip(what)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _tool_unavailable("node is not on PATH: the AsyncAPI parser check is skipped")
    if not (TOOLS / "node_modules" / "@asyncapi" / "parser").is_dir():
        _tool_unavailable(
            f"{TOOLS / 'node_modules'} is missing (run: npm ci --prefix tests/tools/asyncapi): "
            "the AsyncAPI parser check is skipped"
        )
    assert node is not None
    return node


def _parse(node: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(TOOLS / "validate.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_official_asyncapi_parser_accepts_the_document(document: dict[str, Any], tmp_path: Path) -> None:
    node = _node()
    path = tmp_path / "asyncapi.json"
    path.write_text(render(document), encoding="utf-8")
    result = _parse(node, path)
    assert result.returncode == 0, result.stderr
    assert "valid AsyncAPI 3.0.0" in result.stdout


def test_the_parser_check_does_fail_on_a_broken_document(document: dict[str, Any], tmp_path: Path) -> None:
    node = _node()
    broken = json.loads(render(document))
    operation = broken["operations"][operation_id(BY_TYPE[enrollment_sync.TYPE])]
    operation["messages"] = [{"$ref": "#/channels/event-outcome/messages/event-outcome.v1"}]
    path = tmp_path / "broken.json"
    path.write_text(render(broken), encoding="utf-8")
    result = _parse(node, path)
    assert result.returncode == 1, result.stderr
    assert "asyncapi3-operation-messages-from-referred-channel" in result.stderr


# --- the command line ---------------------------------------------------------------------------------------------


def test_the_command_writes_the_document_to_a_file_or_stdout(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "asyncapi.json"
    written = derbridge("contracts", "asyncapi", "--out", str(out), cwd=tmp_path, timeout=120)
    assert written.returncode == 0, written.stderr
    expected = render(build_asyncapi(__version__))
    assert out.read_text(encoding="utf-8") == expected

    printed = derbridge("contracts", "asyncapi", cwd=tmp_path, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == expected
