"""How the bridge cuts a batch delivery into calls: at most 200 messages and 4 MiB of envelopes a call, so
that no call exceeds the target's body limit (a 413 would be final for every message of the call)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from derbridge.bridge import delivery
from derbridge.bridge.delivery import BATCH_CHUNK, _chunks
from derbridge.contracts import device_status_check as check
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope

AT = datetime(2027, 6, 2, 14, tzinfo=UTC)


def _check(n: int, requested_by: str = "agent") -> Envelope:
    payload = check.StatusCheckRequest(
        check_id=f"c{n}",
        reason=check.CheckReason.AGENT_TROUBLESHOOT,
        requested_by=requested_by,
        device=check.CheckedDevice(
            head_end_system="ECOBEE", nic_id=f"N{n}", device_type="THERMOSTAT", manufacturer="e", model="m"
        ),
    )
    return new_envelope(check.TYPE, payload, business_key=f"ECOBEE:N{n}", occurred_at=AT)


def test_small_messages_are_cut_by_count_in_order() -> None:
    envelopes = [_check(n) for n in range(450)]

    chunks = _chunks(envelopes)

    assert [len(c) for c in chunks] == [200, 200, 50]
    assert [e.message_id for c in chunks for e, _ in c] == [e.message_id for e in envelopes]
    assert BATCH_CHUNK == 200


def test_messages_are_cut_by_bytes_and_one_bigger_than_the_bound_goes_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    small = [_check(n) for n in range(7)]
    size = len(small[0].model_dump_json()) + 1  # each envelope and its comma
    assert all(len(e.model_dump_json()) + 1 == size for e in small)
    monkeypatch.setattr(delivery, "BATCH_BYTES", 2 * size + size // 2)  # two small ones a call

    chunks = delivery._chunks([*small[:3], _big(size), *small[3:]])

    assert [[e.business_key for e, _ in c] for c in chunks] == [
        ["ECOBEE:N0", "ECOBEE:N1"],
        ["ECOBEE:N2"],
        ["ECOBEE:BIG"],
        ["ECOBEE:N3", "ECOBEE:N4"],
        ["ECOBEE:N5", "ECOBEE:N6"],
    ]


def _big(size: int) -> Envelope:
    """An envelope bigger than three small ones (built without validation: only its size matters here)."""
    payload = check.StatusCheckRequest.model_construct(
        check_id="big",
        reason=check.CheckReason.AGENT_TROUBLESHOOT,
        requested_by="agent",
        device=check.CheckedDevice.model_construct(
            head_end_system="ECOBEE", nic_id="BIG", device_type="THERMOSTAT", manufacturer="e" * 3 * size, model="m"
        ),
    )
    return new_envelope(check.TYPE, payload, business_key="ECOBEE:BIG", occurred_at=AT)
