"""Reservations: which candidate devices an event reserves, and in which order (flows.md F5).

A *candidate* is a device the event may reserve (:func:`is_candidate`). Candidates are ranked by score,
highest first, ties broken by ``(head_end_system, nic_id)`` ascending (:func:`rank_key`), and
:func:`select_reservations` takes them in that order:

- a device-count target takes the first ``n``;
- a kW target takes devices until their summed expected shed reaches the amount, and stops there.

Fewer candidates than asked for is a *shortfall*, reported in the :class:`ReservationPlan`, never an error.

The selection must handle a million candidates within the F5 budget (quality.md: 100,000 devices out of
1,000,000 ranked, stored and delivered in 3 s), so it avoids a sort keyed by a Python function over every
candidate: see :func:`select_reservations` for how, and ``tests/unit/test_reservation.py`` for the proof
that it matches the plain ``sorted(candidates, key=rank_key)`` definition.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from operator import attrgetter
from typing import Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from derbridge.derms.domain.event import EventTarget

KW_RELATIVE_TOLERANCE: Final[float] = 1e-9
"""A kW target counts as reached when the summed expected shed is within this fraction below it.

Float sums drift: ten devices of 0.1 kW add up to 0.9999999999999999, which must reach a 1 kW target
rather than take an eleventh device. One part in a billion is far below anything a meter can tell apart.
"""


class Candidate(NamedTuple):
    """A device an event may reserve, with what ranking and the kW target need to know.

    A named tuple rather than a dataclass: the adapter builds up to a million of these per event, and a
    tuple is the cheapest immutable record to build and to hold. ``(head_end_system, nic_id)`` identifies
    the device; each device appears at most once among an event's candidates.
    """

    device_id: int
    """The DERMS's id of the device (what a reservation row points to)."""
    head_end_system: str
    nic_id: str
    score: float
    """The device's score in the current snapshot, 0 to 100; must be finite."""
    expected_shed_kw: float
    """How many kW reserving this device is expected to shed (per program, default 1.0); finite, ≥ 0."""


def rank_key(candidate: Candidate) -> tuple[float, str, str]:
    """The ranking order as a sort key: score descending, then ``head_end_system``, then ``nic_id``."""
    return (-candidate.score, candidate.head_end_system, candidate.nic_id)


def is_candidate(
    available: bool,
    eligible: bool,
    overlapping_reservation: bool,
    in_unavailability_window: bool,
) -> bool:
    """True when a device may be reserved for an event (flows.md F5).

    A device is a candidate when it is AVAILABLE in the event's program (enrollment sync, F3), marked
    eligible in the current score snapshot (F4), not reserved for another event whose window overlaps this
    one (:func:`~derbridge.derms.domain.event.windows_overlap`: half-open, touching windows do not
    overlap), and not in one of its customer's unavailability windows.

    This is the rule for one device, stated once. The adapter does not call it a million times: it selects
    candidates set-based, in one query applying the same four conditions; a change to the rule changes both.
    """
    return available and eligible and not overlapping_reservation and not in_unavailability_window


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """What :func:`select_reservations` decided, with what the event records about it.

    For a device-count target ``shortfall_kw`` is 0; for a kW target ``shortfall_devices`` is 0. The
    ``reserved_kw`` is reported for both kinds of target.
    """

    requested_devices: int | None
    """The device-count target, or ``None`` for a kW target."""
    requested_kw: float | None
    """The kW target, or ``None`` for a device-count target."""
    candidate_count: int
    """How many candidates there were."""
    reserved: tuple[Candidate, ...]
    """The reserved devices, in rank order."""
    reserved_kw: float
    """The summed expected shed of the reserved devices."""
    shortfall_devices: int
    """How many devices short of a device-count target (0 when met, or for a kW target)."""
    shortfall_kw: float
    """How many kW short of a kW target (0 when reached, or for a device-count target)."""

    @property
    def reserved_count(self) -> int:
        """How many devices were reserved."""
        return len(self.reserved)


