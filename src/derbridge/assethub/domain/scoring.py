"""Device score and eligibility, model v1 (shared/design/scoring.md): one vectorized pass over columns.

A *row* is one device in one program (a device enrolled in two programs has two rows, each scored with its
program's :class:`~derbridge.assethub.domain.program.ProgramRules`). For each row:

- **reliability** ``r = (k·p + Σ wᵢ·vᵢ) / (k + Σ wᵢ)`` over the device's events in the program that have an
  outcome, newest first, ``wᵢ = 0.5^(i/h)`` (``i = 0`` for the newest), ``vᵢ`` the value of the event's
  :class:`EventClass`. With no such event (and ``k > 0``) ``r = p``; with ``k = 0`` and no event, ``r = p``
  too (nothing else is known).
- **connectivity** ``c``: 1 when the device last communicated at most ``connectivity_full_hours`` ago,
  falling linearly to 0 at ``connectivity_zero_hours``; 0 for a device never seen communicating.
- **fatigue** ``f = min(fatigue_per_event · calls, fatigue_cap)``, ``calls`` = the device's events in the
  program that started in the last ``fatigue_window_days`` (``now - window < start <= now``), cancelled
  ones excepted, whether or not their outcome is in yet.
- **score** ``= 100 · (wr·r + wc·c) · (1 - f)``, capped to [0, 100] (the weights need not sum to 1),
  rounded half up to one decimal.
- **eligibility**: eligible unless one of :class:`IneligibilityReason` applies; the *first* that applies,
  in the order of that enumeration, is the reason kept.

Every row is computed at once with numpy (no Python loop over devices or events), so a million devices
with their histories score in well under a second on one core, and the same inputs give the same outputs
bit for bit. This module is pure: the service reads the columns, this computes, the service writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Final

import numpy as np
from numpy.typing import NDArray

from derbridge.assethub.domain.program import ProgramRules

SCORING_MODEL_VERSION: Final[str] = "v1"
"""The version of this model, carried in every score file's manifest."""

MICROSECONDS_PER_HOUR: Final[float] = 3_600_000_000.0


class EventClass(IntEnum):
    """What one event of a device's history counts as. Stored as ``int8`` codes in the columns."""

    PENDING = 0
    """Reserved, no outcome reported yet: not in reliability nor eligibility; counts as a call for fatigue."""
    SUCCESSFUL_PARTICIPATION = 1
    IN_FLIGHT_OVERRIDE = 2
    """The occupant overrode the thermostat during the event."""
    PREEMPTIVE_OPT_OUT = 3
    """The customer opted out before the event (whatever outcome was reported with the opt-out)."""
    ERROR = 4
    NON_RESPONSIVE = 5
    CANCELLED = 6
    """The event or the device's participation was cancelled: not counted anywhere."""


OUTCOME_CLASSES: Final[Mapping[str, EventClass]] = {
    "SUCCESSFUL_PARTICIPATION": EventClass.SUCCESSFUL_PARTICIPATION,
    "IN_FLIGHT_OVERRIDE": EventClass.IN_FLIGHT_OVERRIDE,
    "NON_RESPONSIVE": EventClass.NON_RESPONSIVE,
    "ERROR": EventClass.ERROR,
    "CANCELLED": EventClass.CANCELLED,
}
"""The class of each reported outcome (F7 ``outcome`` values); no outcome yet is :attr:`EventClass.PENDING`."""


class IneligibilityReason(StrEnum):
    """Why a device may not be reserved, in order of precedence: the first that applies is reported."""

    ENROLLMENT_NOT_ACTIVE = "ENROLLMENT_NOT_ACTIVE"
    """The device's enrollment in the program is not ACTIVE."""
    PROGRAM_NOT_ACTIVE = "PROGRAM_NOT_ACTIVE"
    """The program is not ACTIVE."""
    DEVICE_OFFLINE = "DEVICE_OFFLINE"
    """No communication for more than ``offline_after_hours``, or never seen communicating."""
    CHRONIC_OPT_OUT = "CHRONIC_OPT_OUT"
    """Opted out or overrode in at least ``chronic_opt_out_count`` of its last ``chronic_opt_out_window``
    events with an outcome."""
    NON_RESPONSIVE_STREAK = "NON_RESPONSIVE_STREAK"
    """Its last ``non_responsive_streak`` events with an outcome were all NON_RESPONSIVE."""
    CUSTOMER_UNAVAILABLE = "CUSTOMER_UNAVAILABLE"
    """Inside a customer unavailability window. Customer unavailability windows are not a flow yet, so the
    model has no input for them and never reports this reason; it is listed to keep its place in the order."""


