"""Identifiers: UUIDv7 one at a time and in bulk (``new_ids``), in creation order."""

from __future__ import annotations

import uuid

import pytest

from derbridge.infra import ids
from derbridge.infra.ids import new_id, new_ids


def test_bulk_ids_are_uuid7_in_creation_order_between_single_ones() -> None:
    before = new_id()
    batch = new_ids(10_000)
    after = new_id()
    sequence = [before, *batch, after]
    assert sequence == sorted(sequence)
    assert len(set(sequence)) == len(sequence)
    for text in batch:
        value = uuid.UUID(text)
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert str(value) == text


def test_a_spent_millisecond_carries_into_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clock stands still: 5,000 ids need more than one millisecond's 4,096 counter values.
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_800_000_000_000 * 1_000_000)
    monkeypatch.setattr(ids, "_last_ms", 0)
    batch = new_ids(5_000)
    assert batch == sorted(batch)
    assert len(set(batch)) == 5_000
    milliseconds = {uuid.UUID(text).int >> 80 for text in batch}
    assert milliseconds == {1_800_000_000_000, 1_800_000_000_001}
    assert new_id() > batch[-1]


def test_no_ids() -> None:
    assert new_ids(0) == []
