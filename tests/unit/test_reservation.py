"""Reservation ranking and selection (flows.md F5)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from derbridge.derms.domain.event import EventTarget
from derbridge.derms.domain.reservation import (
    KW_RELATIVE_TOLERANCE,
    Candidate,
    ReservationPlan,
    is_candidate,
    rank_columns,
    rank_key,
    select_reservations,
)


def cand(device_id: int, score: float, hes: str = "ECOBEE", nic: str | None = None, shed: float = 1.0) -> Candidate:
    return Candidate(device_id, hes, nic if nic is not None else f"nic-{device_id:04d}", score, shed)


def ids(plan: ReservationPlan) -> list[int]:
    return [c.device_id for c in plan.reserved]


# ---------------------------------------------------------------- is_candidate


@pytest.mark.parametrize(
    ("available", "eligible", "overlapping", "unavailable_window"),
    list(itertools.product([True, False], repeat=4)),
)
def test_is_candidate_needs_all_four_conditions(
    available: bool, eligible: bool, overlapping: bool, unavailable_window: bool
) -> None:
    expected = (available, eligible, overlapping, unavailable_window) == (True, True, False, False)
    assert is_candidate(available, eligible, overlapping, unavailable_window) is expected


# ---------------------------------------------------------------- ranking


def test_rank_key_is_score_descending_then_head_end_then_nic() -> None:
    assert rank_key(cand(1, 80.5, "NEST", "n-9")) == (-80.5, "NEST", "n-9")


def test_ties_in_score_are_broken_by_head_end_system_then_nic_id() -> None:
    pool = [
        cand(1, 50.0, "NEST", "a"),
        cand(2, 50.0, "ECOBEE", "z"),
        cand(3, 90.0, "RESIDEO", "m"),
        cand(4, 50.0, "ECOBEE", "b"),
        cand(5, 50.0, "NEST", "0"),
        cand(6, 10.0, "ECOBEE", "a"),
    ]
    plan = select_reservations(pool, EventTarget.devices(6))
    assert ids(plan) == [3, 4, 2, 5, 1, 6]
    for order in itertools.permutations(pool):
        assert ids(select_reservations(list(order), EventTarget.devices(6))) == [3, 4, 2, 5, 1, 6]


def test_the_cut_falls_inside_a_tie_by_head_end_and_nic() -> None:
    pool = [cand(1, 70.0, "NEST", "x"), cand(2, 70.0, "ECOBEE", "y"), cand(3, 90.0), cand(4, 70.0, "ECOBEE", "x")]
    assert ids(select_reservations(pool, EventTarget.devices(2))) == [3, 4]
    assert ids(select_reservations(pool, EventTarget.devices(3))) == [3, 4, 2]


def test_nic_ids_compare_as_text() -> None:
    pool = [cand(1, 60.0, nic="10"), cand(2, 60.0, nic="9"), cand(3, 60.0, nic="100")]
    assert ids(select_reservations(pool, EventTarget.devices(3))) == [1, 3, 2]


# ---------------------------------------------------------------- count targets


def test_count_target_takes_the_top_n() -> None:
    pool = [cand(i, score) for i, score in enumerate([12.0, 99.5, 40.0, 87.1, 55.0, 99.5])]
    plan = select_reservations(pool, EventTarget.devices(3))
    assert ids(plan) == [1, 5, 3]
    assert plan == ReservationPlan(
        requested_devices=3,
        requested_kw=None,
        candidate_count=6,
        reserved=(pool[1], pool[5], pool[3]),
        reserved_kw=3.0,
        shortfall_devices=0,
        shortfall_kw=0.0,
    )
    assert plan.reserved_count == 3


def test_count_target_with_fewer_candidates_reports_a_shortfall() -> None:
    pool = [cand(1, 30.0), cand(2, 70.0)]
    plan = select_reservations(pool, EventTarget.devices(5))
    assert ids(plan) == [2, 1]
    assert (plan.candidate_count, plan.shortfall_devices, plan.shortfall_kw) == (2, 3, 0.0)


def test_count_target_exactly_met() -> None:
    plan = select_reservations([cand(1, 30.0), cand(2, 70.0)], EventTarget.devices(2))
    assert (ids(plan), plan.shortfall_devices) == ([2, 1], 0)


def test_count_target_with_no_candidates() -> None:
    plan = select_reservations([], EventTarget.devices(10))
    assert plan == ReservationPlan(10, None, 0, (), 0.0, 10, 0.0)


def test_count_target_reports_the_reserved_kw() -> None:
    pool = [cand(1, 90.0, shed=2.5), cand(2, 80.0, shed=0.5), cand(3, 70.0, shed=9.0)]
    assert select_reservations(pool, EventTarget.devices(2)).reserved_kw == 3.0


def test_candidates_may_come_from_any_iterable() -> None:
    plan = select_reservations((cand(i, float(i)) for i in range(5)), EventTarget.devices(2))
    assert ids(plan) == [4, 3]
    assert plan.candidate_count == 5


# ---------------------------------------------------------------- kW targets


# In rank order: A 2.0 kW, B 0.5 kW, C 3.0 kW, D 1.0 kW (6.5 kW in all).
VARYING = [cand(4, 60.0, shed=1.0), cand(2, 80.0, shed=0.5), cand(1, 90.0, shed=2.0), cand(3, 70.0, shed=3.0)]


def test_kw_target_takes_devices_in_rank_order_until_reached() -> None:
    plan = select_reservations(VARYING, EventTarget.kilowatts(5.0))
    assert ids(plan) == [1, 2, 3]  # 2.0 + 0.5 = 2.5, + 3.0 = 5.5 ≥ 5
    assert plan.reserved_kw == 5.5
    assert (plan.requested_kw, plan.requested_devices, plan.shortfall_kw, plan.shortfall_devices) == (
        5.0,
        None,
        0.0,
        0,
    )


def test_kw_target_stops_as_soon_as_reached() -> None:
    plan = select_reservations(VARYING, EventTarget.kilowatts(2.5))
    assert ids(plan) == [1, 2]
    assert plan.reserved_kw == 2.5


def test_kw_target_met_by_the_first_device() -> None:
    assert ids(select_reservations(VARYING, EventTarget.kilowatts(0.1))) == [1]


def test_kw_target_out_of_reach_takes_everything_and_reports_the_shortfall() -> None:
    plan = select_reservations(VARYING, EventTarget.kilowatts(10.0))
    assert ids(plan) == [1, 2, 3, 4]
    assert plan.reserved_kw == 6.5
    assert plan.shortfall_kw == 3.5
    assert plan.shortfall_devices == 0
    assert plan.candidate_count == 4


def test_kw_target_with_no_candidates() -> None:
    plan = select_reservations([], EventTarget.kilowatts(7.5))
    assert plan == ReservationPlan(None, 7.5, 0, (), 0.0, 0, 7.5)


def test_kw_target_with_uniform_shed() -> None:
    pool = [cand(i, float(i % 17), shed=1.0) for i in range(1000)]
    plan = select_reservations(pool, EventTarget.kilowatts(250))
    assert plan.reserved_count == 250
    assert plan.reserved_kw == 250.0
    assert list(plan.reserved) == sorted(pool, key=rank_key)[:250]


def test_kw_target_is_not_fooled_by_float_sums() -> None:
    # 0.1 added ten times is 0.9999999999999999: the tenth device reaches 1 kW, no eleventh is taken.
    pool = [cand(i, 50.0, shed=0.1) for i in range(20)]
    plan = select_reservations(pool, EventTarget.kilowatts(1.0))
    assert plan.reserved_count == 10
    assert plan.shortfall_kw == 0.0
    assert math.isclose(plan.reserved_kw, 1.0)


def test_kw_target_takes_a_zero_shed_device_in_its_rank() -> None:
    pool = [cand(1, 90.0, shed=1.0), cand(2, 80.0, shed=0.0), cand(3, 70.0, shed=1.0), cand(4, 60.0, shed=1.0)]
    plan = select_reservations(pool, EventTarget.kilowatts(2.0))
    assert ids(plan) == [1, 2, 3]
    assert plan.reserved_kw == 2.0


# ---------------------------------------------------------------- bad values


def test_non_finite_score_is_refused() -> None:
    pool = [cand(1, 50.0), cand(7, math.nan), cand(3, 20.0)]
    with pytest.raises(ValueError, match=r"device_id=7 has a non-finite score"):
        select_reservations(pool, EventTarget.devices(1))


@pytest.mark.parametrize("shed", [math.inf, math.nan])
def test_non_finite_shed_is_refused_for_a_kw_target(shed: float) -> None:
    pool = [cand(1, 50.0), cand(9, 40.0, shed=shed)]
    with pytest.raises(ValueError, match=r"device_id=9 has a non-finite expected_shed_kw"):
        select_reservations(pool, EventTarget.kilowatts(1.0))


def test_negative_shed_is_refused_for_a_kw_target() -> None:
    pool = [cand(1, 50.0), cand(9, 40.0, shed=-1.0)]
    with pytest.raises(ValueError, match=r"device_id=9 has a negative expected_shed_kw"):
        select_reservations(pool, EventTarget.kilowatts(1.0))


def test_a_non_finite_shed_among_the_reserved_is_refused_for_a_count_target() -> None:
    with pytest.raises(ValueError, match="non-finite expected_shed_kw"):
        select_reservations([cand(1, 50.0, shed=math.inf)], EventTarget.devices(1))


# ---------------------------------------------------------------- against the definition

# The fast selection must equal this plain statement of the rule: sort everything by rank, take a prefix.


def reference_count(pool: list[Candidate], n: int) -> list[Candidate]:
    return sorted(pool, key=rank_key)[:n]


def reference_kw(pool: list[Candidate], kw: float) -> list[Candidate]:
    taken: list[Candidate] = []
    total = 0.0
    for candidate in sorted(pool, key=rank_key):
        if total >= kw * (1 - KW_RELATIVE_TOLERANCE):
            break
        taken.append(candidate)
        total += candidate.expected_shed_kw
    return taken


@st.composite
def candidate_pools(draw: st.DrawFn) -> list[Candidate]:
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(["ECOBEE", "NEST", "RESIDEO"]), st.text("ab01", min_size=1, max_size=3)),
            unique=True,
            max_size=60,
        )
    )
    # Few distinct scores so that ties, and cuts inside ties, are common.
    scores = st.sampled_from([0.0, 12.5, 50.0, 50.1, 77.5, 100.0])
    sheds = st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5])
    return [Candidate(i, hes, nic, draw(scores), draw(sheds)) for i, (hes, nic) in enumerate(keys)]


@pytest.mark.slow  # 300 examples
@settings(max_examples=300, database=None)
@given(pool=candidate_pools(), n=st.integers(1, 70))
def test_count_selection_equals_the_definition(pool: list[Candidate], n: int) -> None:
    plan = select_reservations(pool, EventTarget.devices(n))
    assert list(plan.reserved) == reference_count(pool, n)
    assert plan.shortfall_devices == max(0, n - len(pool))


@pytest.mark.slow  # 300 examples
@settings(max_examples=300, database=None)
@given(pool=candidate_pools(), kw=st.sampled_from([0.05, 0.3, 1.0, 2.0, 7.7, 25.0, 500.0]))
def test_kw_selection_equals_the_definition(pool: list[Candidate], kw: float) -> None:
    plan = select_reservations(pool, EventTarget.kilowatts(kw))
    assert list(plan.reserved) == reference_kw(pool, kw)
    assert math.isclose(plan.reserved_kw, math.fsum(c.expected_shed_kw for c in plan.reserved))
    if plan.shortfall_kw > 0:
        assert len(plan.reserved) == len(pool)
        assert math.isclose(plan.reserved_kw + plan.shortfall_kw, kw)


def test_a_larger_pool_equals_the_definition() -> None:
    rng = random.Random(7)
    pool = [
        Candidate(i, rng.choice(["ECOBEE", "NEST"]), f"{rng.getrandbits(24):06x}", round(rng.uniform(0, 100), 1), 1.0)
        for i in range(20_000)
    ]
    assert list(select_reservations(pool, EventTarget.devices(2_000)).reserved) == reference_count(pool, 2_000)
    varying = [c._replace(expected_shed_kw=round(rng.uniform(0.5, 3.0), 2)) for c in pool]
    assert list(select_reservations(varying, EventTarget.kilowatts(3_500)).reserved) == reference_kw(varying, 3_500)


# ---------------------------------------------------------------- the columnar selection (a million candidates)


def columnar(pool: list[Candidate], target: EventTarget, shed: float) -> ReservationPlan:
    """The columnar selection both ways — names given, and candidates in (head end, nic) order without
    names — which must agree."""
    scores = np.array([c.score for c in pool], dtype=np.float64)
    heads = pa.array([c.head_end_system for c in pool], type=pa.string())
    nics = pa.array([c.nic_id for c in pool], type=pa.string())
    named = rank_columns(scores, shed, target, heads, nics)
    plan = named.plan(
        [pool[i].device_id for i in named.positions],
        [pool[i].head_end_system for i in named.positions],
        [pool[i].nic_id for i in named.positions],
        [pool[i].score for i in named.positions],
        shed,
    )
    in_key_order = sorted(pool, key=lambda c: (c.head_end_system, c.nic_id))
    ordered = rank_columns(np.array([c.score for c in in_key_order], dtype=np.float64), shed, target)
    assert [in_key_order[i] for i in ordered.positions] == list(plan.reserved)
    return plan


@st.composite
def uniform_pools(draw: st.DrawFn) -> tuple[list[Candidate], float]:
    """Pools whose devices share one expected shed (the program's), as the DERMS reads them; names include
    non-ASCII text, whose order must be Python's."""
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(["ECOBEE", "NEST", "RESIDEO"]), st.text("ab01é€", min_size=1, max_size=3)),
            unique=True,
            max_size=60,
        )
    )
    shed = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.5]))
    scores = st.sampled_from([0.0, 12.5, 50.0, 50.1, 77.5, 100.0])
    return [Candidate(i, hes, nic, draw(scores), shed) for i, (hes, nic) in enumerate(keys)], shed