REASONS: Final[tuple[IneligibilityReason, ...]] = tuple(IneligibilityReason)
"""The reasons in precedence order; reason code ``i + 1`` in :class:`ScoringResult` is ``REASONS[i]``."""

ELIGIBLE: Final[int] = 0
"""The reason code of an eligible row."""


def reason_code(reason: IneligibilityReason) -> int:
    """The ``int8`` code of ``reason`` in :attr:`ScoringResult.reason`."""
    return REASONS.index(reason) + 1


def classify_events(
    outcome: NDArray[np.int8], preemptive_opt_out: NDArray[np.bool_], cancelled: NDArray[np.bool_]
) -> NDArray[np.int8]:
    """The :class:`EventClass` of each event from what was recorded about it.

    ``outcome`` holds the class of the reported outcome (:data:`OUTCOME_CLASSES`, PENDING when none);
    ``cancelled`` is true when the event or the participation was cancelled. A cancellation wins over
    everything; a pre-emptive opt-out wins over the outcome reported with it.
    """
    classes = np.where(preemptive_opt_out, np.int8(EventClass.PREEMPTIVE_OPT_OUT), outcome)
    classes = np.where(outcome == EventClass.CANCELLED, np.int8(EventClass.CANCELLED), classes)
    return np.where(cancelled, np.int8(EventClass.CANCELLED), classes).astype(np.int8)


@dataclass(frozen=True)
class ScoringInput:
    """The columns the model reads. Times are ``datetime64[us]`` in UTC (naive numpy values).

    Per row (length ``n``): ``program_index`` (which of the rules applies), ``enrollment_active``,
    ``program_active``, ``last_communication_at`` (``NaT``: never seen communicating).

    Per history entry (length ``m``): ``history_row`` (the row it belongs to), ``history_class``
    (:class:`EventClass` codes, see :func:`classify_events`) and ``history_event_at`` (the event's start).
    Entries are grouped by row in ascending row order and, within a row, newest first: that order is what
    "the i-th newest event" means, so ties in time keep the order given.
    """

    program_index: NDArray[np.intp]
    enrollment_active: NDArray[np.bool_]
    program_active: NDArray[np.bool_]
    last_communication_at: NDArray[np.datetime64]
    history_row: NDArray[np.intp]
    history_class: NDArray[np.int8]
    history_event_at: NDArray[np.datetime64]

    @property
    def rows(self) -> int:
        """How many rows (one per device and program) there are."""
        return len(self.program_index)


@dataclass(frozen=True)
class ScoringResult:
    """The model's output per row, with the components that explain it."""

    score: NDArray[np.float64]
    """0.0 to 100.0, one decimal."""
    eligible: NDArray[np.bool_]
    reason: NDArray[np.int8]
    """:data:`ELIGIBLE` (0) or ``i + 1`` for ``REASONS[i]``, the first reason that applies."""
    reliability: NDArray[np.float64]
    connectivity: NDArray[np.float64]
    fatigue: NDArray[np.float64]

    def reason_of(self, row: int) -> IneligibilityReason | None:
        """The ineligibility reason of one row (None when eligible)."""
        code = int(self.reason[row])
        return None if code == ELIGIBLE else REASONS[code - 1]