def select_reservations(candidates: Iterable[Candidate], target: EventTarget) -> ReservationPlan:
    """Choose the devices an event reserves among ``candidates``, in rank order (see the module docstring).

    The result is exactly the prefix of ``sorted(candidates, key=rank_key)`` that the target asks for, and
    is deterministic: ties in score are broken by ``(head_end_system, nic_id)``.

    How it stays fast on a million candidates: it finds the score of the last device it needs from a sort
    of the bare scores (a C-level float sort, no key function), keeps the candidates above that score and
    those tied with it, and orders only those, with stable sorts keyed by ``attrgetter`` rather than one
    sort keyed by a tuple-building function. A kW target first bounds how many devices it can need —
    ``ceil(kw / smallest expected shed) + 1`` — and walks the running sum of that ranked prefix; when the
    smallest shed is 0 there is no bound and it ranks every candidate.

    Raises ``ValueError`` for a candidate with a non-finite score, or, for a kW target, a non-finite or
    negative expected shed: such a value would make the order or the sum meaningless.
    """
    pool = candidates if isinstance(candidates, list) else list(candidates)
    scores = [c.score for c in pool]
    _require_finite(scores, pool, "score")
    if target.device_count is not None:
        return _select_count(pool, scores, target.device_count)
    if target.kw is None:  # pragma: no cover - EventTarget guarantees exactly one of the two
        raise AssertionError("an event target has neither a device count nor a kW amount")
    return _select_kw(pool, scores, target.kw)


def _select_count(pool: list[Candidate], scores: list[float], count: int) -> ReservationPlan:
    reserved = _top_ranked(pool, scores, count)
    sheds = [c.expected_shed_kw for c in reserved]
    _require_finite(sheds, reserved, "expected_shed_kw")
    return ReservationPlan(
        requested_devices=count,
        requested_kw=None,
        candidate_count=len(pool),
        reserved=tuple(reserved),
        reserved_kw=math.fsum(sheds),
        shortfall_devices=count - len(reserved),
        shortfall_kw=0.0,
    )


def _select_kw(pool: list[Candidate], scores: list[float], kw: float) -> ReservationPlan:
    sheds = [c.expected_shed_kw for c in pool]
    _require_finite(sheds, pool, "expected_shed_kw")
    smallest = min(sheds, default=0.0)
    if smallest < 0:
        offender = pool[sheds.index(smallest)]
        raise ValueError(f"candidate device_id={offender.device_id} has a negative expected_shed_kw ({smallest})")
    goal = kw * (1.0 - KW_RELATIVE_TOLERANCE)
    # Every device sheds at least `smallest`, so ceil(kw / smallest) devices reach the target in exact
    # arithmetic; the extra one absorbs float rounding. Ranking only that many is what keeps a 1,000 kW
    # target among a million candidates cheap.
    bound = len(pool)
    if smallest > 0:
        needed = kw / smallest
        if needed < len(pool):
            bound = min(len(pool), math.ceil(needed) + 1)
    ranked = _top_ranked(pool, scores, bound)
    taken = _prefix_reaching(ranked, goal)
    if taken is None and bound < len(pool):
        # Unreachable in exact arithmetic (see above); kept so that the rule holds whatever the rounding.
        ranked = _top_ranked(pool, scores, len(pool))
        taken = _prefix_reaching(ranked, goal)
    reserved = ranked if taken is None else ranked[:taken]
    reserved_kw = math.fsum(c.expected_shed_kw for c in reserved)
    return ReservationPlan(
        requested_devices=None,
        requested_kw=kw,
        candidate_count=len(pool),
        reserved=tuple(reserved),
        reserved_kw=reserved_kw,
        shortfall_devices=0,
        shortfall_kw=0.0 if taken is not None else max(0.0, kw - reserved_kw),
    )


def _prefix_reaching(ranked: list[Candidate], goal: float) -> int | None:
    """How many of ``ranked`` it takes for the running sum of expected shed to reach ``goal``, or None."""
    # Sheds are ≥ 0, so the running sums never decrease and a binary search finds the first that reaches.
    running = list(accumulate(c.expected_shed_kw for c in ranked))
    index = bisect_left(running, goal)
    return index + 1 if index < len(running) else None


