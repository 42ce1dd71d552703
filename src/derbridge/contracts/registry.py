"""Which payload model each message ``type`` carries, on which flow, from which system to which."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

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
from derbridge.contracts.common import Acknowledgement
from derbridge.contracts.envelope import Endpoint, Envelope, Flow, SystemName
from derbridge.infra.ids import new_id


@dataclass(frozen=True)
class MessageContract:
    """One message type."""

    type: str
    flow: Flow
    payload: builtins.type[BaseModel]
    source: SystemName
    target: SystemName
    summary: str
    announces: str | None = None
    """When a message of this type is delivered, the bridge wakes the messages parked until
    ``<announces>:<business_key>`` (a program sync delivered wakes the enrollment syncs parked for
    ``program:<code>``), or ``<announces>:<message_id>`` with ``announces_by="message_id"`` (an enrollment
    request delivered wakes the later requests for its devices, parked for ``enrollment-request:<id>``)."""
    announces_by: Literal["business_key", "message_id"] = "business_key"
    """Which envelope field completes the announced condition."""

    def announcement(self, envelope: Envelope) -> str | None:
        """The condition a delivered ``envelope`` of this type announces, if its type announces one."""
        if self.announces is None:
            return None
        key = envelope.message_id if self.announces_by == "message_id" else envelope.business_key
        return f"{self.announces}:{key}"


AH, DM = SystemName.ASSETHUB, SystemName.DERMS

CONTRACTS: tuple[MessageContract, ...] = (
    MessageContract(
        enrollment_request.TYPE,
        Flow.ENROLLMENT_REQUEST,
        enrollment_request.EnrollmentRequestBatch,
        DM,
        AH,
        "Enrollment requests from an aggregator, to be validated by Asset Hub.",
        # A request names the earlier requests for its devices; Asset Hub parks it until they are judged.
        announces="enrollment-request",
        announces_by="message_id",
    ),
    MessageContract(
        enrollment_request.RESPONSE_TYPE,
        Flow.ENROLLMENT_REQUEST,
        enrollment_request.EnrollmentResponseBatch,
        AH,
        DM,
        "Asset Hub's answer to each enrollment request.",
    ),
    MessageContract(
        device_status_check.TYPE,
        Flow.DEVICE_STATUS_CHECK,
        device_status_check.StatusCheckRequest,
        AH,
        DM,
        "A request for a device's latest communication status.",
    ),
    MessageContract(
        device_status_check.RESPONSE_TYPE,
        Flow.DEVICE_STATUS_CHECK,
        device_status_check.StatusCheckResponse,
        DM,
        AH,
        "The DERMS's answer to a status check.",
    ),
    MessageContract(
        enrollment_sync.TYPE,
        Flow.ENROLLMENT_SYNC,
        enrollment_sync.EnrollmentSync,
        AH,
        DM,
        "An enrollment became active, was unenrolled, or had its device replaced.",
    ),
    MessageContract(
        enrollment_sync.ACK_TYPE,
        Flow.ENROLLMENT_SYNC,
        Acknowledgement,
        DM,
        AH,
        "The DERMS applied (or ignored as stale) an enrollment sync.",
    ),
    MessageContract(
        device_score_transfer.TYPE,
        Flow.DEVICE_SCORE_TRANSFER,
        device_score_transfer.ScoreTransfer,
        AH,
        DM,
        "A score file's manifest and location (claim check).",
    ),
    MessageContract(
        device_score_transfer.ACK_TYPE,
        Flow.DEVICE_SCORE_TRANSFER,
        Acknowledgement,
        DM,
        AH,
        "The DERMS loaded (or rejected) a score file.",
    ),
    MessageContract(
        event_reservation.TYPE,
        Flow.EVENT_RESERVATION,
        event_reservation.EventReservation,
        DM,
        AH,
        "A program event and its reserved devices.",
    ),
    MessageContract(
        event_reservation.ACK_TYPE,
        Flow.EVENT_RESERVATION,
        Acknowledgement,
        AH,
        DM,
        "Asset Hub recorded an event's reservations.",
    ),
    MessageContract(
        event_cancellation.TYPE,
        Flow.EVENT_CANCELLATION,
        event_cancellation.EventCancellation,
        DM,
        AH,
        "A program event cancelled before its start.",
    ),
    MessageContract(
        event_cancellation.ACK_TYPE,
        Flow.EVENT_CANCELLATION,
        Acknowledgement,
        AH,
        DM,
        "Asset Hub released a cancelled event's participations.",
    ),
    MessageContract(
        event_outcome.TYPE,
        Flow.EVENT_OUTCOME,
        event_outcome.EventOutcomeBatch,
        DM,
        AH,
        "Per-device outcomes of an event.",
    ),
    MessageContract(
        event_outcome.ACK_TYPE, Flow.EVENT_OUTCOME, Acknowledgement, AH, DM, "Asset Hub recorded an outcome batch."
    ),
    MessageContract(
        program_sync.TYPE,
        Flow.PROGRAM_SYNC,
        program_sync.ProgramSync,
        AH,
        DM,
        "A program was created or changed in Asset Hub: the whole program at its new version.",
        announces="program",
    ),
    MessageContract(
        program_sync.ACK_TYPE,
        Flow.PROGRAM_SYNC,
        Acknowledgement,
        DM,
        AH,
        "The DERMS applied (or ignored as stale) a program's version.",
    ),
)

BY_TYPE: dict[str, MessageContract] = {c.type: c for c in CONTRACTS}


class UnknownMessageType(ValueError):
    """An envelope whose ``type`` no contract names."""


def contract_of(envelope: Envelope) -> MessageContract:
    """The contract of ``envelope``'s type, checking that its flow agrees."""
    contract = BY_TYPE.get(envelope.type)
    if contract is None:
        raise UnknownMessageType(f"no contract for message type {envelope.type!r}")
    if contract.flow is not envelope.flow:
        raise UnknownMessageType(f"{envelope.type} travels on {contract.flow.value}, not {envelope.flow.value}")
    return contract


def parse_payload(envelope: Envelope) -> BaseModel:
    """The envelope's payload as its contract's model (raises pydantic.ValidationError when it is not)."""
    return contract_of(envelope).payload.model_validate(envelope.payload)


def new_envelope(
    message_type: str,
    payload: BaseModel,
    *,
    business_key: str,
    occurred_at: datetime,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    sequence: int | None = None,
    source_instance: str = "default",
    target_instance: str = "default",
    message_id: str | None = None,
) -> Envelope:
    """An envelope for ``payload`` of ``message_type``, with flow, source and target from the contract.

    ``correlation_id`` defaults to the new message's own id (a message that starts a conversation);
    ``message_id`` to a new id (give one made with :func:`~derbridge.infra.ids.new_id` when the payload, or
    a row written with it, must name its own message).
    """
    contract = BY_TYPE[message_type]
    if not isinstance(payload, contract.payload):
        raise TypeError(f"{message_type} carries {contract.payload.__name__}, not {type(payload).__name__}")
    message_id = message_id or new_id()
    return Envelope(
        message_id=message_id,
        type=message_type,
        flow=contract.flow,
        correlation_id=correlation_id or message_id,
        causation_id=causation_id,
        source=Endpoint(system=contract.source, instance=source_instance),
        target=Endpoint(system=contract.target, instance=target_instance),
        business_key=business_key,
        sequence=sequence,
        occurred_at=occurred_at,
        payload=payload.model_dump(mode="json"),
    )
