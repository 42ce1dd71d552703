"""The enrollment lifecycle (flows.md F1): its states, the moves between them, and device replacement.

An enrollment is a device in a program for an account at a premise. Its life is::

    (new) ──► PENDING ──► DEVICE_SETUP ──► ACTIVE ──► UNENROLLED
      │          │              │            │ ▲
      │          ▼              ▼            └─┘ device replaced (F3): kept as ACTIVE → ACTIVE
      └──────► REJECTED     SETUP_FAILED

REJECTED, SETUP_FAILED and UNENROLLED are terminal: nothing leaves them. Every move is a
:class:`Transition`, a timestamped record that is kept for good; the latest one gives the current state.

This module is pure: it decides whether a move is allowed and builds the record; the service stores it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final


class EnrollmentState(StrEnum):
    """Where an enrollment is in its life (flows.md F1)."""

    PENDING = "PENDING"
    """The request was accepted; the device has not been set up yet. The device is taken: another
    request for it in the same (or an excluding) program is refused."""
    DEVICE_SETUP = "DEVICE_SETUP"
    """The setup step runs: Asset Hub asks the DERMS for the device's communication status (F2) and
    re-checks with backoff until the device is seen online or the setup period ends."""
    ACTIVE = "ACTIVE"
    """The device was seen communicating: it is enrolled, synced to the DERMS (F3), scored (F4) and may be
    reserved for events (F5). Its device may be replaced without leaving this state."""
    REJECTED = "REJECTED"
    """Terminal. The request failed validation; the transition's reason holds the rejection codes."""
    SETUP_FAILED = "SETUP_FAILED"
    """Terminal. The device was never seen online within the setup period; the reason says why."""
    UNENROLLED = "UNENROLLED"
    """Terminal. The enrollment ended (customer, aggregator or utility); it is kept for history."""


_NEXT: Final[Mapping[EnrollmentState | None, frozenset[EnrollmentState]]] = {
    # None is "no enrollment yet". A request refused at once is still recorded, as an enrollment created
    # directly in REJECTED, so that the refusal and its reasons are kept and the same
    # (head_end_system, request_id) replayed later finds the first answer.
    None: frozenset({EnrollmentState.PENDING, EnrollmentState.REJECTED}),
    EnrollmentState.PENDING: frozenset({EnrollmentState.DEVICE_SETUP, EnrollmentState.REJECTED}),
    EnrollmentState.DEVICE_SETUP: frozenset({EnrollmentState.ACTIVE, EnrollmentState.SETUP_FAILED}),
    EnrollmentState.ACTIVE: frozenset({EnrollmentState.UNENROLLED}),
    EnrollmentState.REJECTED: frozenset(),
    EnrollmentState.SETUP_FAILED: frozenset(),
    EnrollmentState.UNENROLLED: frozenset(),
}

TERMINAL_STATES: Final[frozenset[EnrollmentState]] = frozenset(state for state in EnrollmentState if not _NEXT[state])
"""States nothing leaves: REJECTED, SETUP_FAILED, UNENROLLED."""

NON_TERMINAL_STATES: Final[frozenset[EnrollmentState]] = frozenset(EnrollmentState) - TERMINAL_STATES
"""States in which an enrollment holds its device (PENDING, DEVICE_SETUP, ACTIVE): the ones a service
looks for when it fills the active enrollments of a device for validation."""

REASON_REQUIRED_STATES: Final[frozenset[EnrollmentState]] = frozenset(
    {EnrollmentState.REJECTED, EnrollmentState.SETUP_FAILED}
)
"""States whose transition must say why: a refusal or a failure without a reason cannot be acted on."""

_ZERO: Final = timedelta(0)


def _state_name(state: EnrollmentState | None) -> str:
    return "(new)" if state is None else state.value