@dataclass(frozen=True)
class _Constants:
    """Every per-program constant as an array indexed by program."""

    half_life: NDArray[np.float64]
    prior: NDArray[np.float64]
    prior_weight: NDArray[np.float64]
    values: NDArray[np.float64]
    """(program, EventClass) value of each class."""
    full_hours: NDArray[np.float64]
    zero_hours: NDArray[np.float64]
    fatigue_per_event: NDArray[np.float64]
    fatigue_window_hours: NDArray[np.float64]
    fatigue_cap: NDArray[np.float64]
    reliability_weight: NDArray[np.float64]
    connectivity_weight: NDArray[np.float64]
    offline_after_hours: NDArray[np.float64]
    chronic_count: NDArray[np.int64]
    chronic_window: NDArray[np.int64]
    streak: NDArray[np.int64]

    @classmethod
    def of(cls, rules: Sequence[ProgramRules]) -> _Constants:
        def floats(values: list[float]) -> NDArray[np.float64]:
            return np.array(values, dtype=np.float64)

        def ints(values: list[int]) -> NDArray[np.int64]:
            return np.array(values, dtype=np.int64)

        values = np.zeros((len(rules), len(EventClass)), dtype=np.float64)
        for p, rule in enumerate(rules):
            ov = rule.outcome_values
            values[p, EventClass.SUCCESSFUL_PARTICIPATION] = ov.successful_participation
            values[p, EventClass.IN_FLIGHT_OVERRIDE] = ov.in_flight_override
            values[p, EventClass.PREEMPTIVE_OPT_OUT] = ov.preemptive_opt_out
            values[p, EventClass.ERROR] = ov.error
            values[p, EventClass.NON_RESPONSIVE] = ov.non_responsive
        return cls(
            half_life=floats([r.reliability_half_life_events for r in rules]),
            prior=floats([r.reliability_prior for r in rules]),
            prior_weight=floats([r.reliability_prior_weight for r in rules]),
            values=values,
            full_hours=floats([r.connectivity_full_hours for r in rules]),
            zero_hours=floats([r.connectivity_zero_hours for r in rules]),
            fatigue_per_event=floats([r.fatigue_per_event for r in rules]),
            fatigue_window_hours=floats([r.fatigue_window_days * 24.0 for r in rules]),
            fatigue_cap=floats([r.fatigue_cap for r in rules]),
            reliability_weight=floats([r.reliability_weight for r in rules]),
            connectivity_weight=floats([r.connectivity_weight for r in rules]),
            offline_after_hours=floats([r.offline_after_hours for r in rules]),
            chronic_count=ints([r.chronic_opt_out_count for r in rules]),
            chronic_window=ints([r.chronic_opt_out_window for r in rules]),
            streak=ints([r.non_responsive_streak for r in rules]),
        )


def as_datetime64(moment: datetime) -> np.datetime64:
    """An aware ``datetime`` as the naive UTC ``datetime64[us]`` the columns use."""
    if moment.tzinfo is None:
        raise ValueError("scoring needs an aware time")
    return np.datetime64(moment.astimezone(UTC).replace(tzinfo=None), "us")


def _hours_before(now: np.datetime64, times: NDArray[np.datetime64]) -> NDArray[np.float64]:
    """Hours from each of ``times`` to ``now``: negative for a time after ``now``, +inf for NaT (never).

    Infinity rather than NaN: "never" is then simply "longer ago than any bound" in every comparison below,
    and no comparison meets a NaN.
    """
    never = np.isnat(times)
    elapsed = (now - times.astype("datetime64[us]")).astype(np.int64).astype(np.float64) / MICROSECONDS_PER_HOUR
    return np.where(never, np.inf, elapsed)


def _check(inputs: ScoringInput, programs: int) -> None:
    n, m = inputs.rows, len(inputs.history_row)
    for name in ("enrollment_active", "program_active", "last_communication_at"):
        if len(getattr(inputs, name)) != n:
            raise ValueError(f"{name} has {len(getattr(inputs, name))} values for {n} rows")
    for name in ("history_class", "history_event_at"):
        if len(getattr(inputs, name)) != m:
            raise ValueError(f"{name} has {len(getattr(inputs, name))} values for {m} history entries")
    if n and (inputs.program_index.min() < 0 or inputs.program_index.max() >= programs):
        raise ValueError(f"program_index must lie in [0, {programs})")
    if m == 0:
        return
    if inputs.history_row.min() < 0 or inputs.history_row.max() >= n:
        raise ValueError(f"history_row must lie in [0, {n})")
    if np.isnat(inputs.history_event_at).any():
        raise ValueError("every history entry needs its event time")
    if inputs.history_class.min() < 0 or inputs.history_class.max() >= len(EventClass):
        raise ValueError("history_class holds a code that is not an EventClass")
    same_row = np.diff(inputs.history_row)
    if (same_row < 0).any():
        raise ValueError("history entries must be grouped by row, rows ascending")
    newer_later = (same_row == 0) & (np.diff(inputs.history_event_at) > np.timedelta64(0, "us"))
    if newer_later.any():
        raise ValueError("within a row, history entries must be newest first")


