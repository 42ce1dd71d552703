"""The enrollment lifecycle (flows.md F1): allowed moves, device replacement, times, kept history."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from derbridge.assethub.domain.enrollment import (
    NON_TERMINAL_STATES,
    TERMINAL_STATES,
    DeviceRef,
    EnrollmentState,
    IllegalTransition,
    Transition,
    allowed_next,
    can_transition,
    is_terminal,
    plan_device_replacement,
    plan_transition,
    state_after,
)

S = EnrollmentState
T0 = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)
OLD = DeviceRef("ECOBEE", "NIC-1")
NEW = DeviceRef("ECOBEE", "NIC-2")

# Written out by hand from flows.md F1, not derived from the module under test.
ALLOWED: frozenset[tuple[EnrollmentState | None, EnrollmentState]] = frozenset(
    {
        (None, S.PENDING),
        (None, S.REJECTED),
        (S.PENDING, S.DEVICE_SETUP),
        (S.PENDING, S.REJECTED),
        (S.DEVICE_SETUP, S.ACTIVE),
        (S.DEVICE_SETUP, S.SETUP_FAILED),
        (S.ACTIVE, S.UNENROLLED),
    }
)
FROM_STATES: list[EnrollmentState | None] = [None, *EnrollmentState]
ALL_PAIRS = list(itertools.product(FROM_STATES, EnrollmentState))
NEEDS_REASON = {S.REJECTED, S.SETUP_FAILED}


def _reason_for(to: EnrollmentState) -> str | None:
    return "because the test says so" if to in NEEDS_REASON else None


def _name(state: EnrollmentState | None) -> str:
    return "(new)" if state is None else state.value


def test_states_are_exactly_the_six_of_f1() -> None:
    assert {s.value for s in EnrollmentState} == {
        "PENDING",
        "DEVICE_SETUP",
        "ACTIVE",
        "REJECTED",
        "SETUP_FAILED",
        "UNENROLLED",
    }


@pytest.mark.parametrize(("current", "to"), sorted(ALLOWED, key=str))
def test_every_allowed_transition_is_planned(current: EnrollmentState | None, to: EnrollmentState) -> None:
    reason = _reason_for(to)
    transition = plan_transition("E1", current, to, T0, reason)
    assert transition == Transition("E1", current, to, T0, reason)
    assert can_transition(current, to)
    assert to in allowed_next(current)
    assert not transition.is_device_replacement


@pytest.mark.parametrize(("current", "to"), [pair for pair in ALL_PAIRS if pair not in ALLOWED], ids=str)
def test_every_other_pair_is_refused(current: EnrollmentState | None, to: EnrollmentState) -> None:
    assert not can_transition(current, to)
    with pytest.raises(IllegalTransition) as caught:
        plan_transition("E1", current, to, T0, "some reason")
    message = str(caught.value)
    assert "'E1'" in message
    assert _name(current) in message
    assert to.value in message
    expected_allowed = {to_ for from_, to_ in ALLOWED if from_ == current}
    for allowed in expected_allowed:
        assert allowed.value in message
    if not expected_allowed:
        assert "terminal" in message
    assert caught.value.from_state == current
    assert caught.value.to_state == to
    assert caught.value.allowed == expected_allowed


@pytest.mark.parametrize(("current", "to"), ALL_PAIRS, ids=str)
def test_building_a_transition_directly_enforces_the_same_rules(
    current: EnrollmentState | None, to: EnrollmentState
) -> None:
    if (current, to) in ALLOWED:
        Transition("E1", current, to, T0, _reason_for(to))
    elif current is S.ACTIVE and to is S.ACTIVE:
        with pytest.raises(ValueError, match="device replacement"):
            Transition("E1", current, to, T0, None)
    else:
        with pytest.raises(IllegalTransition):
            Transition("E1", current, to, T0, _reason_for(to))


def test_allowed_next_and_terminal_states() -> None:
    assert allowed_next(None) == {S.PENDING, S.REJECTED}
    assert allowed_next(S.PENDING) == {S.DEVICE_SETUP, S.REJECTED}
    assert allowed_next(S.DEVICE_SETUP) == {S.ACTIVE, S.SETUP_FAILED}
    assert allowed_next(S.ACTIVE) == {S.UNENROLLED}
    for terminal in (S.REJECTED, S.SETUP_FAILED, S.UNENROLLED):
        assert allowed_next(terminal) == frozenset()
        assert is_terminal(terminal)
    for live in (S.PENDING, S.DEVICE_SETUP, S.ACTIVE):
        assert not is_terminal(live)
    assert {S.REJECTED, S.SETUP_FAILED, S.UNENROLLED} == TERMINAL_STATES
    assert {S.PENDING, S.DEVICE_SETUP, S.ACTIVE} == NON_TERMINAL_STATES


@pytest.mark.parametrize(
    ("current", "to"), [(None, S.REJECTED), (S.PENDING, S.REJECTED), (S.DEVICE_SETUP, S.SETUP_FAILED)]
)
def test_rejection_and_setup_failure_must_say_why(current: EnrollmentState | None, to: EnrollmentState) -> None:
    with pytest.raises(ValueError, match="must say why"):
        plan_transition("E1", current, to, T0, None)


def test_a_blank_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="non-blank"):
        plan_transition("E1", None, S.PENDING, T0, "   ")


def test_a_blank_enrollment_id_is_refused() -> None:
    with pytest.raises(ValueError, match="enrollment_id"):
        plan_transition(" ", None, S.PENDING, T0)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2027, 6, 1, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        plan_transition("E1", None, S.PENDING, naive)
    with pytest.raises(ValueError, match="naive"):
        plan_device_replacement("E1", S.ACTIVE, OLD, NEW, naive)
    with pytest.raises(ValueError, match="naive"):
        Transition("E1", None, S.PENDING, naive)
    with pytest.raises(ValueError, match="naive"):
        plan_transition("E1", S.PENDING, S.DEVICE_SETUP, T0, last_at=naive)


def test_non_utc_offsets_are_refused() -> None:
    eastern = datetime(2027, 6, 1, 8, 0, tzinfo=timezone(timedelta(hours=-4)))
    with pytest.raises(ValueError, match="UTC"):
        plan_transition("E1", None, S.PENDING, eastern)


def test_times_never_go_backwards() -> None:
    with pytest.raises(ValueError, match="back in time"):
        plan_transition("E1", S.PENDING, S.DEVICE_SETUP, T0, last_at=T0 + timedelta(seconds=1))
    with pytest.raises(ValueError, match="back in time"):
        plan_device_replacement("E1", S.ACTIVE, OLD, NEW, T0, last_at=T0 + timedelta(seconds=1))
    # The same instant is fine: a service may create and start setting up in one go.
    assert plan_transition("E1", S.PENDING, S.DEVICE_SETUP, T0, last_at=T0).at == T0


def test_device_replacement_in_active_is_kept_as_active_to_active() -> None:
    transition = plan_device_replacement("E1", S.ACTIVE, OLD, NEW, T0)
    assert transition.from_state is S.ACTIVE
    assert transition.to_state is S.ACTIVE
    assert transition.at == T0
    assert transition.old_device == OLD
    assert transition.new_device == NEW
    assert transition.is_device_replacement
    assert transition.reason == "DEVICE_REPLACED: ECOBEE:NIC-1 → ECOBEE:NIC-2"


def test_device_replacement_to_another_head_end_is_a_different_device() -> None:
    other = DeviceRef("NEST", "NIC-1")
    assert plan_device_replacement("E1", S.ACTIVE, OLD, other, T0).new_device == other


@pytest.mark.parametrize("current", [state for state in FROM_STATES if state is not S.ACTIVE], ids=str)
def test_device_replacement_is_refused_outside_active(current: EnrollmentState | None) -> None:
    with pytest.raises(IllegalTransition, match="only while ACTIVE") as caught:
        plan_device_replacement("E1", current, OLD, NEW, T0)
    assert caught.value.device_replacement
    assert _name(current) in str(caught.value)


def test_device_replacement_needs_a_different_device() -> None:
    with pytest.raises(ValueError, match="different device"):
        plan_device_replacement("E1", S.ACTIVE, OLD, DeviceRef("ECOBEE", "NIC-1"), T0)


def test_device_replacement_needs_device_ids() -> None:
    with pytest.raises(ValueError, match="new_device"):
        plan_device_replacement("E1", S.ACTIVE, OLD, DeviceRef("ECOBEE", " "), T0)


def test_devices_belong_only_on_a_replacement() -> None:
    with pytest.raises(ValueError, match="only on a device replacement"):
        Transition("E1", S.ACTIVE, S.UNENROLLED, T0, None, old_device=OLD)
    with pytest.raises(ValueError, match="different device"):
        Transition("E1", S.ACTIVE, S.ACTIVE, T0, "swap", old_device=OLD, new_device=OLD)


def test_device_ref_key_is_the_business_key() -> None:
    assert DeviceRef("ECOBEE", "NIC-1").key == "ECOBEE:NIC-1"


def _full_history() -> list[Transition]:
    return [
        plan_transition("E1", None, S.PENDING, T0),
        plan_transition("E1", S.PENDING, S.DEVICE_SETUP, T0 + timedelta(minutes=1)),
        plan_transition("E1", S.DEVICE_SETUP, S.ACTIVE, T0 + timedelta(minutes=2)),
        plan_device_replacement("E1", S.ACTIVE, OLD, NEW, T0 + timedelta(days=30)),
        plan_device_replacement("E1", S.ACTIVE, NEW, OLD, T0 + timedelta(days=31)),
        plan_transition("E1", S.ACTIVE, S.UNENROLLED, T0 + timedelta(days=60), "customer moved"),
    ]


def test_state_after_replays_a_coherent_history() -> None:
    assert state_after([]) is None
    history = _full_history()
    assert state_after(history) is S.UNENROLLED
    assert state_after(history[:4]) is S.ACTIVE


def test_state_after_refuses_a_gap() -> None:
    history = _full_history()
    del history[1]
    with pytest.raises(ValueError, match=r"step 1 .* starts from DEVICE_SETUP, but the enrollment was PENDING"):
        state_after(history)


def test_state_after_refuses_time_going_backwards() -> None:
    history = _full_history()
    history[2] = Transition("E1", S.DEVICE_SETUP, S.ACTIVE, T0)
    with pytest.raises(ValueError, match=r"step 2 .* earlier"):
        state_after(history)


def test_state_after_refuses_another_enrollment() -> None:
    history = _full_history()
    history[1] = Transition("E2", S.PENDING, S.DEVICE_SETUP, T0 + timedelta(minutes=1))
    with pytest.raises(ValueError, match="step 1 belongs to enrollment 'E2'"):
        state_after(history)


def test_state_after_refuses_a_broken_replacement_chain() -> None:
    history = _full_history()
    history[4] = plan_device_replacement("E1", S.ACTIVE, DeviceRef("NEST", "X"), OLD, T0 + timedelta(days=31))
    with pytest.raises(ValueError, match=r"step 4 .* but the enrolled device was"):
        state_after(history)


ENROLLMENT_IDS = ("E1", "E2", "E3")
HAPPY_PATH: dict[EnrollmentState | None, EnrollmentState] = {
    None: S.PENDING,
    S.PENDING: S.DEVICE_SETUP,
    S.DEVICE_SETUP: S.ACTIVE,
}
HAPPY_PICKS = 4
"""Out of the six values of ``pick``, how many take the happy path (or a replacement, when ACTIVE)."""
REASONS = st.sampled_from([None, "customer request", "device offline for 72 h"])


@settings(max_examples=100, stateful_step_count=50, deadline=None)
class EnrollmentMachine(RuleBasedStateMachine):
    """Random moves and replacements on a few enrollments; the kept logs must stay coherent."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = T0
        self.logs: dict[str, list[Transition]] = {eid: [] for eid in ENROLLMENT_IDS}
        self.devices: dict[str, DeviceRef] = {}
        self.terminal: dict[str, EnrollmentState] = {}
        self.next_nic = 0

    def _state(self, eid: str) -> EnrollmentState | None:
        log = self.logs[eid]
        return log[-1].to_state if log else None

    def _last_at(self, eid: str) -> datetime | None:
        log = self.logs[eid]
        return log[-1].at if log else None

    def _record(self, eid: str, transition: Transition) -> None:
        self.logs[eid].append(transition)
        if is_terminal(transition.to_state):
            # setdefault: if a terminal state were ever left, the invariant below sees the first one.
            self.terminal.setdefault(eid, transition.to_state)

    def _fresh_device(self, head_end: str) -> DeviceRef:
        self.next_nic += 1
        return DeviceRef(head_end, f"NIC-{self.next_nic}")

    @rule(seconds=st.integers(min_value=0, max_value=86_400))
    def tick(self, seconds: int) -> None:
        self.clock += timedelta(seconds=seconds)

    @rule(eid=st.sampled_from(ENROLLMENT_IDS), to=st.sampled_from(EnrollmentState), reason=REASONS)
    def move(self, eid: str, to: EnrollmentState, reason: str | None) -> None:
        """Any target, legal or not: the expected outcome comes from the hand-written table."""
        current, last_at = self._state(eid), self._last_at(eid)
        if (current, to) not in ALLOWED:
            with pytest.raises(IllegalTransition):
                plan_transition(eid, current, to, self.clock, reason, last_at=last_at)
            return
        if to in NEEDS_REASON and reason is None:
            with pytest.raises(ValueError, match="must say why"):
                plan_transition(eid, current, to, self.clock, reason, last_at=last_at)
            return
        transition = plan_transition(eid, current, to, self.clock, reason, last_at=last_at)
        if current is None:
            self.devices[eid] = self._fresh_device("ECOBEE")
        self._record(eid, transition)

    @rule(eid=st.sampled_from(ENROLLMENT_IDS), pick=st.integers(min_value=0, max_value=5))
    def advance(self, eid: str, pick: int) -> None:
        """A legal move, chosen from the hand-written table and biased toward the happy path, so that runs
        get deep into the lifecycle (random targets alone rarely reach ACTIVE)."""
        current = self._state(eid)
        options = sorted(to for from_, to in ALLOWED if from_ == current)
        if not options:
            with pytest.raises(IllegalTransition, match="terminal"):
                plan_transition(eid, current, S.PENDING, self.clock, last_at=self._last_at(eid))
            return
        last_at = self._last_at(eid)
        if current is S.ACTIVE and pick < HAPPY_PICKS:
            # Stay ACTIVE most of the time so that replacements pile up before the unenrollment.
            new = self._fresh_device("NEST")
            self._record(
                eid,
                plan_device_replacement(eid, current, self.devices[eid], new, self.clock, last_at=last_at),
            )
            self.devices[eid] = new
            return
        to = HAPPY_PATH[current] if pick < HAPPY_PICKS and current in HAPPY_PATH else options[pick % len(options)]
        transition = plan_transition(eid, current, to, self.clock, _reason_for(to), last_at=last_at)
        if current is None:
            self.devices[eid] = self._fresh_device("ECOBEE")
        self._record(eid, transition)

    @rule(eid=st.sampled_from(ENROLLMENT_IDS), same=st.booleans(), head_end=st.sampled_from(["ECOBEE", "NEST"]))
    def replace_device(self, eid: str, same: bool, head_end: str) -> None:
        """A replacement in whatever state the enrollment is, sometimes with the same device."""
        current, last_at = self._state(eid), self._last_at(eid)
        old = self.devices.get(eid, DeviceRef("ECOBEE", "NIC-0"))
        new = old if same else self._fresh_device(head_end)
        if current is not S.ACTIVE:
            with pytest.raises(IllegalTransition, match="only while ACTIVE"):
                plan_device_replacement(eid, current, old, new, self.clock, last_at=last_at)
            return
        if same:
            with pytest.raises(ValueError, match="different device"):
                plan_device_replacement(eid, current, old, new, self.clock, last_at=last_at)
            return
        transition = plan_device_replacement(eid, current, old, new, self.clock, last_at=last_at)
        assert transition.old_device == old
        self.devices[eid] = new
        self._record(eid, transition)

    @rule(eid=st.sampled_from(ENROLLMENT_IDS), back=st.integers(min_value=1, max_value=3_600))
    def move_back_in_time(self, eid: str, back: int) -> None:
        current, last_at = self._state(eid), self._last_at(eid)
        if last_at is None or not allowed_next(current):
            return
        to = min(allowed_next(current))
        with pytest.raises(ValueError, match="back in time"):
            plan_transition(eid, current, to, last_at - timedelta(seconds=back), "late", last_at=last_at)

    @invariant()
    def logs_are_continuous_and_ordered(self) -> None:
        for eid, log in self.logs.items():
            previous_to: EnrollmentState | None = None
            previous_at: datetime | None = None
            for index, transition in enumerate(log):
                assert transition.enrollment_id == eid
                assert isinstance(transition.to_state, EnrollmentState)
                assert transition.to_state in set(EnrollmentState)
                assert transition.from_state == previous_to
                assert previous_at is None or transition.at >= previous_at
                assert transition.at.utcoffset() == timedelta(0)
                if index < len(log) - 1:
                    assert not is_terminal(transition.to_state)
                previous_to, previous_at = transition.to_state, transition.at
            assert state_after(log) == self._state(eid)

    @invariant()
    def terminal_states_never_change(self) -> None:
        for eid, terminal in self.terminal.items():
            assert self._state(eid) is terminal


TestEnrollmentMachine = pytest.mark.slow(EnrollmentMachine.TestCase)  # 100 runs of 50 steps: make test, not test-fast
