"""The business clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from derbridge.infra import clock
from derbridge.infra.clock import SimulatedClock, SystemClock, use_clock


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


def test_use_clock_swaps_the_business_clock_and_gives_back_the_previous_one() -> None:
    simulated = SimulatedClock(datetime(2030, 1, 1, tzinfo=UTC))
    previous = use_clock(simulated)
    try:
        assert clock.now() == datetime(2030, 1, 1, tzinfo=UTC)
    finally:
        assert use_clock(previous) is simulated
    assert isinstance(previous, SystemClock)
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 5