def _require_utc(at: datetime, what: str) -> None:
    """Refuse a naive or non-UTC time: kept records are compared and ordered across systems."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware UTC, got the naive datetime {at.isoformat()}")
    if at.utcoffset() != _ZERO:
        raise ValueError(f"{what} must be in UTC (offset +00:00), got {at.isoformat()}")


class IllegalTransition(ValueError):
    """A move the lifecycle does not allow. The message names the states and what would be allowed."""

    def __init__(
        self,
        enrollment_id: str,
        from_state: EnrollmentState | None,
        to_state: EnrollmentState,
        *,
        device_replacement: bool = False,
    ) -> None:
        self.enrollment_id = enrollment_id
        self.from_state = from_state
        self.to_state = to_state
        self.allowed: frozenset[EnrollmentState] = allowed_next(from_state)
        self.device_replacement = device_replacement
        allowed_names = ", ".join(sorted(s.value for s in self.allowed)) or "nothing (terminal state)"
        if device_replacement:
            what = f"a device replacement is allowed only while ACTIVE, and the enrollment is {_state_name(from_state)}"
        else:
            what = f"{_state_name(from_state)} → {to_state.value} is not allowed"
        super().__init__(
            f"enrollment {enrollment_id!r}: {what}; from {_state_name(from_state)} the allowed next "
            f"states are: {allowed_names}"
        )


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A controllable device as messages identify it: the head-end system that talks to it and its id
    there. Emptiness is checked where ids enter (request validation), so this stays a plain value."""

    head_end_system: str
    nic_id: str

    @property
    def key(self) -> str:
        """The ``head_end_system:nic_id`` business key operators search by (flows.md, envelope)."""
        return f"{self.head_end_system}:{self.nic_id}"


@dataclass(frozen=True, slots=True)
class Transition:
    """One kept, timestamped step of an enrollment's life.

    A device replacement is recorded as ACTIVE → ACTIVE with both devices set; every other transition is
    a state change allowed by the lifecycle and has no devices. Building a Transition checks all of this,
    so no illegal record can exist in memory.
    """

    enrollment_id: str
    from_state: EnrollmentState | None
    """None for the transition that creates the enrollment."""
    to_state: EnrollmentState
    at: datetime
    """When it happened: timezone-aware, UTC."""
    reason: str | None = None
    """Why; required for REJECTED and SETUP_FAILED, generated for a device replacement."""
    old_device: DeviceRef | None = None
    """For a device replacement: the device taken out."""
    new_device: DeviceRef | None = None
    """For a device replacement: the device put in."""

    def __post_init__(self) -> None:
        if not self.enrollment_id.strip():
            raise ValueError("enrollment_id must not be empty")
        _require_utc(self.at, "a transition's time")
        has_devices = self.old_device is not None or self.new_device is not None
        if self.from_state is EnrollmentState.ACTIVE and self.to_state is EnrollmentState.ACTIVE:
            if self.old_device is None or self.new_device is None:
                raise ValueError("ACTIVE → ACTIVE is a device replacement: old_device and new_device are needed")
            if self.old_device == self.new_device:
                raise ValueError(f"a device replacement needs a different device, got {self.new_device.key} twice")
        elif has_devices:
            raise ValueError("old_device and new_device are set only on a device replacement (ACTIVE → ACTIVE)")
        elif not can_transition(self.from_state, self.to_state):
            raise IllegalTransition(self.enrollment_id, self.from_state, self.to_state)
        if self.reason is not None and not self.reason.strip():
            raise ValueError("a transition's reason must be None or non-blank text")
        if self.to_state in REASON_REQUIRED_STATES and self.reason is None:
            raise ValueError(f"a transition to {self.to_state.value} must say why (reason)")

    @property
    def is_device_replacement(self) -> bool:
        """True for the ACTIVE → ACTIVE record of a device swap (F3 change DEVICE_REPLACED)."""
        return self.old_device is not None


def allowed_next(state: EnrollmentState | None) -> frozenset[EnrollmentState]:
    """The states an enrollment in ``state`` may move to; ``None`` (no enrollment yet) gives the states
    an enrollment may be created in. A device replacement is not a state change and is not listed."""
    return _NEXT[state]


def can_transition(a: EnrollmentState | None, b: EnrollmentState) -> bool:
    """True when the lifecycle allows the state change ``a`` → ``b`` (``a`` None: creation in ``b``)."""
    return b in _NEXT[a]


def is_terminal(state: EnrollmentState) -> bool:
    """True for REJECTED, SETUP_FAILED and UNENROLLED: states nothing leaves."""
    return state in TERMINAL_STATES


def _check_not_before(at: datetime, last_at: datetime | None) -> None:
    if last_at is None:
        return
    _require_utc(last_at, "last_at")
    if at < last_at:
        # The kept log must read in order: a step dated before the previous one means a wrong clock or a
        # stale writer, and storing it would make the history contradict itself.
        raise ValueError(
            f"a transition at {at.isoformat()} would go back in time: the enrollment's latest transition "
            f"is at {last_at.isoformat()}"
        )


