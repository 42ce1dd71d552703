"""Routes: what the bridge checks and decides for a message before delivering it.

Every flow's route is the same today: the payload must match the contract its ``type`` names (a message
that does not is dead at once, with the validation errors — delivering it could only fail at the target),
and the target is the envelope's target system. Messages cross between our own two systems unchanged;
a utility that swaps one system for its own adds the transformation here, per flow.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import UnknownMessageType, contract_of
from derbridge.infra.problems import PROBLEM_BASE


class RouteError(Exception):
    """The message cannot be routed: it is dead-lettered with ``problem``."""

    def __init__(self, detail: str, problem: dict[str, Any]) -> None:
        super().__init__(detail)
        self.problem = problem


def route(envelope: Envelope) -> BaseModel:
    """Check ``envelope`` against its contract; returns its payload model, or raises RouteError."""
    try:
        contract = contract_of(envelope)
    except UnknownMessageType as error:
        raise RouteError(
            str(error),
            {"type": PROBLEM_BASE + "unknown-message-type", "title": "No route", "detail": str(error)},
        ) from None
    if contract.target is not envelope.target.system or contract.source is not envelope.source.system:
        detail = (
            f"{envelope.type} goes from {contract.source.value} to {contract.target.value}, "
            f"not from {envelope.source.system.value} to {envelope.target.system.value}"
        )
        raise RouteError(detail, {"type": PROBLEM_BASE + "wrong-route", "title": "No route", "detail": detail})
    try:
        return contract.payload.model_validate(envelope.payload)
    except ValidationError as error:
        errors = [
            {"field": "payload." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in error.errors()
        ]
        detail = f"the {envelope.type} payload does not match its contract"
        raise RouteError(
            detail,
            {"type": PROBLEM_BASE + "invalid-payload", "title": "Invalid payload", "detail": detail, "errors": errors},
        ) from None
