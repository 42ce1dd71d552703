"""The score and eligibility model v1 (shared/design/scoring.md), checked against numbers worked out by hand
from the formulas, and against a plain per-device reference implementation on random inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derbridge.assethub.domain.program import OutcomeValues, ProgramRules
from derbridge.assethub.domain.scoring import (
    OUTCOME_CLASSES,
    REASONS,
    SCORING_MODEL_VERSION,
    EventClass,
    IneligibilityReason,
    ScoringInput,
    ScoringResult,
    as_datetime64,
    classify_events,
    reason_code,
    score_devices,
)

NOW = datetime(2027, 6, 1, 12, tzinfo=UTC)
SP = EventClass.SUCCESSFUL_PARTICIPATION
IO = EventClass.IN_FLIGHT_OVERRIDE
OO = EventClass.PREEMPTIVE_OPT_OUT
ER = EventClass.ERROR
NR = EventClass.NON_RESPONSIVE
CA = EventClass.CANCELLED
PE = EventClass.PENDING
DEFAULT = ProgramRules()


@dataclass
class Device:
    """One row to score. ``history`` is newest first; without ``days_ago`` the events lie 10, 20, 30 …
    days back (outside the 7-day fatigue window)."""

    history: Sequence[EventClass] = ()
    days_ago: Sequence[float] | None = None
    seen_hours_ago: float | None = 2.0
    program: int = 0
    enrollment_active: bool = True
    program_active: bool = True


def inputs(devices: Sequence[Device]) -> ScoringInput:
    now = as_datetime64(NOW)
    rows, classes, times = [], [], []
    for row, device in enumerate(devices):
        ages = device.days_ago if device.days_ago is not None else [10.0 * (i + 1) for i in range(len(device.history))]
        assert len(ages) == len(device.history)
        for event_class, age in zip(device.history, ages, strict=True):
            rows.append(row)
            classes.append(int(event_class))
            times.append(now - np.timedelta64(round(age * 86_400_000_000), "us"))
    seen = [
        np.datetime64("NaT", "us")
        if d.seen_hours_ago is None
        else now - np.timedelta64(round(d.seen_hours_ago * 3_600_000_000), "us")
        for d in devices
    ]
    return ScoringInput(
        program_index=np.array([d.program for d in devices], dtype=np.intp),
        enrollment_active=np.array([d.enrollment_active for d in devices], dtype=np.bool_),
        program_active=np.array([d.program_active for d in devices], dtype=np.bool_),
        last_communication_at=np.array(seen, dtype="datetime64[us]"),
        history_row=np.array(rows, dtype=np.intp),
        history_class=np.array(classes, dtype=np.int8),
        history_event_at=np.array(times, dtype="datetime64[us]"),
    )


def score(devices: Sequence[Device], rules: Sequence[ProgramRules] = (DEFAULT,)) -> ScoringResult:
    return score_devices(inputs(devices), rules, NOW)


def one(device: Device, rules: ProgramRules = DEFAULT) -> tuple[float, IneligibilityReason | None, ScoringResult]:
    result = score([device], [rules])
    return float(result.score[0]), result.reason_of(0), result


# ---------------------------------------------------------------- hand-computed examples


def test_version() -> None:
    assert SCORING_MODEL_VERSION == "v1"


def test_two_successes_then_an_override_seen_recently() -> None:
    # History [SP, SP, IO] newest first; weights 0.5^(i/5): 1, 0.870550563, 0.757858283.
    # Σw·v = 1 + 0.870550563 + 0.3 · 0.757858283 = 2.097908048;  Σw = 2.628408846
    # r = (2 · 0.7 + 2.097908048) / (2 + 2.628408846) = 3.497908048 / 4.628408846 = 0.755747421
    # c = 1 (seen 2 h ago), f = 0 (events 10+ days ago)
    # score = 100 · (0.75 · 0.755747421 + 0.25 · 1) · 1 = 81.681 → 81.7
    value, reason, result = one(Device([SP, SP, IO]))
    assert result.reliability[0] == pytest.approx(0.755747421, abs=1e-9)
    assert result.connectivity[0] == 1.0
    assert result.fatigue[0] == 0.0
    assert value == 81.7
    assert reason is None
    assert bool(result.eligible[0])


def test_error_then_non_responsive() -> None:
    # [ER, NR]: Σw·v = 1 · 0.5 + 0.870550563 · 0 = 0.5;  Σw = 1.870550563
    # r = (1.4 + 0.5) / (2 + 1.870550563) = 1.9 / 3.870550563 = 0.490886237
    # score = 100 · (0.75 · 0.490886237 + 0.25) = 61.816 → 61.8
    value, reason, result = one(Device([ER, NR]))
    assert result.reliability[0] == pytest.approx(0.490886237, abs=1e-9)
    assert value == 61.8
    assert reason is None


def test_no_history_half_connected_two_calls_this_week() -> None:
    # No outcome yet: r = prior 0.7. Seen 96 h ago: c = (168 - 96) / (168 - 24) = 0.5.
    # Two events called 1 and 3 days ago, outcomes not in yet (PENDING): f = 2 · 0.1 = 0.2.
    # score = 100 · (0.75 · 0.7 + 0.25 · 0.5) · (1 - 0.2) = 65 · 0.8 = 52.0
    value, reason, result = one(Device([PE, PE], days_ago=[1, 3], seen_hours_ago=96))
    assert result.reliability[0] == pytest.approx(0.7)
    assert result.connectivity[0] == pytest.approx(0.5)
    assert result.fatigue[0] == pytest.approx(0.2)
    assert value == 52.0
    assert reason is None


def test_fatigue_is_capped() -> None:
    # Seven calls in the window: 0.7, capped at 0.5. score = 100 · (0.525 + 0.125) · 0.5 = 32.5
    value, _, result = one(Device([PE] * 7, days_ago=[0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5], seen_hours_ago=96))
    assert result.fatigue[0] == pytest.approx(0.5)
    assert value == 32.5


def test_fatigue_counts_only_calls_inside_the_window_and_already_started() -> None:
    # Calls 6.9 days ago and now count; 7 days ago exactly, 8 days ago, and tomorrow's event do not.
    _, _, result = one(Device([PE, PE, SP, SP, SP], days_ago=[-1, 0, 6.9, 7, 8]))
    assert result.fatigue[0] == pytest.approx(0.2)


def test_preemptive_opt_out_value() -> None:
    # [opt-out]: r = (1.4 + 0.2) / (2 + 1) = 0.533333; score = 100 · (0.4 + 0.25) = 65.0
    value, reason, result = one(Device([OO], seen_hours_ago=1))
    assert result.reliability[0] == pytest.approx(1.6 / 3)
    assert value == 65.0
    assert reason is None


def test_cancelled_events_are_not_counted_anywhere() -> None:
    # [CANCELLED 2 days ago, SP 10 days ago]: the SP is the newest counted event (weight 1).
    # r = (1.4 + 1) / 3 = 0.8; no fatigue from the cancelled call; score = 100 · (0.6 + 0.25) = 85.0
    value, _, result = one(Device([CA, SP], days_ago=[2, 10], seen_hours_ago=1))
    assert result.reliability[0] == pytest.approx(0.8)
    assert result.fatigue[0] == 0.0
    assert value == 85.0


def test_pending_outcomes_do_not_shift_the_ranks() -> None:
    with_pending = one(Device([PE, SP, IO], days_ago=[1, 10, 20]))[2]
    without = one(Device([SP, IO], days_ago=[10, 20]))[2]
    assert with_pending.reliability[0] == without.reliability[0]


@pytest.mark.parametrize(
    ("hours", "expected"),
    [(-5, 1.0), (0, 1.0), (24, 1.0), (60, 0.75), (96, 0.5), (132, 0.25), (168, 0.0), (500, 0.0)],
)
def test_connectivity_falls_linearly_from_one_day_to_seven(hours: float, expected: float) -> None:
    assert one(Device(seen_hours_ago=hours))[2].connectivity[0] == pytest.approx(expected)


def test_never_seen_device_has_no_connectivity_and_is_offline() -> None:
    # c = 0: score = 100 · 0.75 · 0.7 = 52.5
    value, reason, result = one(Device(seen_hours_ago=None))
    assert result.connectivity[0] == 0.0
    assert value == 52.5
    assert reason is IneligibilityReason.DEVICE_OFFLINE
    assert not result.eligible[0]


def test_score_has_one_decimal() -> None:
    rng = np.random.default_rng(3)
    devices = [
        Device([EventClass(int(c)) for c in rng.integers(1, 6, 4)], seen_hours_ago=float(rng.uniform(0, 200)))
        for _ in range(200)
    ]
    tenths = score(devices).score * 10
    assert np.array_equal(tenths, np.round(tenths))
    assert ((tenths >= 0) & (tenths <= 1000)).all()


# ---------------------------------------------------------------- eligibility


def test_offline_means_more_than_seven_days() -> None:
    assert one(Device(seen_hours_ago=168))[1] is None
    assert one(Device(seen_hours_ago=168 + 1 / 3600))[1] is IneligibilityReason.DEVICE_OFFLINE


@pytest.mark.parametrize(
    ("history", "reason"),
    [
        ([IO, SP, OO, SP, IO], IneligibilityReason.CHRONIC_OPT_OUT),  # 3 of the last 5
        ([OO, OO, OO], IneligibilityReason.CHRONIC_OPT_OUT),  # 3 of 3 is 3 of its last 5
        ([SP, IO, SP, OO, SP, IO], None),  # only 2 of the last 5; the third is older
        ([IO, CA, SP, OO, SP, IO], IneligibilityReason.CHRONIC_OPT_OUT),  # cancelled is not an event
        ([NR, NR, NR], IneligibilityReason.NON_RESPONSIVE_STREAK),
        ([NR, NR, NR, SP, SP], IneligibilityReason.NON_RESPONSIVE_STREAK),
        ([NR, NR], None),  # a streak of 3 needs 3 events
        ([NR, NR, SP, NR], None),
        ([NR, CA, NR, NR], IneligibilityReason.NON_RESPONSIVE_STREAK),
        ([OO, NR, NR], None),  # an opt-out is counted as an opt-out, not as non-responsive
        ([ER, ER, ER, ER, ER], None),
    ],
)
def test_history_reasons(history: list[EventClass], reason: IneligibilityReason | None) -> None:
    assert one(Device(history))[1] is reason


def test_each_reason_in_order_of_precedence() -> None:
    # Every device below fails every check from its own onwards; the first one is reported.
    chronic_and_streak = ProgramRules(chronic_opt_out_count=1, chronic_opt_out_window=5)
    history = [NR, NR, NR, IO]
    devices = [
        Device(history, seen_hours_ago=None, enrollment_active=False, program_active=False),
        Device(history, seen_hours_ago=None, program_active=False),
        Device(history, seen_hours_ago=None),
        Device(history),
        Device([NR, NR, NR]),
        Device([SP]),
    ]
    result = score(devices, [chronic_and_streak])
    assert [result.reason_of(i) for i in range(len(devices))] == [
        IneligibilityReason.ENROLLMENT_NOT_ACTIVE,
        IneligibilityReason.PROGRAM_NOT_ACTIVE,
        IneligibilityReason.DEVICE_OFFLINE,
        IneligibilityReason.CHRONIC_OPT_OUT,
        IneligibilityReason.NON_RESPONSIVE_STREAK,
        None,
    ]
    assert result.eligible.tolist() == [False, False, False, False, False, True]
    assert [int(c) for c in result.reason] == [
        reason_code(IneligibilityReason.ENROLLMENT_NOT_ACTIVE),
        2,
        3,
        4,
        5,
        0,
    ]


def test_ineligible_devices_keep_their_score_and_components() -> None:
    _, reason, result = one(Device([SP, SP, IO], program_active=False))
    assert reason is IneligibilityReason.PROGRAM_NOT_ACTIVE
    assert float(result.score[0]) == 81.7


def test_customer_unavailable_keeps_its_place_but_is_never_reported() -> None:
    assert REASONS[-1] is IneligibilityReason.CUSTOMER_UNAVAILABLE
    assert list(REASONS) == [
        IneligibilityReason.ENROLLMENT_NOT_ACTIVE,
        IneligibilityReason.PROGRAM_NOT_ACTIVE,
        IneligibilityReason.DEVICE_OFFLINE,
        IneligibilityReason.CHRONIC_OPT_OUT,
        IneligibilityReason.NON_RESPONSIVE_STREAK,
        IneligibilityReason.CUSTOMER_UNAVAILABLE,
    ]
    rng = np.random.default_rng(5)
    devices = [Device([EventClass(int(c)) for c in rng.integers(0, 7, 6)]) for _ in range(300)]
    assert reason_code(IneligibilityReason.CUSTOMER_UNAVAILABLE) not in score(devices).reason


# ---------------------------------------------------------------- per-program constants


def test_constants_of_each_program_apply_to_its_rows_only() -> None:
    # Program 1: half-life 1, prior 0.5 with weight 1, an override worth 0.
    # [SP, SP, IO]: weights 1, 0.5, 0.25; Σw·v = 1 + 0.5 + 0 = 1.5; r = (0.5 + 1.5) / (1 + 1.75) = 0.727273
    # score = 100 · (0.75 · 0.727273 + 0.25) = 79.545 → 79.5
    other = ProgramRules(
        reliability_half_life_events=1,
        reliability_prior=0.5,
        reliability_prior_weight=1,
        outcome_values=OutcomeValues(in_flight_override=0.0),
    )
    result = score([Device([SP, SP, IO], program=0), Device([SP, SP, IO], program=1)], [DEFAULT, other])
    assert result.reliability[1] == pytest.approx(2.0 / 2.75)
    assert result.score.tolist() == [81.7, 79.5]


def test_connectivity_fatigue_and_weights_per_program() -> None:
    rules = ProgramRules(
        connectivity_full_hours=1,
        connectivity_zero_hours=11,
        fatigue_per_event=0.25,
        fatigue_window_days=2,
        fatigue_cap=0.4,
        reliability_weight=0.5,
        connectivity_weight=0.5,
    )
    # c = (11 - 6) / (11 - 1) = 0.5; one call inside 2 days: f = 0.25; r = prior 0.7 (no outcome yet)
    # score = 100 · (0.5 · 0.7 + 0.5 · 0.5) · 0.75 = 45.0
    value, reason, result = one(Device([PE, PE], days_ago=[1, 3], seen_hours_ago=6), rules)
    assert result.connectivity[0] == pytest.approx(0.5)
    assert result.fatigue[0] == pytest.approx(0.25)
    assert value == 45.0
    assert reason is None


def test_eligibility_constants_per_program() -> None:
    strict = ProgramRules(offline_after_hours=12, non_responsive_streak=2, chronic_opt_out_count=2)
    assert one(Device(seen_hours_ago=13), strict)[1] is IneligibilityReason.DEVICE_OFFLINE
    assert one(Device([NR, NR]), strict)[1] is IneligibilityReason.NON_RESPONSIVE_STREAK
    assert one(Device([IO, SP, IO]), strict)[1] is IneligibilityReason.CHRONIC_OPT_OUT
    assert one(Device([IO, SP, IO]))[1] is None


def test_weights_above_one_are_capped_at_one_hundred() -> None:
    value, _, _ = one(Device([SP]), ProgramRules(reliability_weight=1, connectivity_weight=1))
    assert value == 100.0


def test_no_prior_weight_and_no_history_gives_the_prior() -> None:
    _, _, result = one(Device(), ProgramRules(reliability_prior_weight=0, reliability_prior=0.4))
    assert result.reliability[0] == pytest.approx(0.4)


# ---------------------------------------------------------------- classification of recorded events


def test_classify_events() -> None:
    outcome = np.array(
        [OUTCOME_CLASSES["SUCCESSFUL_PARTICIPATION"], OUTCOME_CLASSES["NON_RESPONSIVE"], PE, OUTCOME_CLASSES["ERROR"],
         OUTCOME_CLASSES["CANCELLED"], SP],
        dtype=np.int8,
    )  # fmt: skip
    opt_out = np.array([False, True, False, False, True, True])
    cancelled = np.array([False, False, False, False, False, True])
    assert classify_events(outcome, opt_out, cancelled).tolist() == [SP, OO, PE, ER, CA, CA]


# ---------------------------------------------------------------- determinism and the reference model


def reference(
    device: Device, rules: ProgramRules
) -> tuple[float, float, float, float, float, IneligibilityReason | None]:
    """The model for one device written plainly from scoring.md, loop by loop (ages in hours, rounded to the
    microsecond as :func:`inputs` stores the times)."""
    days = device.days_ago if device.days_ago is not None else [10.0 * (i + 1) for i in range(len(device.history))]
    ages = [round(d * 86_400_000_000) / 3_600_000_000 for d in days]
    values = {
        SP: rules.outcome_values.successful_participation,
        IO: rules.outcome_values.in_flight_override,
        OO: rules.outcome_values.preemptive_opt_out,
        ER: rules.outcome_values.error,
        NR: rules.outcome_values.non_responsive,
    }
    events = [c for c in device.history if c not in (PE, CA)]
    num = rules.reliability_prior_weight * rules.reliability_prior
    den = rules.reliability_prior_weight
    for i, event_class in enumerate(events):
        w = 0.5 ** (i / rules.reliability_half_life_events)
        num += w * values[event_class]
        den += w
    r = num / den if den > 0 else rules.reliability_prior
    if device.seen_hours_ago is None:
        c, age = 0.0, math.inf
    else:
        age = round(device.seen_hours_ago * 3_600_000_000) / 3_600_000_000
        full, zero = rules.connectivity_full_hours, rules.connectivity_zero_hours
        c = 1.0 if age <= full else 0.0 if age >= zero else (zero - age) / (zero - full)
    calls = sum(
        1 for cls, a in zip(device.history, ages, strict=True) if cls != CA and 0 <= a < rules.fatigue_window_days * 24
    )
    f = min(rules.fatigue_per_event * calls, rules.fatigue_cap)
    raw = min(max(100 * (rules.reliability_weight * r + rules.connectivity_weight * c) * (1 - f), 0.0), 100.0)
    value = math.floor(raw * 10 + 0.5) / 10
    last = events[: rules.chronic_opt_out_window]
    reason: IneligibilityReason | None = None
    if not device.enrollment_active:
        reason = IneligibilityReason.ENROLLMENT_NOT_ACTIVE
    elif not device.program_active:
        reason = IneligibilityReason.PROGRAM_NOT_ACTIVE
    elif age > rules.offline_after_hours:
        reason = IneligibilityReason.DEVICE_OFFLINE
    elif sum(1 for e in last if e in (IO, OO)) >= rules.chronic_opt_out_count:
        reason = IneligibilityReason.CHRONIC_OPT_OUT
    elif len(events) >= rules.non_responsive_streak and all(e == NR for e in events[: rules.non_responsive_streak]):
        reason = IneligibilityReason.NON_RESPONSIVE_STREAK
    return value, raw, r, c, f, reason


devices_strategy = st.lists(
    st.builds(
        lambda history, gaps, seen, program, enrolled, active: Device(
            history=history,
            days_ago=list(np.cumsum(gaps[: len(history)])) if len(gaps) >= len(history) else None,
            seen_hours_ago=seen,
            program=program,
            enrollment_active=enrolled,
            program_active=active,
        ),
        st.lists(st.sampled_from(list(EventClass)), max_size=12),
        st.lists(st.floats(0, 5, allow_nan=False), max_size=12),
        st.one_of(st.none(), st.floats(-10, 300, allow_nan=False)),
        st.integers(0, 1),
        st.booleans(),
        st.booleans(),
    ),
    min_size=1,
    max_size=25,
)
RULES = [
    DEFAULT,
    ProgramRules(
        reliability_half_life_events=2.5,
        chronic_opt_out_count=2,
        non_responsive_streak=2,
        fatigue_per_event=0.2,
        connectivity_full_hours=12,
        connectivity_zero_hours=96,
    ),
]


@pytest.mark.slow  # 150 examples
@settings(max_examples=150, deadline=None)
@given(devices_strategy)
def test_vectorized_model_matches_the_reference(devices: list[Device]) -> None:
    result = score(devices, RULES)
    for row, device in enumerate(devices):
        value, raw, r, c, f, reason = reference(device, RULES[device.program])
        assert result.reliability[row] == pytest.approx(r, rel=1e-12)
        assert result.connectivity[row] == pytest.approx(c, abs=1e-12)
        assert result.fatigue[row] == pytest.approx(f, abs=1e-12)
        assert result.reason_of(row) is reason
        if float(result.score[row]) != value:
            # Only a raw score within rounding noise of a half tenth may round the other way.
            assert abs(raw * 10 % 1 - 0.5) < 1e-6, (raw, float(result.score[row]), value)


def test_deterministic() -> None:
    rng = np.random.default_rng(11)
    devices = [
        Device(
            [EventClass(int(c)) for c in rng.integers(0, 7, int(rng.integers(0, 10)))],
            seen_hours_ago=None if rng.random() < 0.1 else float(rng.uniform(0, 300)),
            program=int(rng.integers(0, 2)),
        )
        for _ in range(2000)
    ]
    first, second = score(devices, RULES), score(devices, RULES)
    for name in ("score", "eligible", "reason", "reliability", "connectivity", "fatigue"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    # Each row depends on its own data only: scoring one device alone gives its row of the whole.
    for row in (0, 777, 1999):
        alone = score([devices[row]], RULES)
        assert alone.score[0] == first.score[row]
        assert alone.reliability[0] == first.reliability[row]


# ---------------------------------------------------------------- malformed input


def test_history_must_be_newest_first() -> None:
    with pytest.raises(ValueError, match="newest first"):
        score([Device([SP, SP], days_ago=[10, 5])])


def test_history_must_be_grouped_by_row() -> None:
    good = inputs([Device([SP]), Device([SP])])
    shuffled = ScoringInput(
        **{**good.__dict__, "history_row": good.history_row[::-1].copy()},
    )
    with pytest.raises(ValueError, match="grouped by row"):
        score_devices(shuffled, [DEFAULT], NOW)


def test_lengths_and_ranges_are_checked() -> None:
    good = inputs([Device([SP])])
    with pytest.raises(ValueError, match="program_index"):
        score_devices(good, [], NOW)
    with pytest.raises(ValueError, match="last_communication_at"):
        score_devices(
            ScoringInput(**{**good.__dict__, "last_communication_at": good.last_communication_at[:0]}), [DEFAULT], NOW
        )
    with pytest.raises(ValueError, match="aware"):
        score_devices(good, [DEFAULT], NOW.replace(tzinfo=None))


def test_empty_input() -> None:
    result = score([])
    assert len(result.score) == 0


def test_large_input_in_one_call() -> None:
    """Speed is measured by a benchmark, not by tests (quality.md); this checks that many devices go through
    one call and each gets the score it gets alone."""
    n = 50_000
    now = as_datetime64(NOW)
    per = np.full(n, 4)
    rows = np.repeat(np.arange(n, dtype=np.intp), per)
    times = now - ((np.tile(np.arange(4), n) + 1) * 10 * 86_400_000_000).astype("timedelta64[us]")
    result = score_devices(
        ScoringInput(
            program_index=np.zeros(n, dtype=np.intp),
            enrollment_active=np.ones(n, dtype=np.bool_),
            program_active=np.ones(n, dtype=np.bool_),
            last_communication_at=np.full(n, now - np.timedelta64(1, "h")).astype("datetime64[us]"),
            history_row=rows,
            history_class=np.full(len(rows), int(SP), dtype=np.int8),
            history_event_at=times,
        ),
        [DEFAULT],
        NOW,
    )
    assert len(result.score) == n
    assert set(result.score.tolist()) == {one(Device([SP] * 4, seen_hours_ago=1))[0]}
