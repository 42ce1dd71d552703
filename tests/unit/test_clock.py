"""The business clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from derbridge.infra.clock import SimulatedClock, SystemClock


def test_the_simulated_clock_moves_only_forward_and_only_when_told() -> None:
    start = datetime(2027, 6, 1, 12, tzinfo=UTC)
    simulated = SimulatedClock(start)
    assert simulated.now() == start
    assert simulated.advance(timedelta(hours=2)) == start + timedelta(hours=2)
    with pytest.raises(ValueError, match="backwards"):
        simulated.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="backwards"):
        simulated.set(start)
    with pytest.raises(ValueError, match="aware"):
        SimulatedClock(datetime(2027, 6, 1))  # naive on purpose: refused


def test_the_system_clock_is_the_aware_wall_clock() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5
