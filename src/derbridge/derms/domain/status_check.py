"""F2 · the DERMS's answer to a status check, from the communication status it stores (pure).

A stored ONLINE or OFFLINE status → SUCCESS with that status, its ``last_communication_at`` and the
head-end that reported it (``source``); a stored UNKNOWN status → FAILURE / UNKNOWN (the head-end itself
does not know); nothing stored → FAILURE / UNKNOWN, saying whether the DERMS knows the device at all.
Freshness is not judged here: Asset Hub applies its program's freshness window to ``last_communication_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from derbridge.contracts import device_status_check as contract


def status_answer(
    check_id: str, stored: Mapping[str, Any] | None, *, device_known: bool
) -> contract.StatusCheckResponse:
    """The answer to check ``check_id`` given the stored communication status (None: nothing stored)."""
    if stored is None:
        detail = (
            "the DERMS knows the device but no head-end has reported its communication status yet"
            if device_known
            else "the DERMS does not know this device and no head-end has reported about it"
        )
        return contract.StatusCheckResponse(
            check_id=check_id,
            result=contract.CheckResult.FAILURE,
            communication_status=contract.CommunicationStatus.UNKNOWN,
            detail=detail,
        )
    status = contract.CommunicationStatus(stored["communication_status"])
    known = status is not contract.CommunicationStatus.UNKNOWN
    return contract.StatusCheckResponse(
        check_id=check_id,
        result=contract.CheckResult.SUCCESS if known else contract.CheckResult.FAILURE,
        communication_status=status,
        last_communication_at=stored["last_communication_at"],
        source=stored["source"],
        detail=None if known else "the head-end reports the device's status as UNKNOWN",
    )
