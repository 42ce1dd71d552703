"""What a target's answer means for a message: delivered, retried, parked or dead (bridge/delivery.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from derbridge.bridge.delivery import Outcome, classify_error, classify_response
from derbridge.infra.problems import PROBLEM_BASE

MISSING = {"type": PROBLEM_BASE + "missing-prerequisite", "wake_on": "program:SUMMER", "detail": "no program"}


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"status": "applied"}, Outcome.DELIVERED),
        (201, {"status": "already-applied"}, Outcome.DELIVERED),
        (500, None, Outcome.RETRY),
        (503, {"detail": "starting"}, Outcome.RETRY),
        # The service credential disagrees (a rollover under way): the deployment's fault, not the message's.
        (401, {"detail": "bearer token refused"}, Outcome.RETRY),
        (408, None, Outcome.RETRY),
        (429, None, Outcome.RETRY),
        (409, MISSING, Outcome.PARK),
        (409, {"type": PROBLEM_BASE + "conflict", "detail": "refused"}, Outcome.DEAD),
        (403, {"detail": "forbidden"}, Outcome.DEAD),
        (413, None, Outcome.DEAD),
        (422, {"detail": "invalid payload"}, Outcome.DEAD),
    ],
)
def test_an_answer_means(status: int, body: dict[str, Any] | None, outcome: Outcome) -> None:
    response = httpx.Response(status, json=body) if body is not None else httpx.Response(status)
    result = classify_response(response)
    assert result.outcome is outcome
    assert result.status_code == status
    assert result.wake_on == ("program:SUMMER" if outcome is Outcome.PARK else None)


def test_no_answer_is_retried() -> None:
    assert classify_error(httpx.ConnectError("refused")).outcome is Outcome.RETRY