@pytest.mark.slow  # 300 examples
@settings(max_examples=300, database=None)
@given(pool_shed=uniform_pools(), n=st.integers(1, 70))
def test_columnar_count_selection_equals_select_reservations(pool_shed: tuple[list[Candidate], float], n: int) -> None:
    pool, shed = pool_shed
    assert columnar(pool, EventTarget.devices(n), shed) == select_reservations(pool, EventTarget.devices(n))


@pytest.mark.slow  # 300 examples
@settings(max_examples=300, database=None)
@given(pool_shed=uniform_pools(), kw=st.sampled_from([0.05, 0.3, 1.0, 2.0, 7.7, 25.0, 500.0]))
def test_columnar_kw_selection_equals_select_reservations(pool_shed: tuple[list[Candidate], float], kw: float) -> None:
    pool, shed = pool_shed
    assert columnar(pool, EventTarget.kilowatts(kw), shed) == select_reservations(pool, EventTarget.kilowatts(kw))


def test_columnar_selection_on_a_larger_tied_pool() -> None:
    rng = random.Random(11)
    pool = [
        Candidate(i, rng.choice(["ECOBEE", "NEST"]), f"{rng.getrandbits(20):05x}", rng.choice([70.0, 80.0, 80.5]), 1.5)
        for i in range(20_000)
    ]
    pool = list({(c.head_end_system, c.nic_id): c for c in pool}.values())
    for target in (EventTarget.devices(2_000), EventTarget.devices(30_000), EventTarget.kilowatts(3_500.0)):
        assert columnar(pool, target, 1.5) == select_reservations(pool, target)


def test_columnar_selection_refuses_what_select_reservations_refuses() -> None:
    with pytest.raises(ValueError, match="non-finite score"):
        columnar([cand(1, 50.0), cand(2, math.nan)], EventTarget.devices(1), 1.0)
    with pytest.raises(ValueError, match="expected_shed_kw"):
        columnar([cand(1, 50.0)], EventTarget.kilowatts(1.0), -1.0)
    with pytest.raises(ValueError, match="expected_shed_kw"):
        columnar([cand(1, 50.0)], EventTarget.devices(1), math.inf)
