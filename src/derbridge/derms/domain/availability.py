"""Device availability per program, as enrollment sync sets it (flows.md F3).

Asset Hub tells the DERMS when an enrollment becomes ACTIVE (ENROLLED), ends (UNENROLLED) or has its
device replaced (DEVICE_REPLACED). Each sync carries the enrollment's devices with the availability each
must have afterwards; the DERMS applies them in one transaction. Syncs of one enrollment carry an
increasing ``sequence``, and one not newer than what was applied is ignored and recorded as stale, so that
syncs delivered out of order or twice cannot undo a later change.

A device that becomes UNAVAILABLE loses its reservations for events that have not started yet; the DERMS
reports the release to Asset Hub as a reservation change (F5 update). Reservations of a started event are
kept: the device is dispatched already, and its outcome (or NON_RESPONSIVE at closing) says what it did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

# The change an enrollment sync reports is the flow's own vocabulary (one definition, in the contract).
from derbridge.contracts.enrollment_sync import SyncChange as SyncChange


class Availability(StrEnum):
    """Whether a device may be reserved in a program."""

    AVAILABLE = "AVAILABLE"
    """Enrolled and in service: the device may be a candidate for the program's events."""
    UNAVAILABLE = "UNAVAILABLE"
    """Unenrolled or replaced: never a candidate; kept for the history of past events."""


class SyncDecision(StrEnum):
    """What the DERMS does with an incoming enrollment sync, given what it applied before."""

    APPLY = "APPLY"
    """Newer than anything applied for this enrollment (or the first): apply it."""
    STALE = "STALE"
    """Not newer than what was applied: ignore it and record it as stale."""


class DeviceRole(StrEnum):
    """The part a device plays in a sync, which decides its availability afterwards."""

    ENROLLMENT_DEVICE = "ENROLLMENT_DEVICE"
    """A device of an enrollment that is ENROLLED or UNENROLLED."""
    REPLACED = "REPLACED"
    """The old device of a DEVICE_REPLACED change."""
    REPLACEMENT = "REPLACEMENT"
    """The new device of a DEVICE_REPLACED change."""


class SyncDevicesError(ValueError):
    """The devices of a sync do not match its change (see :func:`check_sync_devices`)."""


@dataclass(frozen=True, slots=True)
class SyncedDevice:
    """One entry of a sync's ``devices`` list: a device and the availability it must have afterwards."""

    head_end_system: str
    nic_id: str
    availability: Availability

    @property
    def key(self) -> tuple[str, str]:
        """``(head_end_system, nic_id)``: how messages identify a device."""
        return (self.head_end_system, self.nic_id)


def decide_sync(applied_sequence: int | None, incoming_sequence: int) -> SyncDecision:
    """APPLY when ``incoming_sequence`` is newer than ``applied_sequence`` (or nothing was applied yet).

    An equal sequence is a duplicate — the same change again, with the same or another message id — and is
    STALE: applying it again would at best do nothing and at worst undo a change made locally since. (The
    inbox already drops a redelivery of the same message id; this also covers a re-sent copy.)
    """
    if applied_sequence is None:
        return SyncDecision.APPLY
    return SyncDecision.APPLY if incoming_sequence > applied_sequence else SyncDecision.STALE


_AVAILABILITY_AFTER: Final[Mapping[tuple[SyncChange, DeviceRole], Availability]] = {
    (SyncChange.ENROLLED, DeviceRole.ENROLLMENT_DEVICE): Availability.AVAILABLE,
    (SyncChange.UNENROLLED, DeviceRole.ENROLLMENT_DEVICE): Availability.UNAVAILABLE,
    (SyncChange.DEVICE_REPLACED, DeviceRole.REPLACED): Availability.UNAVAILABLE,
    (SyncChange.DEVICE_REPLACED, DeviceRole.REPLACEMENT): Availability.AVAILABLE,
}