def _ranks(rows: NDArray[np.intp]) -> NDArray[np.int64]:
    """For entries grouped by row: 0 for the first entry of each row, 1 for the next, and so on."""
    positions = np.arange(len(rows), dtype=np.int64)
    if not len(rows):
        return positions
    first = np.empty(len(rows), dtype=np.bool_)
    first[0] = True
    np.not_equal(rows[1:], rows[:-1], out=first[1:])
    return positions - np.maximum.accumulate(np.where(first, positions, 0))


def score_devices(inputs: ScoringInput, rules: Sequence[ProgramRules], now: datetime) -> ScoringResult:
    """Score every row of ``inputs`` with the rules of its program (``rules[program_index]``) at ``now``.

    Raises ``ValueError`` when the columns disagree in length, point outside their ranges, or the history
    is not grouped by row and newest first.
    """
    _check(inputs, len(rules))
    n = inputs.rows
    const = _Constants.of(rules)
    program = inputs.program_index
    moment = as_datetime64(now)

    # --- history: events with an outcome, ranked newest first within each row ------------------------
    classes = inputs.history_class
    rows = inputs.history_row
    counted = (classes != EventClass.PENDING) & (classes != EventClass.CANCELLED)
    c_rows = rows[counted]
    c_classes = classes[counted]
    c_program = program[c_rows]
    rank = _ranks(c_rows)

    weights = np.power(0.5, rank / const.half_life[c_program])
    values = const.values[c_program, c_classes]
    weighted = np.bincount(c_rows, weights=weights * values, minlength=n)
    total_weight = np.bincount(c_rows, weights=weights, minlength=n)
    prior, k = const.prior[program], const.prior_weight[program]
    denominator = k + total_weight
    reliability = np.divide(
        k * prior + weighted, denominator, out=prior.copy(), where=denominator > 0
    )  # no event and no prior weight: the prior is all there is

    # --- connectivity -------------------------------------------------------------------------------
    age = _hours_before(moment, inputs.last_communication_at)  # +inf: never seen, so c = 0 and offline
    full, zero = const.full_hours[program], const.zero_hours[program]
    span = zero - full
    falling = np.divide(zero - age, span, out=np.zeros(n), where=span > 0)
    connectivity = np.where(age <= full, 1.0, np.where(age >= zero, 0.0, np.clip(falling, 0.0, 1.0)))

    # --- fatigue: events called in the window (cancelled ones are not calls) ---------------------------
    event_age = _hours_before(moment, inputs.history_event_at)
    called = (
        (classes != EventClass.CANCELLED) & (event_age >= 0) & (event_age < const.fatigue_window_hours[program[rows]])
    )
    calls = np.bincount(rows[called], minlength=n).astype(np.float64)
    fatigue = np.minimum(const.fatigue_per_event[program] * calls, const.fatigue_cap[program])

    # --- score ----------------------------------------------------------------------------------------
    raw = 100.0 * (const.reliability_weight[program] * reliability + const.connectivity_weight[program] * connectivity)
    raw = np.clip(raw * (1.0 - fatigue), 0.0, 100.0)
    score = np.floor(raw * 10.0 + 0.5) / 10.0

    # --- eligibility: the first reason that applies wins, so assign from the last to the first ---------
    in_chronic_window = rank < const.chronic_window[c_program]
    opted = (c_classes == EventClass.IN_FLIGHT_OVERRIDE) | (c_classes == EventClass.PREEMPTIVE_OPT_OUT)
    chronic = np.bincount(c_rows[in_chronic_window & opted], minlength=n) >= const.chronic_count[program]
    in_streak_window = rank < const.streak[c_program]
    silent = c_classes == EventClass.NON_RESPONSIVE
    streak = np.bincount(c_rows[in_streak_window & silent], minlength=n) >= const.streak[program]
    offline = age > const.offline_after_hours[program]

    reason = np.zeros(n, dtype=np.int8)
    for applies, why in (
        (streak, IneligibilityReason.NON_RESPONSIVE_STREAK),
        (chronic, IneligibilityReason.CHRONIC_OPT_OUT),
        (offline, IneligibilityReason.DEVICE_OFFLINE),
        (~inputs.program_active, IneligibilityReason.PROGRAM_NOT_ACTIVE),
        (~inputs.enrollment_active, IneligibilityReason.ENROLLMENT_NOT_ACTIVE),
    ):
        reason[applies] = reason_code(why)

    return ScoringResult(
        score=score,
        eligible=reason == ELIGIBLE,
        reason=reason,
        reliability=reliability,
        connectivity=connectivity,
        fatigue=fatigue,
    )
