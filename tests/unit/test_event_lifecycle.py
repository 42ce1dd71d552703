"""The program event lifecycle (flows.md F5, F6, F7): targets, windows, transitions, cancellation, closing."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from derbridge.derms.domain.event import (
    DEFAULT_CLOSING_GRACE,
    TERMINAL_STATUSES,
    CancellationRefusal,
    EventAlreadyStarted,
    EventLifecycleError,
    EventNotCancellable,
    EventStatus,
    EventTarget,
    EventType,
    EventWindow,
    IllegalEventTransition,
    can_transition,
    closing_due,
    plan_cancellation,
    require_transition,
    status_at,
    transitions_due,
    windows_overlap,
)

T0 = datetime(2027, 7, 1, 18, 0, tzinfo=UTC)
WINDOW = EventWindow(T0, T0 + timedelta(hours=4))
US = timedelta(microseconds=1)

S, A, C, X = EventStatus.SCHEDULED, EventStatus.ACTIVE, EventStatus.COMPLETED, EventStatus.CANCELLED
ALLOWED = {(S, A), (A, C), (S, X)}


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


# ---------------------------------------------------------------- types and targets


def test_event_types_and_statuses_are_the_contract_values() -> None:
    assert [t.value for t in EventType] == ["ECONOMIC", "EMERGENCY", "DEVICE_TEST"]
    assert [s.value for s in EventStatus] == ["SCHEDULED", "ACTIVE", "COMPLETED", "CANCELLED"]
    assert {C, X} == TERMINAL_STATUSES


def test_target_of_devices() -> None:
    target = EventTarget.devices(250)
    assert (target.device_count, target.kw) == (250, None)


def test_target_of_kilowatts_is_stored_as_float() -> None:
    target = EventTarget.kilowatts(500)
    assert target.device_count is None
    assert target.kw == 500.0
    assert isinstance(target.kw, float)


@pytest.mark.parametrize(
    ("device_count", "kw"),
    [(None, None), (10, 5.0)],
    ids=["neither", "both"],
)
def test_target_is_exactly_one_of_count_and_kw(device_count: int | None, kw: float | None) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        EventTarget(device_count=device_count, kw=kw)


@pytest.mark.parametrize("count", [0, -3])
def test_target_count_must_be_positive(count: int) -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        EventTarget.devices(count)


@pytest.mark.parametrize("kw", [0.0, -1.5, math.nan, math.inf])
def test_target_kw_must_be_finite_and_positive(kw: float) -> None:
    with pytest.raises(ValueError, match="finite amount greater than 0"):
        EventTarget.kilowatts(kw)


def test_target_refuses_bool_and_non_numbers() -> None:
    with pytest.raises(TypeError):
        EventTarget.devices(True)
    with pytest.raises(TypeError):
        EventTarget.devices(2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        EventTarget.kilowatts("5")  # type: ignore[arg-type]


# ---------------------------------------------------------------- windows


def test_window_duration() -> None:
    assert WINDOW.duration == timedelta(hours=4)
    assert WINDOW.closes_at() == at(4) + DEFAULT_CLOSING_GRACE
    assert timedelta(hours=24) == DEFAULT_CLOSING_GRACE


def test_window_accepts_any_aware_zone() -> None:
    eastern = timezone(timedelta(hours=-4))
    window = EventWindow(T0.astimezone(eastern), at(1))
    assert window.duration == timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "end"),
    [(T0.replace(tzinfo=None), at(1)), (T0, at(1).replace(tzinfo=None))],
    ids=["naive start", "naive end"],
)
def test_window_must_be_timezone_aware(start: datetime, end: datetime) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EventWindow(start, end)


@pytest.mark.parametrize("end", [T0, T0 - US], ids=["empty", "reversed"])
def test_window_must_end_after_it_starts(end: datetime) -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        EventWindow(T0, end)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (EventWindow(at(0), at(2)), EventWindow(at(2), at(3)), False),  # b starts as a ends
        (EventWindow(at(2), at(3)), EventWindow(at(0), at(2)), False),  # same, other order
        (EventWindow(at(0), at(2)), EventWindow(at(2) - US, at(3)), True),  # one microsecond shared
        (EventWindow(at(0), at(2)), EventWindow(at(3), at(4)), False),  # apart
        (EventWindow(at(0), at(4)), EventWindow(at(1), at(2)), True),  # b inside a
        (EventWindow(at(1), at(2)), EventWindow(at(0), at(4)), True),  # a inside b
        (EventWindow(at(0), at(2)), EventWindow(at(0), at(2)), True),  # identical
        (EventWindow(at(0), at(2)), EventWindow(at(0), at(1)), True),  # same start
        (EventWindow(at(0), at(2)), EventWindow(at(1), at(2)), True),  # same end
    ],
)
def test_windows_overlap_as_half_open_intervals(a: EventWindow, b: EventWindow, expected: bool) -> None:
    assert windows_overlap(a, b) is expected
    assert windows_overlap(b, a) is expected


# ---------------------------------------------------------------- transitions


@pytest.mark.parametrize(("current", "requested"), sorted(ALLOWED))
def test_allowed_transitions(current: EventStatus, requested: EventStatus) -> None:
    assert can_transition(current, requested)
    require_transition(current, requested)


REFUSED = [pair for pair in itertools.product(EventStatus, EventStatus) if pair not in ALLOWED]


def test_every_pair_is_either_allowed_or_refused() -> None:
    assert len(ALLOWED) + len(REFUSED) == 16
    assert len(REFUSED) == 13


@pytest.mark.parametrize(("current", "requested"), REFUSED)
def test_refused_transitions(current: EventStatus, requested: EventStatus) -> None:
    assert not can_transition(current, requested)
    with pytest.raises(IllegalEventTransition) as caught:
        require_transition(current, requested)
    assert (caught.value.current, caught.value.requested) == (current, requested)
    assert str(caught.value) == f"an event cannot go from {current.value} to {requested.value}"
    assert isinstance(caught.value, EventLifecycleError)


# ---------------------------------------------------------------- cancellation


def test_cancellation_one_microsecond_before_start_is_allowed() -> None:
    assert plan_cancellation(WINDOW, S, T0 - US) is X


def test_cancellation_long_before_start_is_allowed() -> None:
    assert plan_cancellation(WINDOW, S, T0 - timedelta(days=30)) is X


@pytest.mark.parametrize(
    "now", [T0, T0 + US, at(2), at(4), at(48)], ids=["at start", "1us after", "mid", "end", "long after"]
)
def test_cancellation_at_or_after_start_is_refused(now: datetime) -> None:
    with pytest.raises(EventAlreadyStarted) as caught:
        plan_cancellation(WINDOW, S, now)
    error = caught.value
    assert error.reason is CancellationRefusal.STARTED
    assert error.status is S
    assert error.start_at == T0
    assert str(error) == "the event started at 2027-07-01T18:00:00+00:00 and can no longer be cancelled"


def test_cancellation_of_an_active_event_is_refused_whatever_the_clock() -> None:
    with pytest.raises(EventAlreadyStarted) as caught:
        plan_cancellation(WINDOW, A, T0 - timedelta(hours=1))
    assert caught.value.status is A


def test_cancellation_of_a_cancelled_event_is_refused() -> None:
    with pytest.raises(EventNotCancellable) as caught:
        plan_cancellation(WINDOW, X, T0 - timedelta(hours=1))
    assert not isinstance(caught.value, EventAlreadyStarted)
    assert caught.value.reason is CancellationRefusal.ALREADY_CANCELLED
    assert str(caught.value) == "the event is already cancelled and cannot be cancelled again"


def test_cancellation_of_a_completed_event_is_refused() -> None:
    with pytest.raises(EventNotCancellable) as caught:
        plan_cancellation(WINDOW, C, at(30))
    assert not isinstance(caught.value, EventAlreadyStarted)
    assert caught.value.reason is CancellationRefusal.ALREADY_COMPLETED
    assert "started at 2027-07-01T18:00:00+00:00" in str(caught.value)
    assert "can no longer be cancelled" in str(caught.value)


def test_already_started_is_a_kind_of_not_cancellable() -> None:
    assert issubclass(EventAlreadyStarted, EventNotCancellable)
    assert issubclass(EventNotCancellable, EventLifecycleError)


def test_naive_clock_is_refused() -> None:
    naive = (T0 - timedelta(hours=1)).replace(tzinfo=None)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_cancellation(WINDOW, S, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        status_at(WINDOW, S, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        closing_due(WINDOW, naive)


# ---------------------------------------------------------------- the clock: status_at, closing


GRACE = timedelta(hours=24)
TIMELINE = [
    (T0 - timedelta(days=1), S, S),
    (T0 - US, S, S),
    (T0, S, A),
    (at(2), S, A),
    (at(4) - US, S, A),
    (at(4), S, A),  # the window is over, but the event is open for outcomes until end + grace
    (at(4) + GRACE - US, S, A),
    (at(4) + GRACE, S, C),
    (at(4) + GRACE + timedelta(days=365), S, C),
    (T0, A, A),
    (at(4) + GRACE - US, A, A),
    (at(4) + GRACE, A, C),
    (T0 - timedelta(hours=1), A, A),  # never backwards, even when asked about an earlier time
]


@pytest.mark.parametrize(("now", "current", "expected"), TIMELINE)
def test_status_at_over_a_timeline(now: datetime, current: EventStatus, expected: EventStatus) -> None:
    assert status_at(WINDOW, current, now, GRACE) is expected


@pytest.mark.parametrize("terminal", [C, X])
@pytest.mark.parametrize("now", [T0 - timedelta(days=1), T0, at(4), at(4) + GRACE, at(1000)])
def test_terminal_statuses_never_change(terminal: EventStatus, now: datetime) -> None:
    assert status_at(WINDOW, terminal, now, GRACE) is terminal
    assert transitions_due(WINDOW, terminal, now, GRACE) == ()


def test_a_scheduled_event_past_its_closing_goes_through_active() -> None:
    assert transitions_due(WINDOW, S, at(4) + GRACE, GRACE) == (A, C)
    assert transitions_due(WINDOW, S, at(1), GRACE) == (A,)
    assert transitions_due(WINDOW, A, at(4) + GRACE, GRACE) == (C,)
    assert transitions_due(WINDOW, S, T0 - US, GRACE) == ()
    assert transitions_due(WINDOW, A, at(1), GRACE) == ()


def test_status_at_defaults_to_a_24_hour_grace() -> None:
    assert status_at(WINDOW, A, at(27)) is A
    assert status_at(WINDOW, A, at(28)) is C


def test_zero_grace_closes_at_end() -> None:
    assert status_at(WINDOW, A, at(4) - US, timedelta(0)) is A
    assert status_at(WINDOW, A, at(4), timedelta(0)) is C


def test_closing_due_from_end_plus_grace_inclusive() -> None:
    assert not closing_due(WINDOW, at(4), GRACE)
    assert not closing_due(WINDOW, at(4) + GRACE - US, GRACE)
    assert closing_due(WINDOW, at(4) + GRACE, GRACE)
    assert closing_due(WINDOW, at(4) + GRACE + timedelta(days=2), GRACE)
    assert closing_due(WINDOW, at(28))


def test_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        status_at(WINDOW, A, at(5), timedelta(hours=-1))
    with pytest.raises(ValueError, match="must not be negative"):
        closing_due(WINDOW, at(5), timedelta(hours=-1))


# ---------------------------------------------------------------- stateful: the lifecycle under any sequence

_RANK = {S: 0, A: 1, C: 2, X: 2}
GRACES = [timedelta(0), timedelta(hours=1), DEFAULT_CLOSING_GRACE]


@dataclass
class _TrackedEvent:
    window: EventWindow
    grace: timedelta
    status: EventStatus = S
    history: list[tuple[EventStatus, datetime]] = field(default_factory=list)


class EventLifecycleMachine(RuleBasedStateMachine):
    """A few events, a clock that only moves forward, a scheduler, closings and cancellation attempts."""

    def __init__(self) -> None:
        super().__init__()
        self.now = T0 - timedelta(hours=1)
        self.events: list[_TrackedEvent] = []

    @initialize(
        specs=st.lists(
            st.tuples(st.integers(0, 600), st.integers(1, 480), st.sampled_from(GRACES)),
            min_size=1,
            max_size=4,
        )
    )
    def create_events(self, specs: list[tuple[int, int, timedelta]]) -> None:
        for start_minutes, duration_minutes, grace in specs:
            start = T0 + timedelta(minutes=start_minutes)
            self.events.append(_TrackedEvent(EventWindow(start, start + timedelta(minutes=duration_minutes)), grace))

    def _event(self, index: int) -> _TrackedEvent:
        return self.events[index % len(self.events)]

    def _move(self, event: _TrackedEvent, steps: tuple[EventStatus, ...]) -> None:
        for step in steps:
            assert can_transition(event.status, step), (event.status, step)
            event.status = step
            event.history.append((step, self.now))

    @rule(
        step=st.sampled_from([US, timedelta(minutes=1), timedelta(minutes=45), timedelta(hours=5), timedelta(hours=25)])
    )
    def advance_clock(self, step: timedelta) -> None:
        self.now += step

    def _boundary(self, index: int, boundary: int) -> datetime:
        # Random clock moves rarely land on an instant that matters; these are the ones that do.
        event = self._event(index)
        closes = event.window.closes_at(event.grace)
        instants = [event.window.start_at - US, event.window.start_at, event.window.end_at, closes - US, closes]
        return instants[boundary % len(instants)]

    @rule(index=st.integers(0, 3), boundary=st.integers(0, 4))
    def jump_to_a_boundary(self, index: int, boundary: int) -> None:
        self.now = max(self.now, self._boundary(index, boundary))  # the clock never goes back

    @rule(index=st.integers(0, 3), boundary=st.integers(0, 1))
    def cancel_on_the_eve_or_at_the_start(self, index: int, boundary: int) -> None:
        self.now = max(self.now, self._boundary(index, boundary))
        self.try_to_cancel(index)

    @rule()
    def run_scheduler(self) -> None:
        for event in self.events:
            before = event.status
            steps = transitions_due(event.window, event.status, self.now, event.grace)
            self._move(event, steps)
            assert event.status is status_at(event.window, before, self.now, event.grace)

    @rule(index=st.integers(0, 3))
    def close_if_due(self, index: int) -> None:
        event = self._event(index)
        if event.status in TERMINAL_STATUSES or not closing_due(event.window, self.now, event.grace):
            return
        steps = transitions_due(event.window, event.status, self.now, event.grace)
        assert steps[-1] is C
        self._move(event, steps)

    @rule(index=st.integers(0, 3))
    def try_to_cancel(self, index: int) -> None:
        event = self._event(index)
        before = event.status
        refused: EventNotCancellable | None = None
        try:
            new_status = plan_cancellation(event.window, event.status, self.now)
        except EventNotCancellable as error:
            refused = error
        if refused is None:
            assert before is S
            assert self.now < event.window.start_at
            self._move(event, (new_status,))
            return
        assert event.status is before  # a refusal changes nothing
        assert refused.status is before
        if isinstance(refused, EventAlreadyStarted):
            assert refused.reason is CancellationRefusal.STARTED
            assert before is A or (before is S and self.now >= event.window.start_at)
        else:
            assert before in TERMINAL_STATUSES

    @invariant()
    def terminal_states_never_change(self) -> None:
        for event in self.events:
            terminal = [status for status, _ in event.history if status in TERMINAL_STATUSES]
            assert len(terminal) <= 1
            if terminal:
                assert event.history[-1][0] is terminal[0]
                assert event.status is terminal[0]

    @invariant()
    def cancelled_only_before_start_completed_only_after_closing(self) -> None:
        for event in self.events:
            for status, reached_at in event.history:
                if status is X:
                    assert reached_at < event.window.start_at
                elif status is C:
                    assert reached_at >= event.window.closes_at(event.grace)
                elif status is A:
                    assert reached_at >= event.window.start_at

    @invariant()
    def status_never_goes_backwards(self) -> None:
        for event in self.events:
            ranks = [_RANK[S]] + [_RANK[status] for status, _ in event.history]
            assert ranks == sorted(ranks)
            assert len(set(ranks)) == len(ranks)  # and never repeats a status
            assert _RANK[status_at(event.window, event.status, self.now, event.grace)] >= _RANK[event.status]


EventLifecycleMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, database=None
)
TestEventLifecycle = pytest.mark.slow(EventLifecycleMachine.TestCase)  # 100 runs of 30 steps: make test, not test-fast