_ENROLLMENT_STATE_AFTER: Final[Mapping[SyncChange, str]] = {
    SyncChange.ENROLLED: "ACTIVE",
    SyncChange.DEVICE_REPLACED: "ACTIVE",
    SyncChange.UNENROLLED: "UNENROLLED",
}


def enrollment_state_after(change: SyncChange) -> str:
    """The enrollment's lifecycle state once a sync of ``change`` is applied, as the DERMS records it for
    the aggregator (ACTIVE after ENROLLED or DEVICE_REPLACED, UNENROLLED after UNENROLLED)."""
    return _ENROLLMENT_STATE_AFTER[change]


def availability_after(change: SyncChange, role: DeviceRole) -> Availability:
    """The availability a device in ``role`` has once ``change`` is applied.

    ENROLLED makes the enrollment's devices AVAILABLE and UNENROLLED makes them UNAVAILABLE; for
    DEVICE_REPLACED the REPLACED device becomes UNAVAILABLE and the REPLACEMENT AVAILABLE, in the same
    message and the same transaction, so there is no moment with both or neither available. A role that
    does not belong to the change (a REPLACEMENT in an ENROLLED sync) raises ``ValueError``.
    """
    try:
        return _AVAILABILITY_AFTER[(change, role)]
    except KeyError:
        raise ValueError(f"a {change.value} sync has no {role.value} device") from None


def synced_device(change: SyncChange, role: DeviceRole, head_end_system: str, nic_id: str) -> SyncedDevice:
    """The ``devices`` entry for a device playing ``role`` in ``change`` (what Asset Hub puts in a sync)."""
    return SyncedDevice(head_end_system, nic_id, availability_after(change, role))


def check_sync_devices(change: SyncChange, devices: Sequence[SyncedDevice]) -> None:
    """Raise :class:`SyncDevicesError` unless ``devices`` is a consistent list for ``change``.

    Every sync names at least one device and no device twice. ENROLLED devices are all AVAILABLE and
    UNENROLLED ones all UNAVAILABLE. A DEVICE_REPLACED sync has at least one UNAVAILABLE device (the
    replaced) and one AVAILABLE (the replacement); an enrollment with several devices may list the ones that
    did not change as AVAILABLE too, which applying them leaves as they were.
    """
    if not devices:
        raise SyncDevicesError(f"a {change.value} sync must name at least one device")
    seen: set[tuple[str, str]] = set()
    for device in devices:
        if device.key in seen:
            raise SyncDevicesError(
                f"device {device.head_end_system}:{device.nic_id} appears more than once in the sync"
            )
        seen.add(device.key)
    states = {device.availability for device in devices}
    if change is SyncChange.DEVICE_REPLACED:
        if states != {Availability.AVAILABLE, Availability.UNAVAILABLE}:
            raise SyncDevicesError(
                "a DEVICE_REPLACED sync must name the replaced device UNAVAILABLE and the replacement AVAILABLE"
            )
        return
    expected = availability_after(change, DeviceRole.ENROLLMENT_DEVICE)
    wrong = [device for device in devices if device.availability is not expected]
    if wrong:
        names = ", ".join(f"{d.head_end_system}:{d.nic_id}" for d in wrong)
        raise SyncDevicesError(f"a {change.value} sync must make every device {expected.value}: {names}")


def reservations_to_release(
    unavailable_device_ids: Iterable[int],
    reservations: Iterable[tuple[int, int, datetime]],
    now: datetime,
) -> list[int]:
    """The reservations a sync releases: those of devices just made UNAVAILABLE, for events not started.

    ``reservations`` holds ``(reservation_id, device_id, event_start_at)`` for the live reservations the
    adapter found (of SCHEDULED events: a cancelled event's reservations are already released). An event
    has started at ``event_start_at`` exactly (the lifecycle's rule), so only ``now < event_start_at``
    releases. The ids come back in the order the reservations were given.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now.isoformat()}")
    unavailable = frozenset(unavailable_device_ids)
    return [
        reservation_id
        for reservation_id, device_id, event_start_at in reservations
        if device_id in unavailable and now < event_start_at
    ]