def _top_ranked(pool: list[Candidate], scores: list[float], k: int) -> list[Candidate]:
    """The first ``k`` of ``pool`` in rank order (all of it, ranked, when ``k >= len(pool)``)."""
    if k <= 0 or not pool:
        return []
    if k >= len(pool):
        return _rank_sorted(pool)
    # The k-th highest score is the lowest score a reserved device can have. Every candidate above it is
    # reserved (there are fewer than k), and the rest come from those tied with it, by (hes, nic).
    threshold = sorted(scores)[len(scores) - k]
    above = [c for c in pool if c.score > threshold]
    tied = [c for c in pool if c.score == threshold]
    ranked = _rank_sorted(above)
    ranked.extend(_rank_sorted(tied)[: k - len(above)])
    return ranked


def _rank_sorted(items: Sequence[Candidate]) -> list[Candidate]:
    """``sorted(items, key=rank_key)``, three times faster on large inputs.

    Python's sort is stable, so sorting by the least significant field first and the most significant last
    gives the lexicographic order of :func:`rank_key`; ``attrgetter`` keys are computed in C and compare as
    plain strings and floats instead of tuples. ``reverse=True`` keeps equal scores in their prior order.
    """
    ranked = sorted(items, key=attrgetter("nic_id"))
    ranked.sort(key=attrgetter("head_end_system"))
    ranked.sort(key=attrgetter("score"), reverse=True)
    return ranked


def _require_finite(values: list[float], owners: Sequence[Candidate], field: str) -> None:
    # One C-level sum tells whether any value is NaN or infinite (both propagate); only then look for it.
    if math.isfinite(sum(values)):
        return
    for value, owner in zip(values, owners, strict=True):
        if not math.isfinite(value):
            raise ValueError(f"candidate device_id={owner.device_id} has a non-finite {field} ({value})")


# --- a million candidates, as columns -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColumnSelection:
    """What :func:`rank_columns` chose: the positions of the reserved candidates, in rank order, and what the
    event records about it; :meth:`plan` makes the :class:`ReservationPlan` once their names are known."""

    positions: NDArray[np.intp]
    requested_devices: int | None
    requested_kw: float | None
    candidate_count: int
    reserved_kw: float
    shortfall_devices: int
    shortfall_kw: float

    def plan(
        self,
        device_id: Sequence[int],
        head_end_system: Sequence[str],
        nic_id: Sequence[str],
        score: Sequence[float],
        expected_shed_kw: float,
    ) -> ReservationPlan:
        """The plan, given the reserved candidates' columns in rank order (``positions`` taken from the input)."""
        return ReservationPlan(
            requested_devices=self.requested_devices,
            requested_kw=self.requested_kw,
            candidate_count=self.candidate_count,
            reserved=tuple(
                Candidate(i, h, n, s, expected_shed_kw)
                for i, h, n, s in zip(device_id, head_end_system, nic_id, score, strict=True)
            ),
            reserved_kw=self.reserved_kw,
            shortfall_devices=self.shortfall_devices,
            shortfall_kw=self.shortfall_kw,
        )