def plan_transition(
    enrollment_id: str,
    current: EnrollmentState | None,
    to: EnrollmentState,
    at: datetime,
    reason: str | None = None,
    *,
    last_at: datetime | None = None,
) -> Transition:
    """The record of moving an enrollment from ``current`` to ``to`` at ``at``, if the lifecycle allows it.

    ``current`` None creates the enrollment: in PENDING (accepted request) or directly in REJECTED
    (request refused at once, kept with its reasons). ``last_at``, the time of the enrollment's latest
    recorded transition, lets the log's times never go backwards.

    Raises :class:`IllegalTransition` for a move the lifecycle forbids (including ACTIVE → ACTIVE: use
    :func:`plan_device_replacement`), and ``ValueError`` for a naive or non-UTC time, a time before
    ``last_at``, or a missing reason for REJECTED / SETUP_FAILED.
    """
    if not can_transition(current, to):
        raise IllegalTransition(enrollment_id, current, to)
    _require_utc(at, "at")
    _check_not_before(at, last_at)
    return Transition(enrollment_id=enrollment_id, from_state=current, to_state=to, at=at, reason=reason)


def plan_device_replacement(
    enrollment_id: str,
    current: EnrollmentState | None,
    old_device: DeviceRef,
    new_device: DeviceRef,
    at: datetime,
    *,
    last_at: datetime | None = None,
) -> Transition:
    """The record of replacing an ACTIVE enrollment's device (F3 change DEVICE_REPLACED).

    The state stays ACTIVE; the replacement is kept as an ACTIVE → ACTIVE transition that names both
    devices, so the history shows which device was enrolled when. Raises :class:`IllegalTransition` when
    the enrollment is not ACTIVE, and ``ValueError`` when the new device is the old one, an id is empty,
    or the time is naive, non-UTC or before ``last_at``.
    """
    if current is not EnrollmentState.ACTIVE:
        raise IllegalTransition(enrollment_id, current, EnrollmentState.ACTIVE, device_replacement=True)
    for label, device in (("old_device", old_device), ("new_device", new_device)):
        if not device.head_end_system.strip() or not device.nic_id.strip():
            raise ValueError(f"{label} needs a head_end_system and a nic_id, got {device!r}")
    if old_device == new_device:
        raise ValueError(
            f"enrollment {enrollment_id!r}: the new device {new_device.key} is the device already enrolled; "
            "a replacement needs a different device"
        )
    _require_utc(at, "at")
    _check_not_before(at, last_at)
    return Transition(
        enrollment_id=enrollment_id,
        from_state=EnrollmentState.ACTIVE,
        to_state=EnrollmentState.ACTIVE,
        at=at,
        reason=f"DEVICE_REPLACED: {old_device.key} → {new_device.key}",
        old_device=old_device,
        new_device=new_device,
    )


def state_after(history: Sequence[Transition]) -> EnrollmentState | None:
    """The state a kept history leads to, after checking that it is one coherent history.

    The history is one enrollment's transitions in the order they were recorded. It must be continuous
    (each ``from_state`` is the previous ``to_state``, the first one is the creation) and its times must
    never go backwards, and each device replacement takes out the device the previous replacement put
    in; otherwise ``ValueError`` names the first step at fault. An empty history gives
    None (no enrollment). Each step's own legality was checked when its :class:`Transition` was built.
    """
    state: EnrollmentState | None = None
    previous: Transition | None = None
    device_in: DeviceRef | None = None
    for index, step in enumerate(history):
        if previous is not None and step.enrollment_id != previous.enrollment_id:
            raise ValueError(
                f"history step {index} belongs to enrollment {step.enrollment_id!r}, not {previous.enrollment_id!r}"
            )
        if step.from_state is not state:
            raise ValueError(
                f"history step {index} of enrollment {step.enrollment_id!r} starts from "
                f"{_state_name(step.from_state)}, but the enrollment was {_state_name(state)}"
            )
        if previous is not None and step.at < previous.at:
            raise ValueError(
                f"history step {index} of enrollment {step.enrollment_id!r} at {step.at.isoformat()} is "
                f"earlier than the step before it at {previous.at.isoformat()}"
            )
        if step.is_device_replacement:
            # Replacements chain: each takes out the device the previous one put in.
            if device_in is not None and step.old_device != device_in:
                raise ValueError(
                    f"history step {index} of enrollment {step.enrollment_id!r} replaces "
                    f"{step.old_device!r}, but the enrolled device was {device_in!r}"
                )
            device_in = step.new_device
        state = step.to_state
        previous = step
    return state