def rank_columns(
    score: NDArray[np.float64],
    expected_shed_kw: float,
    target: EventTarget,
    head_end_system: pa.Array | None = None,
    nic_id: pa.Array | None = None,
) -> ColumnSelection:
    """:func:`select_reservations` for candidates given as columns (every candidate sharing the program's
    ``expected_shed_kw``), with exactly its result, at a million candidates.

    ``head_end_system`` and ``nic_id`` break ties in score; without them the candidates must come in
    ``(head_end_system, nic_id)`` order, and a stable sort by score keeps it among equal scores (a database
    that reads them in its key order needs no names for the million, only for the reserved).

    The first ``k`` candidates in rank order all score at least the ``k``-th highest score, ``k`` being the
    most devices the target can take (its device count; for a kW target the bound of
    :func:`select_reservations`). So only the candidates scoring that much are ordered — by score descending,
    then by position or by Arrow's sort on the names, which compares strings by their UTF-8 bytes: the order
    of Python's ``str`` comparison. A kW target walks the running sum of the sheds in rank order
    (``numpy.cumsum`` adds in order, as ``accumulate`` does); if the bound was not enough (float rounding)
    every candidate is ordered. Raises ``ValueError`` for a non-finite score, a non-finite shed, or a negative
    shed with a kW target.
    """
    count = len(score)
    if count and not np.isfinite(score).all():
        offender = int(np.flatnonzero(~np.isfinite(score))[0])
        raise ValueError(f"candidate #{offender} has a non-finite score ({score[offender]})")
    names = (head_end_system, nic_id) if head_end_system is not None and nic_id is not None else None
    if target.device_count is not None:
        ranked = _rank_columns(score, names, min(target.device_count, count))
        if len(ranked) and not math.isfinite(expected_shed_kw):
            raise ValueError(f"candidate #{ranked[0]} has a non-finite expected_shed_kw ({expected_shed_kw})")
        return ColumnSelection(
            positions=ranked,
            requested_devices=target.device_count,
            requested_kw=None,
            candidate_count=count,
            reserved_kw=math.fsum([expected_shed_kw] * len(ranked)),
            shortfall_devices=target.device_count - len(ranked),
            shortfall_kw=0.0,
        )
    kw = float(target.kw or 0.0)
    if count and (not math.isfinite(expected_shed_kw) or expected_shed_kw < 0):
        raise ValueError(f"candidate #0 has an invalid expected_shed_kw ({expected_shed_kw})")
    goal = kw * (1.0 - KW_RELATIVE_TOLERANCE)
    bound = count
    if expected_shed_kw > 0 and kw / expected_shed_kw < count:
        bound = min(count, math.ceil(kw / expected_shed_kw) + 1)
    ranked = _rank_columns(score, names, bound)
    reached = _reaching(len(ranked), expected_shed_kw, goal)
    if reached is None and bound < count:
        ranked = _rank_columns(score, names, count)
        reached = _reaching(len(ranked), expected_shed_kw, goal)
    taken = ranked if reached is None else ranked[:reached]
    reserved_kw = math.fsum([expected_shed_kw] * len(taken))
    return ColumnSelection(
        positions=taken,
        requested_devices=None,
        requested_kw=kw,
        candidate_count=count,
        reserved_kw=reserved_kw,
        shortfall_devices=0,
        shortfall_kw=0.0 if reached is not None else max(0.0, kw - reserved_kw),
    )


def _reaching(ranked: int, shed: float, goal: float) -> int | None:
    """How many of ``ranked`` devices of ``shed`` kW each reach ``goal`` (``_prefix_reaching``'s rule)."""
    running = np.cumsum(np.full(ranked, shed, dtype=np.float64))
    index = int(np.searchsorted(running, goal, side="left"))
    return index + 1 if index < ranked else None


def _rank_columns(score: NDArray[np.float64], names: tuple[pa.Array, pa.Array] | None, k: int) -> NDArray[np.intp]:
    """The positions of the first ``k`` candidates in rank order."""
    count = len(score)
    if k <= 0 or count == 0:
        return np.zeros(0, dtype=np.intp)
    positions = np.arange(count)
    if k < count:
        lowest_needed = np.partition(score, count - k)[count - k]
        positions = np.flatnonzero(score >= lowest_needed)
    if names is None:
        # Positions are in (head_end_system, nic_id) order: a stable sort keeps it among equal scores.
        order = np.argsort(-score[positions], kind="stable")
    else:
        table = pa.table(
            {
                "score": pa.array(score[positions]),
                "head_end_system": names[0].take(pa.array(positions)),
                "nic_id": names[1].take(pa.array(positions)),
            }
        )
        keys = [("score", "descending"), ("head_end_system", "ascending"), ("nic_id", "ascending")]
        order = pc.sort_indices(table, sort_keys=keys).to_numpy()
    ranked: NDArray[np.intp] = positions[order[:k]]
    return ranked
